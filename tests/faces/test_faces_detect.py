"""Detectors on real photos and frames: both backends, working size, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from reenact.errors import ConfigError, ModelError, ShapeError
from reenact.faces.detect import (
    CenterFaceDetector,
    DetectorSettings,
    FaceDetections,
    InsightFaceDetector,
    make_detector,
)
from testing.models import SCRFD


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.clip(rb - lt, 0, None).prod())
    return inter / float((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)


def _check_arcface_order(points: np.ndarray, box: np.ndarray) -> None:
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    assert left_eye[0] < nose[0] < right_eye[0]  # "left" as the viewer sees it
    assert left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert (points[:, 0] >= box[0]).all() and (points[:, 0] <= box[2]).all()
    assert (points[:, 1] >= box[1]).all() and (points[:, 1] <= box[3]).all()


def test_both_backends_find_the_same_face(fixtures, load_photo, scrfd, centerface):
    image = load_photo(fixtures / "images/deepface/img1.jpg")
    found = {}
    for det in (scrfd, centerface):
        dets = det.detect(image[None])
        assert len(dets) == 1 and len(dets[0]) == 1, det.name
        d = dets[0]
        assert d.boxes.dtype == np.float32 and d.points.shape == (1, 5, 2) and 0.5 <= d.scores[0] <= 1
        _check_arcface_order(d.points[0], d.boxes[0])
        found[det.name] = d
    a, b = found["insightface"], found["centerface"]
    assert _iou(a.boxes[0], b.boxes[0]) > 0.6
    eye_distance = float(np.linalg.norm(a.points[0, 1] - a.points[0, 0]))
    assert np.linalg.norm(a.points[0] - b.points[0], axis=1).mean() < 0.15 * eye_distance


def test_both_backends_light_pass_finds_the_face_at_half_the_input(fixtures, load_photo, scrfd, centerface):
    image = load_photo(fixtures / "images/deepface/img1.jpg")
    h, w = image.shape[:2]
    assert scrfd.input_scale(h, w) == min(640 / h, 640 / w)  # letter-boxed into 640 x 640
    assert centerface.input_scale(h, w) == centerface.settings.input_size(h, w)[0] / h
    for det, scale in ((scrfd, 1.0), (centerface, 0.5)):  # the fixture SCRFD's input is fixed: always full
        full, light = det.detect(image[None])[0], det.detect(image[None], 0.5)[0]
        assert (full.scale, light.scale) == (1.0, scale) and len(light) == 1, det.name
        assert _iou(full.boxes[0], light.boxes[0]) > 0.7, det.name


def test_centerface_on_a_multi_face_photo(fixtures, load_photo, centerface, scrfd):
    image = load_photo(fixtures / "images/deepface/couple.jpg")
    c, s = centerface.detect(image[None])[0], scrfd.detect(image[None])[0]
    assert len(c) >= 2 and len(s) >= 2
    for box in s.boxes[:2]:
        assert max(_iou(box, other) for other in c.boxes) > 0.5


def test_working_size_maps_back_to_frame_pixels(fixtures, load_photo):
    image = load_photo(fixtures / "images/deepface/img1.jpg")  # 947x1280
    small = CenterFaceDetector(settings=DetectorSettings(working_size=320)).detect(image[None])[0]
    large = CenterFaceDetector(settings=DetectorSettings(working_size=640)).detect(image[None])[0]
    assert len(small) == len(large) == 1
    assert _iou(small.boxes[0], large.boxes[0]) > 0.85
    assert small.boxes[0, 2] > 600  # in frame pixels, not working pixels


def _torch_shrink(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """The torch path's downscale (antialiased bilinear on float frames), for comparison."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True,
                                           align_corners=False).numpy()


def test_cpu_downscale_by_area_finds_what_the_antialiased_one_does(fixtures, load_photo, monkeypatch):
    """CPU frames larger than working_size are shrunk by OpenCV's area averaging (cheaper than
    torch's antialiased bilinear on float frames); the face and its points come out the same."""
    from reenact.faces import detect as detect_module

    image = load_photo(fixtures / "images/deepface/img1.jpg")  # 947x1280
    pixels = image.numpy()[None]
    shrunk, reference = detect_module._shrink(pixels, 240, 178), _torch_shrink(pixels, 240, 178)
    assert shrunk.shape == reference.shape == (1, 3, 240, 178)
    assert float(np.abs(shrunk - reference).mean()) < 2.0  # levels
    detector = CenterFaceDetector(settings=DetectorSettings(working_size=320))
    fast = detector.detect(image[None])[0]
    monkeypatch.setattr(detect_module, "_shrink", _torch_shrink)
    slow = detector.detect(image[None])[0]
    assert len(fast) == len(slow) == 1
    assert _iou(fast.boxes[0], slow.boxes[0]) > 0.95
    side = float(slow.boxes[0, 2] - slow.boxes[0, 0])
    assert np.abs(fast.points - slow.points).max() < 0.03 * side
    # a frame given as a strided view (here transposed) is shrunk like its contiguous copy
    monkeypatch.undo()
    turned = image.transpose(0, 1)
    assert not turned.is_contiguous()
    view, copy = detector.detect(turned[None])[0], detector.detect(turned.contiguous()[None])[0]
    assert len(view) == len(copy) == 1 and np.allclose(view.boxes, copy.boxes)


def test_batched_detection_equals_one_frame_at_a_time(read_clip, centerface):
    frames = read_clip("liveportrait_d0.mp4", 3)
    batched = centerface.detect(frames)
    for i in range(3):
        single = centerface.detect(frames[i : i + 1])[0]
        assert np.allclose(single.boxes, batched[i].boxes, atol=0.05)
        assert np.allclose(single.points, batched[i].points, atol=0.05)


def test_black_frame_and_tiny_face(fixtures, load_photo, scrfd, centerface):
    black = torch.zeros(2, 360, 640, 3, dtype=torch.uint8)
    for det in (scrfd, centerface):
        assert [len(d) for d in det.detect(black)] == [0, 0]
    image = load_photo(fixtures / "images/deepface/img1.jpg")
    from PIL import Image

    tiny = np.asarray(Image.fromarray(image.numpy()).resize((33, 45), Image.Resampling.BILINEAR))  # face ~14 px
    canvas = np.full((240, 320, 3), 90, np.uint8)
    canvas[100:145, 100:133] = tiny
    assert len(scrfd.detect(canvas[None])[0]) == 0  # under min_face_size (20 px)
    loose = InsightFaceDetector(SCRFD.file(fixtures), DetectorSettings(min_face_size=0, score_threshold=0.3))
    for d in loose.detect(canvas[None]):
        assert (d.boxes[:, 2:] - d.boxes[:, :2]).min() < 20  # anything found is the tiny face


def test_face_cut_by_the_frame_border(fixtures, load_photo, scrfd):
    image = load_photo(fixtures / "images/deepface/img1.jpg")
    full = scrfd.detect(image[None])[0]
    x_mid = int((full.boxes[0, 0] + full.boxes[0, 2]) / 2) - 40
    part = image[:, x_mid:].contiguous()
    cut = scrfd.detect(part[None])[0]
    assert len(cut) == 1
    assert cut.boxes[0, 0] >= 0 and cut.boxes[0, 2] <= part.shape[1]  # clipped to the frame
    expected = full.points[0, 1] - np.array([x_mid, 0])  # right eye stays in view
    assert np.linalg.norm(cut.points[0, 1] - expected) < 15


def test_corrupt_model_and_pack_without_detector(tmp_path, fixtures):
    broken = tmp_path / "det_10g.onnx"
    broken.write_bytes(b"not an onnx file" * 64)
    for backend in ("offline", "insightface"):
        with pytest.raises(ModelError, match="det_10g.onnx"):
            make_detector(backend, broken)
    pack = tmp_path / "buffalo_x"
    pack.mkdir()
    (pack / "w600k_r50.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="no detector") as info:
        make_detector("insightface", pack)
    assert str(pack) in str(info.value)
    with pytest.raises(ModelError, match="not found"):
        make_detector("insightface", tmp_path / "missing.onnx")
    good = tmp_path / "pack"
    good.mkdir()
    (good / "det_500m.onnx").symlink_to(SCRFD.file(fixtures))
    assert make_detector("insightface", good).name == "insightface"


def test_bad_settings_and_frames(scrfd):
    with pytest.raises(ConfigError):
        DetectorSettings(working_size=8)
    with pytest.raises(ConfigError):
        make_detector("insightface")
    with pytest.raises(ConfigError):
        make_detector("yolo")  # type: ignore[arg-type]
    with pytest.raises(ShapeError):
        scrfd.detect(torch.zeros(1, 32, 32, 3))
    with pytest.raises(ShapeError):
        scrfd.detect(torch.zeros(32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ShapeError):
        FaceDetections(np.zeros((1, 4), np.float32), np.zeros((2, 5, 2), np.float32), np.zeros(1, np.float32))


def test_small_frames_run_at_their_own_size_and_large_ones_are_scaled_down():
    default = DetectorSettings()
    assert default.input_size(256, 256) == (256, 256, 256, 256)  # never upscaled
    assert default.input_size(500, 300) == (500, 300, 512, 320)  # padded to multiples of 32
    assert default.input_size(720, 1280) == (360, 640, 384, 640)  # longest side down to 640
    assert DetectorSettings(upscale=True).input_size(256, 256) == (640, 640, 640, 640)
    # batch_pixels bounds the call: one 512x512 or 720p (640x384 input) frame, 4 of 256x256
    assert default.frames_per_call(512, 512) == default.frames_per_call(384, 640) == 1
    assert default.frames_per_call(256, 256) == 4
    assert default.frames_per_call(1024, 1024) == 1
    assert DetectorSettings(batch_pixels=10**9).frames_per_call(512, 512) == default.batch_size
    with pytest.raises(ConfigError):
        DetectorSettings(batch_pixels=0)


@pytest.mark.parametrize("clip", ["liveportrait_d0.mp4", "mobileface_friends1.mp4"])
def test_native_size_detection_keeps_the_recall_of_upscaling(read_clip, scrfd, clip):
    """CenterFace at the frame's own size finds every face the independent SCRFD finds that
    CenterFace upscaled to 640 finds (d0 is 512x512: the old default upscaled it)."""
    frames = read_clip(clip, 24)[::4]
    reference = scrfd.detect(frames)
    found = {}
    for upscale in (False, True):
        det = CenterFaceDetector(settings=DetectorSettings(upscale=upscale))
        hits = total = 0
        for ref, got in zip(reference, det.detect(frames), strict=True):
            for box in ref.boxes:
                total += 1
                hits += int(len(got) > 0 and max(_iou(box, b) for b in got.boxes) > 0.4)
        found[upscale] = hits / total
    assert total >= 6
    assert found[False] >= found[True] and found[False] >= 0.9, found


def test_the_score_threshold_defaults_to_precision() -> None:
    from reenact.faces.detect import DEFAULT_SCORE_THRESHOLD

    # a run resolves its own default (tests/pipeline/test_pipeline_plan.py); the settings alone: precision
    assert DetectorSettings().threshold == DEFAULT_SCORE_THRESHOLD == 0.5
    assert DetectorSettings(score_threshold=0.35).threshold == 0.35


def test_nms_keeps_the_boxes_torchvision_keeps() -> None:
    from torchvision.ops import nms

    from reenact.faces.detect import _nms

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 50, 300):
        xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (n, 2)).astype(np.float32)], axis=1)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        for iou in (0.3, 0.5):
            expected = nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
            np.testing.assert_array_equal(_nms(boxes, scores, iou), expected)


def test_detecting_loads_neither_torchvision_nor_dynamo(fixtures) -> None:
    """torchvision's import pulls in torch._dynamo (~150 MiB resident): a deidentify run
    that only detects must not pay it."""
    import subprocess
    import sys

    photo = next(p for p in sorted((fixtures / "images").rglob("*.jpg")))
    code = (
        "import sys, numpy as np; from PIL import Image; "
        "from reenact.faces.detect import CenterFaceDetector; "
        f"img = np.asarray(Image.open({str(photo)!r}).convert('RGB'))[None]; "
        "CenterFaceDetector().detect(img); "
        "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_centerface_arena_is_shrunk_after_each_detect_call_unless_kept(centerface, monkeypatch) -> None:
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    kept = make_detector("offline", None, DetectorSettings(memory_arena=True, batch_pixels=64 * 64))
    for det in (centerface, kept):
        assert det._session.get_session_options().enable_cpu_mem_arena is True, "the arena is on (speed)"
    seen: list[str] = []
    for det in (centerface, kept):
        run = det._session.run

        def spy(outputs, feeds, run_options=None, _run=run):  # noqa: ANN001, ANN202
            entry = run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") if run_options else ""
            seen.append(entry)
            return _run(outputs, feeds, run_options=run_options)

        monkeypatch.setattr(det._session, "run", spy)
    monkeypatch.setattr(centerface, "settings", dataclasses.replace(centerface.settings, batch_pixels=64 * 64))
    assert [len(d) for d in centerface.detect(frames)] == [0, 0, 0]
    assert seen == ["", "", "cpu:0"], "shrunk after the call's last frame only"
    seen.clear()
    centerface.detect(frames, release=False)
    assert seen == ["", "", ""], "kept when more calls follow"
    seen.clear()
    kept.detect(frames)
    assert seen == ["", "", ""], "memory_arena=True keeps it for the session"
