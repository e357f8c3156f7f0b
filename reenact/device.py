"""The one device resolver: ``auto`` / ``cpu`` / ``cuda[:N]`` -> a ``torch.device``."""

from __future__ import annotations

import torch

from reenact.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU.

    An unknown name, or a CUDA device on a machine without one, is a :class:`ConfigError`.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} asked for, but no CUDA GPU is available; use --device cpu")
    return device
