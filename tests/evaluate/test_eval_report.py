"""`reenact eval` on real fixture clips: sanity (self, blurred, flicker, identity transfer)
and bad input (unreadable, sizes, lengths, frame rates, no faces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eval_media import (
    D0,
    FRIENDS,
    KATIE,
    edit_faces,
    erase,
    flicker,
    load_models,
    strong_blur,
    write_clip,
)

from reenact.errors import InputError, NoFaceError, VideoReadError
from reenact.evaluate.report import EvalSettings, evaluate_videos
from reenact.faces.privacy_thresholds import OPERATING_POINTS
from testing.media import read_frames

N = 8  # frames per evaluation: keeps each run a few seconds on 2 CPU cores


@pytest.fixture(scope="module")
def models(fixtures: Path):
    return load_models(fixtures)


@pytest.fixture(scope="module")
def d0(fixtures: Path, models) -> tuple[Path, np.ndarray, list[np.ndarray]]:
    """The fixture clip, its first N frames and their face boxes."""
    path = fixtures / D0
    frames = read_frames(path, N)
    boxes = [d.boxes for d in models[0].detect(torch.from_numpy(frames))]
    assert all(len(b) == 1 for b in boxes)
    return path, frames, boxes


def _eval(a: Path, b: Path, models, **kw) -> dict:
    identity_image = kw.pop("identity_image", None)
    distractors = kw.pop("distractors", ())
    detector, identity, landmarks = models
    return evaluate_videos(a, b, detector, identity, landmarks, identity_image=identity_image,
                           settings=EvalSettings(max_frames=kw.pop("max_frames", N), **kw), distractors=distractors)


@pytest.fixture(scope="module")
def self_report(fixtures: Path, d0, models) -> dict:
    others = [fixtures / "images/deepface" / n for n in ("img1.jpg", "img3.jpg", "img17.jpg")]  # 3 other people
    return _eval(d0[0], d0[0], models, distractors=others)


def test_video_against_itself_is_perfect(self_report: dict) -> None:
    s = self_report["summary"]
    assert s["faces_evaluated"] == N and s["output_face_detected_rate"] == 1.0
    assert s["privacy"]["reidentification_rate"] == 1.0
    assert s["privacy"]["per_track"] == {"0": 1.0}
    assert s["privacy"]["gallery_size"] == 4 and s["privacy"]["distractors"] == 3
    assert "nearest identity of the gallery" in s["privacy"]["rule"]
    assert s["privacy"]["threshold"] == OPERATING_POINTS["arcface-onnx"]["tight"].threshold
    assert "arcface-onnx" in s["privacy"]["threshold_source"]
    for angle in ("yaw", "pitch", "roll"):
        assert s["attributes"]["pose_error_deg"][angle]["max"] == 0.0
    assert s["attributes"]["expression_error"]["max"] < 1e-9
    assert s["background"]["psnr_db"] == s["background"]["cap_db"] == 100.0
    assert s["temporal"]["tl_id"]["ratio"] == pytest.approx(1.0)
    assert s["temporal"]["tg_id"]["ratio"] == pytest.approx(1.0)
    assert s["temporal"]["flicker"]["excess"] == 0.0
    assert self_report["alignment"]["pairs"] == N and not self_report["warnings"]


def test_report_names_the_models(self_report: dict) -> None:
    m = self_report["models"]
    assert "scrfd_500m_kps.onnx" in m["detector"]
    assert "mobileface_V2.onnx" in m["identity"] and "mean 0, std 1" in m["identity"]
    assert "pfld.onnx" in m["landmarks"]
    s = self_report["summary"]
    assert s["privacy"]["models"]["identity"] == m["identity"]
    assert s["attributes"]["models"]["landmarks"] == m["landmarks"]


def test_blurred_faces_are_not_reidentified_and_lose_expression(d0, models, tmp_path: Path, self_report) -> None:
    path, frames, boxes = d0
    blurred = write_clip(tmp_path / "blurred.mp4", edit_faces(frames, boxes, strong_blur))
    s = _eval(path, blurred, models)["summary"]
    assert s["privacy"]["reidentification_rate"] <= 0.2
    assert "gallery of one" in s["privacy"]["rule"]
    assert s["privacy"]["mean_similarity_to_original"] < 0.5
    expr = s["attributes"]["expression_error"]["mean"]
    assert expr > 0.02 and expr > 100 * self_report["summary"]["attributes"]["expression_error"]["mean"]
    assert s["background"]["psnr_db"] > 35.0  # only the faces were touched (plus H.264 noise)


def test_flickering_face_scores_higher_flicker(d0, models, tmp_path: Path) -> None:
    path, frames, boxes = d0
    steady = write_clip(tmp_path / "steady.mp4", frames)
    flickering = write_clip(tmp_path / "flicker.mp4", edit_faces(frames, boxes, flicker, grow=0.2))
    t = _eval(steady, flickering, models)["summary"]["temporal"]["flicker"]
    assert t["output"] > t["input"] + 20.0  # +-25 levels every frame vs. the clip's own change


def test_identity_transfer_to_another_person(fixtures: Path, d0, models, tmp_path: Path) -> None:
    from PIL import Image

    other = fixtures / KATIE
    target = tmp_path / "target.png"
    Image.fromarray(read_frames(other, 30)[-1]).save(target)  # a frame not among the evaluated ones
    report = _eval(d0[0], other, models, mode="reenact", identity_image=target)
    s = report["summary"]
    assert s["identity"]["similarity_to_target"]["mean"] > 0.5
    assert s["identity"]["retrieval_rate"] == 1.0
    assert s["privacy"]["reidentification_rate"] == 0.0
    assert s["attributes"]["expression_error"]["mean"] > 0.02
    assert len(report["tracks"][0]["similarity_to_target"]) == N


def test_frame_rate_mismatch_is_aligned_by_timestamps(d0, models, tmp_path: Path) -> None:
    path, frames, _ = d0
    doubled = write_clip(tmp_path / "fps50.mp4", np.repeat(frames[:6], 2, axis=0), fps=50)
    report = _eval(path, doubled, models, max_frames=6)
    assert report["alignment"]["pairs"] == 6 and report["alignment"]["output_fps"] == 50.0
    assert any("frame rates differ" in w for w in report["warnings"])
    # each input frame met its own content: near-zero errors, person re-identified
    s = report["summary"]
    assert s["attributes"]["expression_error"]["mean"] < 0.01
    assert s["privacy"]["reidentification_rate"] == 1.0


def test_shorter_output_without_faces_is_measured_on_the_overlap(d0, models, tmp_path: Path) -> None:
    path, frames, boxes = d0
    erased = write_clip(tmp_path / "erased.mp4", edit_faces(frames[:6], boxes[:6], erase, grow=0.3))
    report = _eval(path, erased, models, max_frames=8)  # the output is 2 frames shorter
    assert report["alignment"]["pairs"] == 6 and report["alignment"]["input_frames_evaluated"] == 8
    assert any("differ in length" in w for w in report["warnings"])
    s = report["summary"]
    assert s["output_face_detected_rate"] == 0.0 and s["faces_evaluated"] == 6
    assert s["privacy"]["reidentification_rate"] == 0.0
    assert any("no face in any evaluated frame" in w for w in report["warnings"])


def test_no_face_in_input_is_refused(models, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = write_clip(tmp_path / "noise.mp4", rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(NoFaceError, match="no face"):
        _eval(noise, noise, models)


def test_unreadable_or_missing_file_is_refused(d0, models, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(VideoReadError, match="junk.mp4"):
        _eval(d0[0], junk, models)
    with pytest.raises(VideoReadError, match="not found"):
        _eval(tmp_path / "missing.mp4", d0[0], models)


def test_different_size_or_too_short_output_is_refused(d0, models, tmp_path: Path) -> None:
    path, frames, _ = d0
    small = write_clip(tmp_path / "small.mp4", frames[:, ::2, ::2])
    with pytest.raises(InputError, match="256x256 but .* is 512x512"):
        _eval(path, small, models)
    short = write_clip(tmp_path / "short.mp4", frames[:2])
    with pytest.raises(InputError, match="overlap"):
        _eval(path, short, models, max_frames=40)


def test_reenact_mode_needs_the_target_identity(d0, models) -> None:
    with pytest.raises(InputError, match="--identity"):
        _eval(d0[0], d0[0], models, mode="reenact")


def test_privacy_is_reported_per_person(fixtures: Path, models, tmp_path: Path) -> None:
    """A crowd clip with one person's face erased: only that person stops being re-identified."""
    path = fixtures / FRIENDS
    frames = read_frames(path, 3)
    boxes = [d.boxes for d in models[0].detect(torch.from_numpy(frames))]
    first = boxes[0][int(np.argmax(boxes[0][:, 0]))]  # the right-most face of frame 0

    def same_person(b: np.ndarray) -> np.ndarray:  # that face's box in each frame
        ious = [np.prod(np.clip(np.minimum(b[2:], first[2:]) - np.maximum(b[:2], first[:2]), 0, None)) for b in b]
        return b[int(np.argmax(ious))][None]

    erased = write_clip(tmp_path / "one_erased.mp4", edit_faces(frames, [same_person(b) for b in boxes], erase, 0.3))
    report = _eval(path, erased, models, max_frames=3)
    p = report["summary"]["privacy"]
    assert p["gallery_size"] >= 3 and "nearest identity of the gallery" in p["rule"]
    rates = sorted(p["per_track"].values())
    assert rates[0] == 0.0 and all(r == 1.0 for r in rates[1:])
    assert p["reidentification_rate"] == pytest.approx((len(rates) - 1) / len(rates))


def test_reid_threshold_follows_the_identity_model() -> None:
    from types import SimpleNamespace

    from reenact.errors import ConfigError
    from reenact.evaluate.report import reid_threshold_for
    from reenact.pipeline.privacy.checkers import checkers_for

    # dlib's descriptors of different people are ~0.83 cosine apart: ArcFace's 0.33 would flag everyone
    # eval and deidentify's privacy check decide with the same number (the issue: eval reported a face
    # re-identified at its own 0.92 that the check had passed, and the reverse)
    for name in ("dlib-resnet", "arcface-onnx"):
        tight = next(c for c in checkers_for([SimpleNamespace(name=name)]) if c.chip == "tight")  # type: ignore[list-item]
        threshold, source = reid_threshold_for(SimpleNamespace(name=name), EvalSettings())
        assert threshold == tight.threshold and "operating point" in source
    assert reid_threshold_for(SimpleNamespace(name="dlib-resnet"), EvalSettings())[0] == pytest.approx(0.91)
    assert reid_threshold_for(SimpleNamespace(name="arcface-onnx"), EvalSettings())[0] < 0.35
    assert reid_threshold_for(SimpleNamespace(name="dlib-resnet"), EvalSettings(reid_threshold=0.5)) == (
        0.5, "set by the user")
    with pytest.raises(ConfigError, match="--reid-threshold"):
        reid_threshold_for(SimpleNamespace(name="my-encoder"), EvalSettings())
