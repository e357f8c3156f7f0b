"""The same-context baseline (reenact.pipeline.baseline): each face's window with the face gone."""

from __future__ import annotations

import pytest
import torch

from reenact.blend.redact import face_regions, redact_faces
from reenact.faces.privacy_thresholds import embed_with_chip
from reenact.pipeline.baseline import flat_windows

POINTS = torch.tensor([[[80.0, 90.0], [120.0, 90.0], [100.0, 110.0], [85.0, 130.0], [115.0, 130.0]],
                       [[20.0, 30.0], [40.0, 30.0], [30.0, 40.0], [22.0, 50.0], [38.0, 50.0]]])
pytestmark = pytest.mark.privacy  # bench/mutation.py runs these per mutant

BOXES = torch.tensor([[70.0, 70.0, 130.0, 140.0], [12.0, 18.0, 48.0, 58.0]])


def _frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (2, 200, 240, 3), generator=g, dtype=torch.uint8)


def test_windows_hold_the_face_gone_and_the_points_moved_with_them() -> None:
    frames = _frames()
    index = torch.tensor([1, 0])
    windows, points = flat_windows(frames, index, BOXES, POINTS)
    assert windows.dtype == torch.uint8 and windows.shape[0] == 2 and windows.shape[-1] == 3
    assert points.shape == (2, 5, 2)
    # the first face's window starts at the frame's corner (clipped); its points are unchanged
    full = redact_faces(frames[1], face_regions(BOXES[:1], POINTS[:1]), "flat")
    h, w = min(200, windows.shape[1]), min(240, windows.shape[2])
    assert torch.equal(windows[0, :h, :w], full[:h, :w])
    assert torch.allclose(points[0], POINTS[0])
    # the face is gone: flat inside the eyes-to-mouth area
    inner = windows[0, 92:128, 85:115].float()
    assert float(inner.std(dim=(0, 1)).max()) < 1.0
    # the frame itself is untouched
    assert not torch.equal(frames[1, 92:128, 85:115], windows[0, 92:128, 85:115])


def test_a_chip_of_the_window_is_the_chip_of_the_whole_frame_with_the_face_gone() -> None:
    """What the check embeds from the window is what it would embed from a full copy of the frame."""

    class Chipper:  # an identity model that returns its aligned chip, to compare pixels
        name, dim, crop_size = "chip", 3 * 24 * 24, 24

        def template(self) -> torch.Tensor:
            return torch.tensor([[8.0, 9.0], [16.0, 9.0], [12.0, 13.0], [9.0, 17.0], [15.0, 17.0]])

        def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
            return crops.flatten(1)

        def embed(self, frames, frame_index, points):  # noqa: ANN001, ANN201
            raise NotImplementedError

    frames = _frames()
    big = torch.zeros((1, 400, 500, 3), dtype=torch.uint8)
    big[0, 100:300, 150:390] = frames[0]
    boxes, points = BOXES[:1] + torch.tensor([150.0, 100.0, 150.0, 100.0]), POINTS[:1] + torch.tensor([150.0, 100.0])
    windows, local = flat_windows(big, torch.tensor([0]), boxes, points)
    whole = redact_faces(big[0], face_regions(boxes, points), "flat")[None]
    a = embed_with_chip(Chipper(), windows, torch.tensor([0]), local, "loose")  # type: ignore[arg-type]
    b = embed_with_chip(Chipper(), whole, torch.tensor([0]), points, "loose")  # type: ignore[arg-type]
    assert torch.allclose(a, b, atol=1e-4)


def test_a_face_at_the_frame_edge_is_filled_with_its_frames_colour_not_the_padding() -> None:
    """A face at the right edge, batched with a larger window: its window is padded with zeros
    beyond the frame, and its fill takes the mean of the frame's pixels only (what the guard's
    fill rung writes there), not of the padding."""
    frames = torch.full((1, 200, 240, 3), 200, dtype=torch.uint8)
    boxes = torch.tensor([[20.0, 20.0, 120.0, 140.0], [212.0, 80.0, 238.0, 112.0]])
    points = torch.tensor([[[50.0, 60.0], [90.0, 60.0], [70.0, 80.0], [55.0, 100.0], [85.0, 100.0]],
                           [[218.0, 90.0], [232.0, 90.0], [225.0, 97.0], [220.0, 104.0], [230.0, 104.0]]])
    windows, local = flat_windows(frames, torch.tensor([0, 0]), boxes, points)
    region = face_regions(boxes[1:], points[1:])
    written = redact_faces(frames[0], region, "flat")
    assert int(written[96, 225, 0]) == 200  # the frame is uniform: so is its fill
    cx, cy = (int(v) for v in local[1].mean(dim=0))
    assert int(windows[1, cy, cx, 0]) == 200
