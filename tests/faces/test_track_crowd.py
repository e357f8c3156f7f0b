"""Tracks that survive a crowd: one person keeps one track through misses, fast motion and
second finds of the same face; people who cross keep their own tracks; tracks end at cuts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact.faces.boxes import box_iou, match_boxes
from reenact.faces.detect import DetectorSettings, FaceDetections, make_detector
from reenact.faces.track import FaceTracker, TrackedFaces, TrackerSettings, track_video


def _dets(boxes: list[list[float]], scores: list[float] | None = None) -> FaceDetections:
    if not boxes:
        return FaceDetections.empty()
    b = np.asarray(boxes, dtype=np.float32)
    pts = np.stack([b[:, :2] + (b[:, 2:] - b[:, :2]) * np.float32(f) for f in (0.3, 0.5, 0.7, 0.4, 0.6)], axis=1)
    s = np.asarray(scores if scores is not None else [0.9] * len(b), dtype=np.float32)
    return FaceDetections(b, pts.astype(np.float32), s)


def _square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y + side]


def _id_near(faces: TrackedFaces, box: list[float]) -> int:
    """The track id of the released face that overlaps ``box`` most."""
    iou = box_iou(np.asarray([box], np.float32), faces.boxes)[0]
    assert len(iou) and iou.max() > 0.3, f"frame {faces.frame_index}: no face at {box}"
    return int(faces.track_ids[int(iou.argmax())])


def test_a_small_fast_face_keeps_one_track_beside_a_still_one() -> None:
    """A 30 px face moving 10 px a frame both ways overlaps its last box by IoU 0.29 only:
    it is still one track, and its still neighbour two faces away keeps its own."""
    frames = torch.full((20, 400, 400, 3), 80, dtype=torch.uint8)
    moving = [_square(20 + 10 * t, 40 + 10 * t, 30) for t in range(20)]
    still = [300, 60, 330, 90]
    out = track_video(frames, detections=[_dets([m, still]) for m in moving])
    assert {_id_near(out[t], moving[t]) for t in range(20)} == {_id_near(out[0], moving[0])}
    assert {_id_near(out[t], still) for t in range(20)} == {_id_near(out[0], still)}
    assert len({int(i) for f in out for i in f.track_ids}) == 2


def test_a_face_found_twice_is_one_track() -> None:
    """A low threshold finds one small face twice (a weaker box a third of its height off,
    on some frames only): one track, one released face, and its track is the stronger box's."""
    frames = torch.full((16, 300, 300, 3), 80, dtype=torch.uint8)
    face, twin, other = [100, 100, 130, 140], [103, 113, 133, 153], [180, 100, 210, 140]
    dets = [_dets([face, twin, other] if t % 3 else [face, other], [0.5, 0.25, 0.6] if t % 3 else [0.5, 0.6])
            for t in range(16)]
    out = track_video(frames, detections=dets)
    assert [len(f) for f in out] == [2] * 16
    assert len({int(i) for f in out for i in f.track_ids}) == 2
    assert all(box_iou(np.asarray([face], np.float32), f.boxes).max() > 0.9 for f in out)


def test_a_person_missed_for_a_few_frames_keeps_one_track() -> None:
    """Detector drop-outs of up to max_gap frames on a walking face: one track, the gap filled."""
    frames = torch.full((24, 300, 400, 3), 80, dtype=torch.uint8)
    path = [_square(20 + 9 * t, 100, 36) for t in range(24)]
    missing = {5, 6, 7, 8, 14, 15, 16, 17, 18}
    out = track_video(frames, detections=[_dets([] if t in missing else [path[t]]) for t in range(24)])
    assert [len(f) for f in out] == [1] * 24
    assert len({int(f.track_ids[0]) for f in out}) == 1
    assert all(bool(out[t].interpolated[0]) == (t in missing) for t in range(24))


@pytest.mark.parametrize("appearance", [False, True])
def test_people_who_cross_do_not_swap(appearance: bool) -> None:
    """A walks right, B walks left a little lower; while they overlap only A (in front) is
    detected. Both keep their own track on their own side afterwards, by motion alone or
    with appearance."""
    frames = torch.full((30, 300, 400, 3), 80, dtype=torch.uint8)
    side, step = 40.0, 8.0
    a = [_square(60 + step * t, 100, side) for t in range(30)]
    b = [_square(292 - step * t, 108, side) for t in range(30)]
    hidden = {t for t in range(30) if abs(a[t][0] - b[t][0]) < 0.8 * side}
    assert 3 <= len(hidden) <= 5
    dets = [_dets([a[t]] if t in hidden else [a[t], b[t]]) for t in range(30)]
    code_a, code_b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    embs = [torch.stack([code_a] if t in hidden else [code_a, code_b]) for t in range(30)]
    tracker = FaceTracker(TrackerSettings())
    out = tracker.push(frames, dets, embs if appearance else None) + tracker.flush()
    assert {_id_near(out[t], a[t]) for t in range(30)} == {_id_near(out[0], a[0])}
    assert {_id_near(out[t], b[t]) for t in range(30) if t not in hidden} == {_id_near(out[0], b[0])}
    assert len({int(i) for f in out for i in f.track_ids}) == 2


def test_every_track_ends_at_a_scene_cut() -> None:
    """The same boxes on both sides of a cut: new tracks after it, none seen on both sides."""
    frames = torch.full((20, 200, 300, 3), 60, dtype=torch.uint8)
    frames[10:, ..., 0] = 220  # a different shot from frame 10
    boxes = [[40, 40, 80, 90], [150, 50, 190, 100]]
    tracker = FaceTracker(TrackerSettings())
    out = tracker.push(frames[:13], [_dets(boxes)] * 13) + tracker.push(frames[13:], [_dets(boxes)] * 7)
    out += tracker.flush()
    assert tracker.scene_cuts == [10]
    before = {int(i) for f in out[:10] for i in f.track_ids}
    after = {int(i) for f in out[10:] for i in f.track_ids}
    assert len(before) == len(after) == 2 and not before & after


def test_crowd_clip_gives_one_track_per_face(read_clip, scrfd) -> None:
    """The fixture crowd (1080p, small faces) at deidentify's recall-first threshold (0.2),
    where the detector finds many faces twice: each face SCRFD sees is covered by one track
    (no face has two), and no frame releases one face twice."""
    frames = read_clip("facenet_pytorch_video.mp4", 16)
    detector = make_detector("offline", None, DetectorSettings(score_threshold=0.2))
    out = track_video(frames, detections=[detector.detect(frames[t : t + 1])[0] for t in range(16)])
    # each SCRFD face of frame 0, followed frame to frame by overlap -> the tracks covering it
    chains = list(scrfd.detect(frames[:1])[0].boxes)
    covering: dict[int, set[int]] = {k: set() for k in range(len(chains))}
    for t in range(16):
        ref = scrfd.detect(frames[t : t + 1])[0]
        for k, c in match_boxes(box_iou(np.stack(chains), ref.boxes), min_score=0.3):
            chains[k] = ref.boxes[c]
            iou = box_iou(ref.boxes[c : c + 1], out[t].boxes)[0]
            if len(iou) and iou.max() >= 0.3:
                covering[k].add(int(out[t].track_ids[int(iou.argmax())]))
        same = box_iou(out[t].boxes, out[t].boxes) > 0.3
        assert same.sum() == len(out[t]), f"frame {t}: a face released twice"
    covering = {k: ids for k, ids in covering.items() if ids}
    assert len(covering) >= 5
    assert all(len(ids) == 1 for ids in covering.values()), covering


def test_max_shift_out_of_range_names_the_setting() -> None:
    from reenact.errors import ConfigError

    with pytest.raises(ConfigError, match="max_shift"):
        TrackerSettings(max_shift=3.0)
