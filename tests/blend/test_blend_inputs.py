"""Bad input, dispatch, masks and settings of the blender."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
import torch
from blend_cases import placing, smooth_faces, textured_frames

import reenact.blend as blend
from reenact.blend import BlendSettings, face_mask, paste_faces
from reenact.config import from_dict
from reenact.errors import ConfigError, ShapeError


def _case(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    frames = textured_frames(2, 64, 80, g)
    faces = smooth_faces(n, size, g)
    M = torch.stack([placing(size, 30.0, 0.2 * i, 25.0 + 25 * i, 30.0) for i in range(n)])
    return frames, faces, torch.arange(n, dtype=torch.int64) % 2, M


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda fr, fa, fi, M: (fr.float(), fa, fi, M), ["frames", "uint8"]),
        (lambda fr, fa, fi, M: (fr[..., :2], fa, fi, M), ["frames", "(2, 64, 80, 2)"]),
        (lambda fr, fa, fi, M: (fr, fa[:, :, :, :31], fi, M), ["faces", "(2, 3, 32, 31)"]),
        (lambda fr, fa, fi, M: (fr, fa.to(torch.uint8), fi, M), ["faces", "uint8"]),
        (lambda fr, fa, fi, M: (fr, fa, fi[:1], M), ["frame_index", "(1,)"]),
        (lambda fr, fa, fi, M: (fr, fa, fi.float(), M), ["frame_index", "float32"]),
        (lambda fr, fa, fi, M: (fr, fa, fi + 5, M), ["frame_index", "5..6"]),
        (lambda fr, fa, fi, M: (fr, fa, fi, M[:, :, :2]), ["M", "(2, 2, 2)"]),
    ],
)
def test_mismatched_inputs_raise_shape_error_naming_shapes(change: Any, words: list[str]) -> None:
    frames, faces, fi, M = change(*_case())
    with pytest.raises(ShapeError) as err:
        paste_faces(frames, faces, fi, M)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_mask_of_wrong_size_or_dtype_is_refused() -> None:
    frames, faces, fi, M = _case()
    with pytest.raises(ShapeError, match=r"\(31, 31\).*|.*\[R,R\]=\[32,32\]"):
        paste_faces(frames, faces, fi, M, mask=torch.ones(31, 31))
    with pytest.raises(ShapeError, match="float"):
        paste_faces(frames, faces, fi, M, mask=torch.ones(32, 32, dtype=torch.uint8))
    with pytest.raises(ShapeError, match=r"\[F,R,R\]=\[2,32,32\]"):
        paste_faces(frames, faces, fi, M, mask=torch.ones(3, 32, 32))


@pytest.mark.parametrize("impl", ["torch", "numba"])
def test_singular_transform_is_refused_with_shape_error(impl: str) -> None:
    frames, faces, fi, M = _case()
    M[1, :, :2] = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(ShapeError, match=r"M\[1\].*singular"):
        paste_faces(frames, faces, fi, M, impl=impl)
    M[1] = float("nan")
    with pytest.raises(ShapeError, match=r"M\[1\].*not finite"):
        paste_faces(frames, faces, fi, M, impl=impl)


@pytest.mark.parametrize("impl", ["torch", "numba"])
def test_face_outside_the_frame_is_skipped_and_counted(impl: str) -> None:
    frames, faces, fi, M = _case(3)
    M[1] = placing(32, 30.0, 0.0, 500.0, -300.0)  # far outside frame 1
    out, stats = paste_faces(frames, faces, fi, M, impl=impl)
    assert (stats.pasted, stats.skipped, stats.refused) == (2, 1, 0)
    assert stats.skipped_indices == [1]
    assert torch.equal(out[1], frames[1]), "frame 1 only had the outside face"
    assert not torch.equal(out[0], frames[0])


@pytest.mark.parametrize("impl", ["torch", "numba"])
def test_nan_face_is_refused_and_not_written(impl: str, caplog: pytest.LogCaptureFixture) -> None:
    frames, faces, fi, M = _case(3)
    faces[2, 1, 10, 10] = float("nan")  # face 2 goes into frame 0 together with face 0
    clean, _ = paste_faces(frames, faces[:2], fi[:2], M[:2], impl=impl)
    with caplog.at_level(logging.WARNING):
        out, stats = paste_faces(frames, faces, fi, M, impl=impl)
    assert (stats.pasted, stats.skipped, stats.refused) == (2, 0, 1)
    assert stats.refused_indices == [2]
    assert torch.equal(out, clean), "the refused face must leave no trace"
    assert "NaN" in caplog.text
    strict = BlendSettings(on_bad_face="raise")
    with pytest.raises(ShapeError, match="face 2"):
        paste_faces(frames, faces, fi, M, settings=strict, impl=impl)


def test_impl_switch_and_dispatch() -> None:
    frames, faces, fi, M = _case()
    _, stats = paste_faces(frames, faces, fi, M)
    assert stats.impl == "torch", "auto picks the torch reference for CPU tensors (numba costs ~100 MiB)"
    _, stats = paste_faces(frames, faces, fi, M, settings=BlendSettings(impl="numba"))
    assert stats.impl == "numba", "blend.impl chooses"
    _, stats = paste_faces(frames, faces, fi, M, settings=BlendSettings(impl="numba"), impl="torch")
    assert stats.impl == "torch", "an explicit impl wins over the settings"
    with pytest.raises(ConfigError, match="impl='opencl'"):
        paste_faces(frames, faces, fi, M, impl="opencl")
    with pytest.raises(ConfigError, match="blend.impl = 'opencl'"):
        BlendSettings(impl="opencl")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="CUDA"):
        paste_faces(frames, faces, fi, M, impl="cupy")
    assert blend.available_impls("cpu")[0] == "numba"


def test_auto_on_cpu_does_not_load_numba() -> None:
    code = (
        "import sys, torch\n"
        "from reenact.blend import paste_faces\n"
        "frames = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)\n"
        "M = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])\n"
        "_, stats = paste_faces(frames, torch.zeros(1, 3, 16, 16), torch.zeros(1, dtype=torch.long), M)\n"
        "print(stats.impl, stats.pasted, 'numba' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torch", "1", "False"]


def test_numba_asked_for_but_unusable_names_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    frames, faces, fi, M = _case()
    monkeypatch.setattr(blend, "_numba_problem", lambda: "ImportError: no numba")
    with pytest.raises(ConfigError, match="no numba.*impl='torch'"):
        paste_faces(frames, faces, fi, M, impl="numba")
    with pytest.raises(ConfigError, match="no numba"):
        paste_faces(frames, faces, fi, M, settings=BlendSettings(impl="numba"))


def test_face_mask_shape_range_and_controls() -> None:
    settings = BlendSettings()
    mask = face_mask(64, settings)
    assert mask.shape == (64, 64) and mask.dtype == torch.float32
    assert float(mask.min()) == 0.0 and float(mask.max()) == 1.0
    # Inside the face (between the eyes and the mouth) it is fully on; corners and the
    # crop border are off.
    assert float(mask[36, 32]) == 1.0
    assert float(mask[0, 0]) == 0.0 and float(mask[:, 0].max()) == 0.0 and float(mask[-1].max()) == 0.0
    eroded = face_mask(64, BlendSettings(erosion=0.08))
    assert eroded.sum() < mask.sum() and bool((eroded <= mask + 1e-6).all())
    wide = face_mask(64, BlendSettings(feather=0.2))
    hard = face_mask(64, BlendSettings(feather=0.0))
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    soft_pixels = lambda m: int(((m > 0) & (m < 1)).sum())  # noqa: E731
    assert soft_pixels(wide) > soft_pixels(mask) > 0
    blurred = face_mask(64, BlendSettings(blur=0.05))
    assert soft_pixels(blurred) > soft_pixels(mask)


def test_face_mask_follows_the_points() -> None:
    template = blend.default_template(64)
    shifted = face_mask(64, BlendSettings(), template + torch.tensor([10.0, 0.0]))
    base = face_mask(64, BlendSettings(), template)
    assert torch.allclose(base, face_mask(64, BlendSettings()))
    cols = torch.arange(64, dtype=torch.float32)
    centre_x = lambda m: float((m.sum(0) * cols).sum() / m.sum())  # noqa: E731
    assert centre_x(shifted) - centre_x(base) > 5.0
    batch = face_mask(64, BlendSettings(), torch.stack([template, template + 4.0]))
    assert batch.shape == (2, 64, 64)
    with pytest.raises(ShapeError, match=r"\[5,2\]"):
        face_mask(64, BlendSettings(), torch.zeros(4, 2))
    with pytest.raises(ShapeError, match="degenerate"):
        face_mask(64, BlendSettings(), torch.zeros(5, 2))


def test_settings_load_strictly_from_config_data() -> None:
    s = from_dict(BlendSettings, {"colour_match": "histogram", "levels": 3, "laplacian": True})
    assert s.colour_match == "histogram" and s.levels == 3
    with pytest.raises(ConfigError, match="colour_match"):
        from_dict(BlendSettings, {"colour_match": "magic"})
    with pytest.raises(ConfigError, match="erosion"):
        from_dict(BlendSettings, {"erosion": 0.9})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(BlendSettings, {"feathering": 0.1})


@pytest.mark.parametrize("impl", ["torch", "numba"])
def test_no_faces_and_half_precision_faces(impl: str) -> None:
    frames, faces, fi, M = _case()
    out, stats = paste_faces(frames, faces[:0], fi[:0], M[:0], impl=impl)
    assert torch.equal(out, frames) and out.data_ptr() != frames.data_ptr()
    assert (stats.pasted, stats.skipped, stats.refused) == (0, 0, 0)
    full, _ = paste_faces(frames, faces, fi, M, impl=impl)
    half, _ = paste_faces(frames, faces.half(), fi, M, impl=impl)
    assert int((full.int() - half.int()).abs().max()) <= 1
