"""Caps on what a model file may make the readers allocate, checked before anything is read.

A tensor's declared shape and dtype give its size; the readers compare that size with these
caps and with the bytes the file really holds before they allocate it, so a file of a few
bytes (or a sparse file, or a compressed dataset) cannot ask for gigabytes. The largest
networks the readers serve (the paper's ResNet-50, InceptionV3, StyleGAN v1 at 1024 px) have
tensors under 40 MB and totals under 200 MB.
"""

from __future__ import annotations

from collections.abc import Iterable

from reenact.errors import ModelError

__all__ = ["MAX_TENSOR_BYTES", "MAX_TOTAL_BYTES", "MAX_RANK", "tensor_nbytes"]

#: Largest single tensor a model file may hold: 256 MiB.
MAX_TENSOR_BYTES = 256 << 20
#: Largest sum of the tensors one model file may hold: 512 MiB.
MAX_TOTAL_BYTES = 512 << 20
#: Most dimensions a tensor may have.
MAX_RANK = 16


def tensor_nbytes(shape: Iterable[int], itemsize: int, source: str, name: str) -> int:
    """Bytes of a tensor of ``shape`` (Python integers: no overflow), or :class:`ModelError`
    when a dimension is negative or the tensor passes :data:`MAX_TENSOR_BYTES`."""
    dims = [int(d) for d in shape]
    if len(dims) > MAX_RANK or any(d < 0 for d in dims):
        raise ModelError(f"{source}: tensor {name!r} has an impossible shape {dims}; a corrupt or hostile file")
    n = itemsize
    for d in dims:
        n *= d
    if n > MAX_TENSOR_BYTES:
        raise ModelError(
            f"{source}: tensor {name!r} of shape {dims} would take {n:,} bytes, more than the "
            f"{MAX_TENSOR_BYTES >> 20} MiB a model tensor may have; refusing to read it (a corrupt or hostile file: get it again from its publisher)"
        )
    return n
