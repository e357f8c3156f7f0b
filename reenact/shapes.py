"""Declarative tensor shape checks (in the manner of stylegan3's ``misc.assert_shape`` and
kornia's ``KORNIA_CHECK_SHAPE``).

``check_shape(x, ["F", 3, "R", "R"], "faces")`` states the layout once; a mismatch raises
:class:`~reenact.errors.ShapeError` naming the argument, the expected layout with the
sizes already known, and the actual dtype and shape::

    faces must be float [F,3,R,R]=[2,3,32,32], got torch.float32 (2, 3, 32, 31)

Dimensions: an ``int`` is an exact size, ``None`` any size, a ``str`` a named size that
must be the same wherever the name appears (in one call, and across calls that share a
``dims`` dict), and ``"..."`` (first only) any number of leading dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from reenact.errors import ShapeError

__all__ = ["Dim", "DType", "check_same_device", "check_shape"]

Dim = int | str | None
DType = torch.dtype | tuple[torch.dtype, ...] | Literal["float"] | None


def _dtype_ok(x: torch.Tensor, dtype: DType) -> bool:
    if dtype is None:
        return True
    if dtype == "float":
        return x.is_floating_point()
    if isinstance(dtype, tuple):
        return x.dtype in dtype
    return x.dtype == dtype


def _dtype_words(dtype: DType) -> str:
    if dtype is None:
        return ""
    if dtype == "float":
        return "float "
    if isinstance(dtype, tuple):
        return " or ".join(str(d).removeprefix("torch.") for d in dtype) + " "
    return str(dtype).removeprefix("torch.") + " "


def _layout(shape: Sequence[Dim], dims: dict[str, int]) -> str:
    text = "[" + ",".join("*" if d is None else str(d) for d in shape) + "]"
    if any(isinstance(d, str) and d != "..." for d in shape):
        sizes = [
            "*" if d is None else str(dims.get(d, d)) if isinstance(d, str) and d != "..." else str(d)
            for d in shape
        ]
        text += "=[" + ",".join(sizes) + "]"
    return text


def check_shape(
    x: object,
    shape: Sequence[Dim],
    name: str,
    *,
    dtype: DType = None,
    dims: dict[str, int] | None = None,
    what: str = "",
) -> dict[str, int]:
    """Check that ``x`` is a tensor of layout ``shape`` (and ``dtype``); return the named sizes.

    ``dims`` carries named sizes between calls: names already in it must match, and the
    ones this call binds are added to it (the same dict is returned). ``what`` is appended
    to the expected layout in the message (``"RGB"``, ``"in [-1,1]"``).

    Raises:
        ShapeError: naming ``name``, the expected dtype and layout with the known sizes,
            and the actual dtype and shape.
    """
    dims = {} if dims is None else dims
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    expected = list(shape)
    actual = tuple(int(s) for s in x.shape)
    lead = bool(expected) and expected[0] == "..."
    if lead:
        expected = expected[1:]
    ok = _dtype_ok(x, dtype) and (len(actual) >= len(expected) if lead else len(actual) == len(expected))
    bound: dict[str, int] = {}
    if ok:
        tail = actual[len(actual) - len(expected) :]
        for want, got in zip(expected, tail, strict=True):
            if want is None:
                continue
            if isinstance(want, str):
                known = bound.get(want, dims.get(want))
                if known is not None and known != got:
                    ok = False
                    break
                bound[want] = got
            elif want != got:
                ok = False
                break
    if not ok:
        known_dims = {**dims, **bound}
        layout = _layout(["...", *expected] if lead else expected, known_dims)
        suffix = f" {what}" if what else ""
        raise ShapeError(
            f"{name} must be {_dtype_words(dtype)}{layout}{suffix}, got {x.dtype} {actual}"
        )
    dims.update(bound)
    return dims


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """The one device all ``tensors`` are on, else :class:`ShapeError` naming each one's."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ShapeError(f"all inputs must be on one device, got {listing}")
    return next(iter(devices.values()))
