"""numba against the torch reference, and pixels outside every mask left bit-identical."""

from __future__ import annotations

import pytest
import torch
from blend_cases import SETTINGS, placing, random_case

from reenact.blend import BlendSettings, face_mask, paste_faces


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.colour_match}-{s.colour_space}-lap{int(s.laplacian)}")
@pytest.mark.parametrize("seed", [0, 1])
def test_numba_matches_torch_reference_within_one_level(settings: BlendSettings, seed: int) -> None:
    frames, faces, frame_index, M = random_case(seed)
    before = frames.clone()
    ref, ref_stats = paste_faces(frames, faces, frame_index, M, settings=settings, impl="torch")
    got, got_stats = paste_faces(frames, faces, frame_index, M, settings=settings, impl="numba")
    assert torch.equal(frames, before), "the input frames must not be modified"
    diff = (ref.int() - got.int()).abs()
    assert int(diff.max()) <= 1, f"numba differs from torch by {int(diff.max())} levels"
    assert (ref != frames).any(dim=-1).sum() > 500, "the faces must actually be pasted"
    assert ref_stats.pasted == got_stats.pasted == 6
    assert (ref_stats.impl, got_stats.impl) == ("torch", "numba")


def test_per_face_masks_match_between_impls() -> None:
    frames, faces, frame_index, M = random_case(3, size=32)
    g = torch.Generator().manual_seed(5)
    pts = torch.tensor([[11.0, 13.0], [21.0, 13.0], [16.0, 18.0], [12.0, 23.0], [20.0, 23.0]])
    points = pts[None] + torch.rand(6, 5, 2, generator=g) * 2.0
    masks = face_mask(32, BlendSettings(), points)
    assert masks.shape == (6, 32, 32)
    ref, _ = paste_faces(frames, faces, frame_index, M, mask=masks, impl="torch")
    got, _ = paste_faces(frames, faces, frame_index, M, mask=masks, impl="numba")
    assert int((ref.int() - got.int()).abs().max()) <= 1


def _possibly_inside(frames: torch.Tensor, frame_index: torch.Tensor, M: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[T,H,W] bool: pixels whose bilinear footprint touches a nonzero mask pixel of a face."""
    t, h, w = frames.shape[:3]
    size = mask.shape[-1]
    # Dilate the support by one crop pixel: a pixel outside it has all four taps at zero.
    support = torch.nn.functional.max_pool2d((mask > 0).float()[None, None], 3, stride=1, padding=1)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    inside = torch.zeros(t, h, w, dtype=torch.bool)
    for f in range(M.shape[0]):
        m = M[f].double()
        u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        ui, vi = u.round().long(), v.round().long()
        ok = (ui >= 0) & (ui < size) & (vi >= 0) & (vi < size)
        hit = torch.zeros(h, w, dtype=torch.bool)
        hit[ok] = support[vi[ok], ui[ok]] > 0
        inside[int(frame_index[f])] |= hit
    return inside


@pytest.mark.parametrize("impl", ["torch", "numba"])
@pytest.mark.parametrize("laplacian", [False, True])
def test_pixels_outside_every_mask_are_bit_identical(impl: str, laplacian: bool) -> None:
    frames, faces, frame_index, M = random_case(7)
    settings = BlendSettings(laplacian=laplacian, erosion=0.05, feather=0.05)
    mask = face_mask(faces.shape[-1], settings)
    out, _ = paste_faces(frames, faces, frame_index, M, mask=mask, settings=settings, impl=impl)
    inside = _possibly_inside(frames, frame_index, M, mask)
    changed = (out != frames).any(dim=-1)
    assert changed.sum() > 500
    assert not (changed & ~inside).any(), f"{int((changed & ~inside).sum())} pixels outside every mask changed"
    assert torch.equal(out[~inside], frames[~inside])


def test_frames_without_faces_are_returned_unchanged() -> None:
    frames, faces, frame_index, M = random_case(2)
    frames = torch.cat([frames, frames[:1]])  # frame 3 has no face
    out, stats = paste_faces(frames, faces, frame_index, M)
    assert torch.equal(out[3], frames[3])
    assert stats.pasted == 6


def test_later_face_is_on_top_where_faces_overlap() -> None:
    frames = torch.full((1, 64, 64, 3), 128, dtype=torch.uint8)
    size = 32
    red = torch.zeros(1, 3, size, size)
    red[:, 0] = 1.0
    red[:, 1:] = -1.0
    blue = torch.zeros(1, 3, size, size)
    blue[:, 2] = 1.0
    blue[:, :2] = -1.0
    faces = torch.cat([red, blue])
    M = torch.stack([placing(size, 40.0, 0.0, 30.0, 32.0), placing(size, 40.0, 0.0, 34.0, 32.0)])
    mask = torch.zeros(size, size)
    mask[4:28, 4:28] = 1.0
    settings = BlendSettings(colour_match="none")
    for impl in ("torch", "numba"):
        for order, top in (([0, 1], (0, 0, 255)), ([1, 0], (255, 0, 0))):
            out, _ = paste_faces(frames, faces[order], torch.zeros(2, dtype=torch.int64), M[order], mask=mask, settings=settings, impl=impl)
            assert tuple(out[0, 32, 32].tolist()) == top, (impl, order)
