"""Shared fixtures of the model tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from reenact.models.stylegan2 import Generator, generator_from_state_dict


@pytest.fixture(scope="session")
def tiny_ref(reference: Path) -> tuple[Generator, dict[str, torch.Tensor]]:
    """The official tiny generator loaded unchanged, and the official outputs to match."""
    folder = reference / "stylegan2"
    path = folder / "tiny_G.safetensors"
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["constructor"])
    G = generator_from_state_dict(config, load_file(str(path)), source=str(path))
    return G, load_file(str(folder / "tiny_vectors.safetensors"))
