"""Declarative shape checks: what the error says and which layouts pass."""

from __future__ import annotations

import pytest
import torch

from reenact.errors import ShapeError
from reenact.shapes import check_same_device, check_shape


def test_named_sizes_bind_across_calls_and_mismatch_names_everything() -> None:
    dims = check_shape(torch.zeros(2, 3, 32, 32), ["F", 3, "R", "R"], "faces", dtype="float")
    assert dims == {"F": 2, "R": 32}
    check_shape(torch.zeros(2, 2, 3), ["F", 2, 3], "M", dims=dims)
    with pytest.raises(ShapeError) as err:
        check_shape(torch.zeros(3, 2, 3), ["F", 2, 3], "M", dtype="float", dims=dims)
    assert str(err.value) == "M must be float [F,2,3]=[2,2,3], got torch.float32 (3, 2, 3)"
    with pytest.raises(ShapeError, match=r"faces must be \[F,3,R,R\]=\[2,3,32,32\], got torch.float32 \(2, 3, 32, 31\)"):
        check_shape(torch.zeros(2, 3, 32, 31), ["F", 3, "R", "R"], "faces")


def test_dtype_rank_wildcards_and_non_tensors() -> None:
    with pytest.raises(ShapeError, match=r"frames must be uint8 \[T,H,W,3\].*torch.float32"):
        check_shape(torch.zeros(1, 4, 4, 3), ["T", "H", "W", 3], "frames", dtype=torch.uint8)
    with pytest.raises(ShapeError, match=r"int64 or int32 \[F\].*float32 \(2,\)"):
        check_shape(torch.zeros(2), ["F"], "frame_index", dtype=(torch.int64, torch.int32))
    check_shape(torch.zeros(4, 5, 2), ["...", 2], "points")
    check_shape(torch.zeros(4, 5, 2), [None, None, 2], "points")
    with pytest.raises(ShapeError, match=r"\[\.\.\.,2\]"):
        check_shape(torch.zeros(4, 5, 3), ["...", 2], "points")
    with pytest.raises(ShapeError, match="z must be a torch.Tensor, got list"):
        check_shape([1.0, 2.0], ["B", 2], "z")


def test_same_device() -> None:
    a, b = torch.zeros(1), torch.zeros(2)
    assert check_same_device(a=a, b=b) == torch.device("cpu")
    with pytest.raises(ShapeError, match="a on cpu, b on meta"):
        check_same_device(a=a, b=torch.zeros(1, device="meta"))
