"""The optimisation mapping backend on a real fixture clip with the real fixture models.

Tiny generator (64 px), MobileFace identity and PFLD landmarks via onnx2torch, three
consecutive frames of ``liveportrait_d0.mp4`` aligned with reenact.faces.align from five
points measured once with the offline CenterFace detector.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reenact.faces.align import align_faces, arcface_template, ffhq_template
from reenact.io.images import read_image
from reenact.io.reader import VideoReader
from reenact.mapping.optimize import OptimizeSettings, OptimizingMapper
from reenact.models.onnx_modules import OnnxIdentity, OnnxLandmarks
from reenact.models.stylegan2 import tiny_generator
from testing.models import MOBILEFACE, PFLD

R = 64
# CenterFace five points (frame pixels) of frames 0..2 of liveportrait_d0.mp4, measured once.
CLIP_POINTS = [
    [[201.3, 257.9], [309.8, 255.1], [253.5, 315.3], [209.0, 357.6], [300.1, 354.6]],
    [[201.4, 257.8], [309.5, 255.1], [253.4, 315.1], [209.2, 357.2], [299.8, 354.4]],
    [[201.5, 257.8], [309.3, 255.0], [253.4, 314.8], [209.4, 357.0], [299.7, 354.1]],
]


@pytest.fixture(scope="module")
def nets(fixtures: Path) -> tuple[OnnxIdentity, OnnxLandmarks]:
    return OnnxIdentity(MOBILEFACE.spec(fixtures)), OnnxLandmarks(PFLD.spec(fixtures))


@pytest.fixture(scope="module")
def clip_crops(fixtures: Path) -> torch.Tensor:
    with VideoReader(fixtures / "videos/liveportrait_d0.mp4", chunk_size=len(CLIP_POINTS), backend="av") as reader:
        frames = next(iter(reader)).frames
    points = torch.tensor(CLIP_POINTS)
    crops, _ = align_faces(frames, torch.arange(len(CLIP_POINTS)), points, ffhq_template(R), R)
    return crops


@pytest.fixture(scope="module")
def target(fixtures: Path, nets: tuple[OnnxIdentity, OnnxLandmarks]) -> torch.Tensor:
    """MobileFace embedding [1,256] of another person's photo (the identity to put on)."""
    from reenact.faces.detect import make_detector

    image = read_image(fixtures / "images/deepface/img1.jpg")
    dets = make_detector("offline").detect(image[None])[0]
    assert len(dets) == 1
    crop, _ = align_faces(image[None], torch.tensor([0]), torch.from_numpy(dets.points), arcface_template(112), 112)
    with torch.no_grad():
        return nets[0](crop)


SETTINGS = OptimizeSettings(steps_first=30, steps_warm=8, init_candidates=4, lr_first=0.1, lr_warm=0.02)


def test_identity_falls_and_landmarks_hold_on_a_clip(nets, clip_crops, target) -> None:
    G = tiny_generator(seed=0, resolution=R)
    mapper = OptimizingMapper(G, nets[0], nets[1], SETTINGS)
    n = clip_crops.shape[0]
    ws, stats = mapper.map(clip_crops, target.expand(n, -1).contiguous(), torch.zeros(n, dtype=torch.long))

    assert ws.shape == (n, 1, G.w_dim) and torch.isfinite(ws).all()
    assert not stats.diverged.any()
    assert stats.warm.tolist() == [False, True, True]
    # identity: the identity term does not depend on the input frame, so every frame's
    # answer is compared with the track's random start; it must have moved to the target.
    start_identity = float(stats.initial["identity"][0])
    # (30 steps take it from ~0.98 to ~0.94 on this clip; the warm frames keep what it gained)
    assert (stats.final["identity"] < start_identity - 0.02).all(), (start_identity, stats.final["identity"])
    assert (stats.final["identity"][1:] <= stats.final["identity"][0] + 0.005).all()
    # the returned latents really render faces with that identity (recomputed here)
    terms = mapper.evaluate(ws, clip_crops, target.expand(n, -1))
    assert torch.allclose(terms["identity"], stats.final["identity"], atol=1e-4)
    # landmarks: the 51 inner points stay within 4% of the landmark crop side (RMS) of
    # the input face's for every frame (the random start is at ~12%)
    rms = terms["landmarks"].sqrt()
    assert (rms < 0.04).all(), rms
    assert float(stats.initial["landmarks"][0]) > float(stats.final["landmarks"][0])
    # warm-started frames converge in far fewer steps than the first frame
    assert stats.steps[0] >= 20
    assert (stats.steps[1:] <= SETTINGS.steps_warm).all()
    # the report has steps taken and final losses per track
    report = mapper.report()
    assert report[0]["frames"] == n and report[0]["steps"] == int(stats.steps.sum())
    assert report[0]["diverged"] == 0
    assert report[0]["final"]["identity"] == pytest.approx(float(stats.final["identity"][-1]))


def test_pipeline_factory_uses_the_packs_identity_model(fixtures: Path, clip_crops, target) -> None:
    """make_optimizing_mapping builds the backend from a pack: the identity loss runs the
    differentiable twin of the pack's ONNX identity model (same embedding space as the
    target codes), the landmark model comes from the settings."""
    from types import SimpleNamespace

    from reenact.errors import ConfigError
    from reenact.faces import DlibFaceEncoder, OnnxArcFaceEncoder
    from reenact.mapping.optimize import make_optimizing_mapping

    encoder = OnnxArcFaceEncoder(MOBILEFACE.file(fixtures), MOBILEFACE.mean, MOBILEFACE.std)
    G = tiny_generator(seed=0, resolution=R)
    pack = SimpleNamespace(identity=encoder, generator=G)
    settings = OptimizeSettings(steps_first=4, steps_warm=2, init_candidates=2,
                                landmark_model=PFLD.spec(fixtures))
    mapping = make_optimizing_mapping(pack, settings, seed=0)
    # the onnxruntime encoder and its onnx2torch twin agree on the input faces
    with torch.no_grad():
        twin = mapping.mapper.identity_net(_arcface_crops(mapping, clip_crops[:1]))
    codes = encoder.embed_aligned(_arcface_crops(mapping, clip_crops[:1]))
    assert torch.allclose(twin, codes, atol=1e-3)
    ws = mapping(clip_crops[:2], target.expand(2, -1), [3, 3])
    assert ws.shape == (2, G.num_ws, G.w_dim)
    assert mapping.last_stats is not None and mapping.last_stats.warm.tolist() == [False, True]
    assert mapping.report()[3]["frames"] == 2

    with pytest.raises(ConfigError, match="differentiable identity model"):
        make_optimizing_mapping(SimpleNamespace(identity=DlibFaceEncoder(), generator=G),
                                settings, seed=0)
    with pytest.raises(ConfigError, match="landmark_model.path"):
        make_optimizing_mapping(pack, OptimizeSettings(), seed=0)


def _arcface_crops(mapping, crops: torch.Tensor) -> torch.Tensor:
    from kornia.geometry.transform import warp_affine

    m = mapping.mapper.geometry.identity_matrix.expand(crops.shape[0], -1, -1)
    return warp_affine(crops, m, (112, 112), align_corners=True).clamp(-1, 1)
