"""Alignment: exact transforms, pixel-centre convention, accuracy on real faces, round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reenact.errors import ShapeError
from reenact.faces.align import (
    align_faces,
    arcface_template,
    ffhq_template,
    invert_affine,
    similarity_from_points,
    transform_points,
    warp_affine,
    warp_from_crop,
    warp_to_crop,
)


def _similarity(angle: float, scale: float, tx: float, ty: float) -> torch.Tensor:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float32)


def test_similarity_recovers_exact_transforms():
    template = arcface_template(112)
    truth = torch.stack([_similarity(0.3, 0.25, 20.0, -7.0), _similarity(-1.0, 2.0, -50.0, 30.0)])
    src = transform_points(template.expand(2, 5, 2), invert_affine(truth))
    M = similarity_from_points(src, template)
    assert torch.allclose(M, truth, atol=1e-4)
    assert (transform_points(src, M) - template).norm(dim=2).max() < 1e-3


def test_invert_affine_round_trip():
    M = torch.stack([_similarity(0.7, 1.7, 3.0, 4.0), _similarity(-2.0, 0.3, -9.0, 1.0)])
    pts = torch.rand(2, 7, 2) * 100
    assert torch.allclose(transform_points(transform_points(pts, M), invert_affine(M)), pts, atol=1e-3)


_WARP_MATRICES = [(0.0, 1.0, 0.0, 0.0), (0.4, 0.6, 3.0, -2.0), (-2.5, 1.7, -9.0, 12.0), (1.0, 0.3, 40.0, 30.0)]


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize(("src_size", "out_size"), [((37, 53), (20, 31)), ((150, 150), (150, 150))])
def test_warp_affine_is_kornias(padding_mode, src_size, out_size):
    """Our warp (torch's affine_grid and grid_sample) samples what kornia's warp_affine does,
    for rotations, scales and shifts that leave the image."""
    from kornia.geometry.transform import warp_affine as kornia_warp_affine

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, *src_size, generator=gen) * 255
    M = torch.stack([_similarity(*m) for m in _WARP_MATRICES])
    ours = warp_affine(images, M, out_size, padding_mode=padding_mode)
    theirs = kornia_warp_affine(images, M, out_size, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    assert ours.shape == (4, 3, *out_size)
    assert (ours - theirs).abs().max() < 1e-2  # grey levels of 0..255
    assert ours[1].abs().sum() > 0 and (ours[3] == 0).any() == (padding_mode == "zeros")


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_warp_affine_of_a_one_pixel_high_source(padding_mode):
    """A one-pixel-high source is its single row for every output row: each output pixel is
    the row sampled bilinearly at the source x its matrix gives (zeros beyond the ends, or
    the end pixel for "border").

    Checked against this explicit sum, not kornia: with a side of one pixel both warps go
    through float32 matrices with 2e14 entries, and kornia's differed from ours by 240
    grey levels on the CI machine while agreeing to 1e-3 on this one."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 1, 40, generator=gen) * 255
    M = torch.stack([_similarity(*m) for m in _WARP_MATRICES])
    ours = warp_affine(images, M, (8, 9), padding_mode=padding_mode)

    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(9.0), indexing="ij")
    out_points = torch.stack([xs.flatten(), ys.flatten()], dim=1).expand(4, -1, -1).double()
    src_x = transform_points(out_points, invert_affine(M.double()))[..., 0]  # [4, 72]
    if padding_mode == "border":
        src_x = src_x.clamp(0, 39)
    left = src_x.floor()
    expected = torch.zeros(4, 3, 72, dtype=torch.float64)
    for offset, weight in ((0, 1 - (src_x - left)), (1, src_x - left)):
        index = (left + offset).long()
        inside = (index >= 0) & (index < 40)
        values = torch.gather(images[:, :, 0].double(), 2, index.clamp(0, 39)[:, None].expand(-1, 3, -1))
        expected += values * (weight * inside)[:, None]
    assert (ours.reshape(4, 3, 72).double() - expected).abs().max() < 1e-2
    assert (expected[3] == 0).any() == (padding_mode == "zeros")  # matrix 3 leaves the row


def test_warp_affine_gradients_and_bad_input():
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    M = torch.stack([_similarity(0.2, 1.1, 1.0, 2.0)] * 2)
    warp_affine(images, M, (12, 12)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with pytest.raises(ShapeError, match="padding_mode"):
        warp_affine(images, M, (12, 12), padding_mode="reflection")
    with pytest.raises(ShapeError):
        warp_affine(images[:1], M, (12, 12))  # one image, two matrices


def test_warp_puts_pixels_where_the_matrix_puts_points():
    """Pixel-centre convention: a bright dot at a source point lands on the mapped point."""
    h, w, size = 200, 240, 112
    src_pts = torch.tensor([[[70.0, 80.0], [130.0, 76.0], [101.0, 112.0], [78.0, 140.0], [126.0, 137.0]]])
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    image = torch.zeros(h, w)
    for x, y in src_pts[0]:
        image = torch.maximum(image, torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2)))
    frames = (image * 255).round().to(torch.uint8)[None, :, :, None].expand(1, h, w, 3).contiguous()
    M = similarity_from_points(src_pts, arcface_template(size))
    crop = (warp_to_crop(frames, torch.tensor([0]), M, size)[0, 0] + 1) / 2
    expected = transform_points(src_pts, M)[0]
    cy, cx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    for x, y in expected:
        window = ((cx - x).abs() < 5) & ((cy - y).abs() < 5)
        weight = crop * window
        centroid = torch.stack([(weight * cx).sum(), (weight * cy).sum()]) / weight.sum()
        assert (centroid - torch.stack([x, y])).norm() < 0.15


def test_points_warped_into_the_crop_land_where_the_detector_finds_them(labelled_photos, scrfd):
    """Crop each labelled face (FFHQ-style, 320 px, face at 60 %), detect again in the crop:
    the re-detected points sit on the warped points within 1.5 px on average."""
    template = ffhq_template(320) * 0.6 + 64
    errors = []
    for _, _, image, dets in labelled_photos[::2]:
        i = int(np.argmax(dets.areas()))
        pts = torch.from_numpy(dets.points[i : i + 1])
        crops, M = align_faces(image[None], torch.zeros(1, dtype=torch.long), pts, template, 320)
        crop8 = ((crops[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        again = scrfd.detect(crop8[None])[0]
        assert len(again) >= 1
        j = int(np.argmax(again.areas()))
        errors.append(float((torch.from_numpy(again.points[j]) - transform_points(pts, M)[0]).norm(dim=1).mean()))
    print(f"re-detected points vs warped points: mean {np.mean(errors):.2f} px, max {np.max(errors):.2f} px")
    assert np.mean(errors) < 1.5


PSNR_MEASURED, PSNR_MARGIN = 43.4, 3.0


def test_crop_then_paste_back_round_trip(read_clip, scrfd):
    frames = read_clip("liveportrait_d0.mp4", 1)
    dets = scrfd.detect(frames)[0]
    pts = torch.from_numpy(dets.points[:1])
    M = similarity_from_points(pts, ffhq_template(512))
    crop = warp_to_crop(frames, torch.tensor([0]), M, 512)
    back, coverage = warp_from_crop(crop, M, frames.shape[1:3])
    original = frames[0].permute(2, 0, 1).float() / 127.5 - 1
    x1, y1, x2, y2 = (int(v) for v in dets.boxes[0])
    inside = torch.zeros_like(coverage[0, 0], dtype=torch.bool)
    inside[y1:y2, x1:x2] = True
    inside &= coverage[0, 0] > 0.999
    assert inside.sum() > 0.9 * (y2 - y1) * (x2 - x1)
    mse = ((back[0] - original) ** 2)[:, inside].mean()
    psnr = 10 * math.log10(4.0 / float(mse))  # range [-1, 1]: peak-to-peak 2
    # measured 43.4 dB (torch 2.14 CPU, bilinear both ways); 3 dB margin for other builds
    # resampling, while a half-pixel shift or a wrong inverse drops it below 30 dB
    assert psnr >= PSNR_MEASURED - PSNR_MARGIN, f"round-trip PSNR {psnr:.1f} dB"


def test_batched_alignment_matches_a_per_face_loop(read_clip, scrfd):
    frames = read_clip("liveportrait_d0.mp4", 4)
    dets = scrfd.detect(frames)
    pts = torch.from_numpy(np.concatenate([d.points[:1] for d in dets]))
    index = torch.arange(4)
    M = similarity_from_points(pts, ffhq_template(256))
    batched = warp_to_crop(frames, index, M, 256)
    for i in range(4):
        single = warp_to_crop(frames[i : i + 1], torch.tensor([0]), M[i : i + 1], 256)
        assert (batched[i] - single[0]).abs().max() < 1e-3  # float rounding only (1 level = 0.0078)


def test_face_cut_by_the_frame_border(labelled_photos):
    """Half a face outside the frame: alignment still works, outside is black (-1)."""
    _, _, image, dets = labelled_photos[0]
    i = int(np.argmax(dets.areas()))
    box = dets.boxes[i]
    cut = int((box[0] + box[2]) / 2)  # keep only the right half of the face
    part = image[:, cut:].contiguous()
    pts = torch.from_numpy(dets.points[i : i + 1]).clone()
    pts[..., 0] -= cut
    crops, M = align_faces(part[None], torch.zeros(1, dtype=torch.long), pts, arcface_template(112), 112)
    assert torch.isfinite(crops).all()
    assert (crops[0, :, :, :20] == -1).all()  # left part of the crop lies outside the frame
    assert crops[0, :, :, 80:].std() > 0.05  # the visible half has content


def test_templates():
    a = arcface_template(112)
    assert a.shape == (5, 2) and a[0, 0] < a[1, 0] and a[2, 1] < a[3, 1]
    f = ffhq_template(1024)
    assert f.shape == (5, 2)
    eye_mid = (f[0] + f[1]) / 2
    assert abs(float(eye_mid[0]) - 511.5) < 5 and 400 < float(eye_mid[1]) < 512
    assert torch.allclose(ffhq_template(256) + 0.5, (f + 0.5) / 4)


def test_bad_shapes():
    with pytest.raises(ShapeError):
        similarity_from_points(torch.zeros(5, 2), arcface_template())
    with pytest.raises(ShapeError):
        similarity_from_points(torch.full((1, 5, 2), float("nan")), arcface_template())
    with pytest.raises(ShapeError):
        warp_to_crop(torch.zeros(1, 10, 10, 3), torch.tensor([0]), torch.zeros(1, 2, 3), 16)
    with pytest.raises(ShapeError):
        warp_to_crop(torch.zeros(1, 10, 10, 3, dtype=torch.uint8), torch.tensor([3]), torch.eye(2, 3)[None], 16)
    with pytest.raises(ShapeError):
        invert_affine(torch.zeros(1, 2, 3))
