"""Pure metric functions: known answers on constructed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reenact.errors import ShapeError
from reenact.evaluate import metrics as M


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _project(yaw: float, pitch: float, roll: float, scale: float = 120.0, at=(256.0, 240.0)) -> np.ndarray:
    pts3 = M.mean_face_3d() @ _rot(yaw, pitch, roll).T
    return pts3[:, :2] * scale + np.asarray(at)


def test_head_pose_recovers_known_rotations() -> None:
    angles = [(0, 0, 0), (25, 0, 0), (0, -15, 0), (0, 0, 10), (-30, 12, -8)]
    pts = np.stack([_project(*a) for a in angles])
    pose = M.head_pose(pts)
    np.testing.assert_allclose(pose, np.array(angles, dtype=float), atol=0.5)


def test_pose_error_wraps_around() -> None:
    err = M.pose_error(np.array([[179.0, 0.0, -10.0]]), np.array([[-179.0, 5.0, 10.0]]))
    np.testing.assert_allclose(err, [[2.0, 5.0, 20.0]])


def test_expression_error_ignores_position_scale_rotation_but_sees_the_mouth() -> None:
    face = _project(0, 0, 0)
    c, a = face.mean(0), math.radians(20)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = (face - c) @ r.T * 1.7 + c + np.array([40.0, -25.0])
    open_a, open_b = face.copy(), face.copy()
    open_a[57:60] += [0, 6]  # lower lip down a little
    open_a[65:68] += [0, 6]
    open_b[57:60] += [0, 20]  # and a lot
    open_b[65:68] += [0, 20]
    err = M.expression_error(np.stack([face, face, face, face]), np.stack([face, moved, open_a, open_b]))
    assert err[0] < 1e-12 and err[1] < 1e-9
    assert 0.005 < err[2] < err[3]


def test_expression_error_ignores_the_jaw() -> None:
    face = _project(0, 0, 0)
    wide_jaw = face.copy()
    wide_jaw[:17, 0] += np.linspace(-30, 30, 17)
    assert M.expression_error(face[None], wide_jaw[None])[0] < 1e-12


def test_identity_similarity_and_nearest() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(3, 64))
    noisy = gallery[[2, 0, 1]] + 0.1 * rng.normal(size=(3, 64))
    sims = M.identity_similarity(noisy, gallery[2])
    assert sims[0] > 0.95 and abs(sims[1]) < 0.5
    assert M.nearest_is(noisy, gallery, [2, 0, 1]).all()
    assert not M.nearest_is(noisy, gallery, 0)[0]


def test_identity_consistency_stit_terms() -> None:
    rng = np.random.default_rng(1)
    same = np.repeat(rng.normal(size=(1, 32)), 6, axis=0)
    np.testing.assert_allclose(M.adjacent_similarity(same), 1.0)
    assert M.global_identity_consistency(same) == pytest.approx(1.0)
    drifting = same + np.cumsum(rng.normal(size=(6, 32)), axis=0)
    assert M.global_identity_consistency(drifting) < 0.9
    assert math.isnan(M.global_identity_consistency(same[:1]))


def test_landmark_jitter_is_zero_for_smooth_motion_and_grows_with_shake() -> None:
    base = _project(0, 0, 0)[None].repeat(8, 0)
    smooth = base + np.arange(8)[:, None, None] * np.array([3.0, 1.0])
    shake = smooth + np.where(np.arange(8) % 2, 2.0, -2.0)[:, None, None]
    size = np.full(8, 60.0)
    assert np.allclose(M.landmark_jitter(smooth, size), 0.0)
    j = M.landmark_jitter(shake, size)
    assert j.shape == (6,) and np.all(j > 0.1)


def test_flicker_measures_brightness_alternation_in_grey_levels() -> None:
    crops = torch.zeros(5, 3, 32, 32)
    assert np.allclose(M.flicker(crops), 0.0)
    alt = crops.clone()
    alt[1::2] += 20 / 127.5  # +20 levels every other frame
    np.testing.assert_allclose(M.flicker(alt), 20.0, atol=1e-3)


def test_psnr_outside_mask() -> None:
    a = np.full((20, 30, 3), 100, np.uint8)
    b = a.copy()
    mask = M.box_mask(20, 30, np.array([[5.0, 5.0, 15.0, 15.0]]), margin=0.0)
    b[mask] = 0  # changes only inside the face box
    sq, n = M.masked_mse(a, b, mask)
    assert sq == 0 and M.psnr_from_mse(sq, n) == M.PSNR_CAP_DB
    b[~mask] = 105  # background off by 5 levels
    sq, n = M.masked_mse(a, b, mask)
    assert M.psnr_from_mse(sq, n) == pytest.approx(10 * math.log10(255**2 / 25))
    assert mask.sum() == 100


def test_bad_shapes_raise_shape_error() -> None:
    with pytest.raises(ShapeError, match=r"\[F,68,2\]"):
        M.head_pose(np.zeros((2, 5, 2)))
    with pytest.raises(ShapeError):
        M.expression_error(np.zeros((1, 68, 2)), np.zeros((2, 68, 2)))
    with pytest.raises(ShapeError, match="all-zero"):
        M.cosine_matrix(np.zeros((1, 4)), np.ones((1, 4)))
    with pytest.raises(ShapeError, match="uint8"):
        M.masked_mse(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), np.zeros((4, 4), bool))
    with pytest.raises(ShapeError, match="NaN"):
        M.identity_similarity(np.full((1, 4), np.nan), np.ones(4))
