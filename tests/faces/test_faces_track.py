"""Tracking on the fixture clips: coverage, identity within tracks, scene cuts, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact.errors import ConfigError, ShapeError
from reenact.faces.detect import FaceDetections
from reenact.faces.identity import cosine_similarity
from reenact.faces.track import FaceTracker, TrackerSettings, frame_histograms, track_video
from reenact.temporal import PointSmoothing

NO_SMOOTHING = PointSmoothing(method="none")

SINGLE_FACE_CLIPS = ["liveportrait_d0.mp4", "liveportrait_d12.mp4", "sadtalker_WDA_KatieHill_000.mp4"]


def _frames_per_track(tracked) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for faces in tracked:
        for tid in faces.track_ids:
            out.setdefault(int(tid), []).append(faces.frame_index)
    return out


def _coverage_single(tracked, count: int) -> tuple[int, float]:
    per_track = _frames_per_track(tracked)
    assert [f.frame_index for f in tracked] == list(range(count))
    longest = max((len(v) for v in per_track.values()), default=0)
    return len(per_track), longest / count


@pytest.mark.parametrize("clip", SINGLE_FACE_CLIPS)
def test_single_face_clip_is_one_track(clip, read_clip, clip_detections):
    frames = read_clip(clip, 40)
    tracked = track_video(frames, detections=clip_detections(clip, 40))
    tracks, coverage = _coverage_single(tracked, 40)
    assert tracks == 1
    assert coverage >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("clip", SINGLE_FACE_CLIPS)
def test_single_face_clip_is_one_track_full_length(clip, read_clip, scrfd):
    frames = read_clip(clip)
    for k in (1, 3):
        tracked = track_video(frames, detector=scrfd, settings=TrackerSettings(detect_every=k))
        tracks, coverage = _coverage_single(tracked, frames.shape[0])
        assert tracks == 1 and coverage >= 0.99, (k, tracks, coverage)


def _identity_within_tracks(frames, tracked, encoder) -> list[tuple[int, int, float, float, float]]:
    index = torch.tensor([f.frame_index for f in tracked for _ in range(len(f))], dtype=torch.long)
    points = torch.from_numpy(np.concatenate([f.points for f in tracked]))
    ids = np.concatenate([f.track_ids for f in tracked])
    emb = encoder.embed(frames, index, points)
    tids = [t for t in np.unique(ids) if (ids == t).sum() >= 5]
    means = torch.nn.functional.normalize(torch.stack([emb[torch.from_numpy(ids == t)].mean(0) for t in tids]), dim=1)
    nearest = cosine_similarity(emb, means).argmax(dim=1).numpy()
    rows = []
    for j, t in enumerate(tids):
        sel = ids == t
        sim = (emb[torch.from_numpy(sel)] @ means[j]).numpy()
        own = float((nearest[sel] == j).mean())
        rows.append((int(t), int(sel.sum()), float(sim.mean()), float(sim.min()), own))
    return rows


@pytest.mark.parametrize("clip,count", [("mobileface_friends1.mp4", 40), ("facenet_pytorch_video.mp4", 20)])
def test_identity_stays_within_each_track(clip, count, read_clip, clip_detections, mobileface):
    frames = read_clip(clip, count)
    tracked = track_video(frames, detections=clip_detections(clip, count), encoder=mobileface)
    rows = _identity_within_tracks(frames, tracked, mobileface)
    assert len(rows) >= 4  # several people followed
    for tid, n, mean, low, own in rows:
        print(f"{clip} track {tid}: {n} faces, similarity to track mean {mean:.3f} (min {low:.3f}), "
              f"nearest to own track {own:.0%}")
    assert min(r[2] for r in rows) >= 0.7  # every track is one person on average
    faces = sum(r[1] for r in rows)
    assert sum(r[1] * r[4] for r in rows) / faces >= 0.95  # no swaps: faces are nearest their own track


def test_no_track_continues_across_scene_cuts(read_clip, scrfd):
    frames = read_clip("face_recognition_short_hamilton_clip.mp4", 90)
    tracker = FaceTracker(TrackerSettings(detect_every=3), detector=scrfd, fps=29.97)
    tracked = []
    for start in range(0, 90, 16):
        tracked += tracker.push(frames[start : start + 16])
    tracked += tracker.flush()
    assert tracker.scene_cuts == [20, 82]  # the two cuts in these frames, checked by eye
    assert tracker.detector_calls <= 90 // 3 + 6
    per_track = _frames_per_track(tracked)
    assert len(per_track) >= 3
    for frames_of_track in per_track.values():
        for cut in tracker.scene_cuts:
            assert max(frames_of_track) < cut or min(frames_of_track) >= cut


def test_scene_cut_every_frame_detection(read_clip, clip_detections):
    frames = read_clip("face_recognition_short_hamilton_clip.mp4", 30)
    tracked = track_video(frames, detections=clip_detections("face_recognition_short_hamilton_clip.mp4", 30), fps=29.97)
    per_track = _frames_per_track(tracked)
    before = [t for t, f in per_track.items() if min(f) < 20]
    after = [t for t, f in per_track.items() if max(f) >= 20]
    assert before and after and not set(before) & set(after)


def test_detect_every_3_covers_what_every_frame_detection_finds(read_clip, clip_detections, scrfd):
    clip = "liveportrait_d12.mp4"
    frames = read_clip(clip, 40)
    every = clip_detections(clip, 40)
    tracker = FaceTracker(TrackerSettings(detect_every=3), detector=scrfd)
    tracked = tracker.push(frames) + tracker.flush()
    assert tracker.detector_calls <= 15
    found = sum(len(d) for d in every)
    covered = 0
    for dets, faces in zip(every, tracked, strict=True):
        for box in dets.boxes:
            if len(faces) and _best_iou(box, faces.boxes) >= 0.5:
                covered += 1
    assert covered / found >= 0.98
    assert any(f.interpolated.any() for f in tracked)


def _best_iou(box: np.ndarray, boxes: np.ndarray) -> float:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    union = (box[2:] - box[:2]).prod() + (boxes[:, 2:] - boxes[:, :2]).prod(axis=1) - inter
    return float((inter / union).max())


def test_short_gaps_are_filled_long_gaps_split(read_clip, clip_detections):
    clip = "liveportrait_d0.mp4"
    frames = read_clip(clip, 40)
    dets = list(clip_detections(clip, 40))
    holed = [FaceDetections.empty() if 10 <= i <= 12 else d for i, d in enumerate(dets)]
    settings = TrackerSettings()
    tracked = track_video(frames, detections=holed, settings=settings, points=NO_SMOOTHING)
    assert len(_frames_per_track(tracked)) == 1
    for i in (10, 11, 12):
        assert tracked[i].interpolated.tolist() == [True]
        assert np.abs(tracked[i].points[0] - dets[i].points[0]).mean() < 4.0  # close to the real face
    long_hole = [FaceDetections.empty() if 10 <= i <= 19 else d for i, d in enumerate(dets)]
    tracked = track_video(frames, detections=long_hole, settings=settings, points=NO_SMOOTHING)
    assert len(_frames_per_track(tracked)) == 2
    assert all(len(tracked[i]) == 0 for i in range(10, 20))


def test_streaming_has_bounded_delay_and_matches_one_shot(read_clip, clip_detections):
    clip = "liveportrait_d0.mp4"
    frames = read_clip(clip, 40)
    dets = clip_detections(clip, 40)
    settings = TrackerSettings(max_gap=4)
    tracker = FaceTracker(settings)
    streamed = []
    for start in range(0, 40, 7):
        streamed += tracker.push(frames[start : start + 7], dets[start : start + 7])
        seen = min(start + 7, 40)
        assert len(streamed) == max(0, seen - tracker.delay)
    streamed += tracker.flush()
    one_shot = track_video(frames, detections=dets, settings=settings, chunk_size=40)
    assert len(streamed) == len(one_shot) == 40
    for a, b in zip(streamed, one_shot, strict=True):
        assert np.allclose(a.points, b.points) and (a.track_ids == b.track_ids).all()


def test_smoothing_reduces_jitter_without_drifting(read_clip, clip_detections):
    clip = "liveportrait_d0.mp4"
    frames = read_clip(clip, 40)
    dets = clip_detections(clip, 40)
    raw = np.stack([f.points[0] for f in track_video(frames, detections=dets, points=NO_SMOOTHING)])
    smooth = np.stack([f.points[0] for f in track_video(frames, detections=dets)])
    jitter_raw = np.abs(np.diff(raw, n=2, axis=0)).mean()
    jitter_smooth = np.abs(np.diff(smooth, n=2, axis=0)).mean()
    print(f"point jitter (mean |2nd difference|): raw {jitter_raw:.2f} px, smoothed {jitter_smooth:.2f} px")
    assert jitter_smooth < 0.7 * jitter_raw
    assert np.abs(smooth - raw).mean() < 2.0


def test_black_frames_give_empty_tracks(scrfd):
    frames = torch.zeros(4, 120, 160, 3, dtype=torch.uint8)
    tracked = track_video(frames, detector=scrfd)
    assert [len(f) for f in tracked] == [0, 0, 0, 0]


def test_bad_settings_and_inputs():
    with pytest.raises(ConfigError, match="min_hits"):
        TrackerSettings(min_hits=5, max_gap=2)
    with pytest.raises(ConfigError):
        TrackerSettings(detect_every=0)
    with pytest.raises(ConfigError):
        FaceTracker(TrackerSettings()).push(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    tracker = FaceTracker(TrackerSettings())
    with pytest.raises(ShapeError):
        tracker.push(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), [FaceDetections.empty()])
    with pytest.raises(ShapeError):
        tracker.push(torch.zeros(2, 8, 8, 3))


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 3])
def test_hamilton_full_length_no_track_across_cuts(every, read_clip, scrfd, mobileface):
    frames = read_clip("face_recognition_short_hamilton_clip.mp4")
    tracker = FaceTracker(TrackerSettings(detect_every=every), detector=scrfd, fps=29.97)
    tracked = []
    for start in range(0, frames.shape[0], 32):
        tracked += tracker.push(frames[start : start + 32])
    tracked += tracker.flush()
    assert tracker.scene_cuts == [20, 82, 211]
    for frames_of_track in _frames_per_track(tracked).values():
        for cut in tracker.scene_cuts:
            assert max(frames_of_track) < cut or min(frames_of_track) >= cut
    rows = _identity_within_tracks(frames, tracked, mobileface)
    for tid, n, mean, low, own in rows:
        print(f"hamilton k={every} track {tid}: {n} faces, similarity to mean {mean:.3f} (min {low:.3f}), own {own:.0%}")
    # each track is one person and faces sit nearest their own track; the same bars as the
    # full-length crowd clip (not measured on this clip at k=3 in this change: see the report)
    faces = sum(r[1] for r in rows)
    assert sum(r[1] * r[2] for r in rows) / faces >= 0.75
    assert min(r[2] for r in rows) >= 0.6
    assert sum(r[1] * r[4] for r in rows) / faces >= 0.9


def _dets(boxes: list[list[float]]) -> FaceDetections:
    b = np.asarray(boxes, dtype=np.float32)
    pts = np.stack([b[:, :2] + (b[:, 2:] - b[:, :2]) * np.float32(f) for f in (0.3, 0.5, 0.7, 0.4, 0.6)], axis=1)
    return FaceDetections(b, pts.astype(np.float32), np.full(len(b), 0.9, np.float32))


@pytest.mark.parametrize("weight,expect_swap", [(0.0, True), (0.5, False)])
def test_appearance_keeps_identities_when_boxes_overlap(weight, expect_swap):
    """Two overlapping faces trade places: IoU alone swaps them, identity keeps them apart."""
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    frames = torch.zeros(2, 200, 200, 3, dtype=torch.uint8)
    dets = [_dets([[0, 0, 100, 100], [20, 0, 120, 100]]), _dets([[18, 0, 118, 100], [2, 0, 102, 100]])]
    embs = [torch.cat([a, b]), torch.cat([a, b])]  # frame 1: the face at x=18 is person a
    tracker = FaceTracker(TrackerSettings(appearance_weight=weight, max_gap=1, min_hits=1))
    out = tracker.push(frames, dets, embs) + tracker.flush()
    first_a = int(out[0].track_ids[0])
    a_in_second = int(out[1].track_ids[np.argmin(np.abs(out[1].boxes[:, 0] - 18))])
    assert (a_in_second != first_a) == expect_swap


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["mobileface_friends1.mp4", "facenet_pytorch_video.mp4"])
def test_identity_within_tracks_full_length(clip, read_clip, scrfd, mobileface):
    frames = read_clip(clip)
    tracked = track_video(frames, detector=scrfd, encoder=mobileface)
    rows = _identity_within_tracks(frames, tracked, mobileface)
    for tid, n, mean, low, own in rows:
        print(f"{clip} (full) track {tid}: {n} faces, similarity to mean {mean:.3f} (min {low:.3f}), own {own:.0%}")
    faces = sum(r[1] for r in rows)
    overall = sum(r[1] * r[2] for r in rows) / faces
    print(f"{clip} (full): {len(rows)} tracks, {faces} faces, mean similarity to own track {overall:.3f}")
    # the crowd clip has people turning to profile (checked by eye: same person, cosine
    # down to ~0.25), so per-track means are lower there than on the first 20 frames
    assert overall >= 0.75
    assert min(r[2] for r in rows) >= 0.6
    assert sum(r[1] * r[4] for r in rows) / faces >= 0.9


def test_a_face_detected_once_is_released_unconfirmed_never_dropped() -> None:
    frames = torch.full((7, 64, 64, 3), 90, dtype=torch.uint8)
    box = [[10.0, 10.0, 40.0, 40.0]]
    dets = [FaceDetections.empty()] * 3 + [_dets(box)] + [FaceDetections.empty()] * 3
    out = track_video(frames, detections=dets, settings=TrackerSettings(min_hits=2))
    assert [len(f) for f in out] == [0, 0, 0, 1, 0, 0, 0]
    assert out[3].confirmed is not None and not bool(out[3].confirmed[0])
    # seen twice: confirmed, and the frames between the two detections are filled
    dets = [_dets(box), FaceDetections.empty(), FaceDetections.empty(), _dets(box)] + [FaceDetections.empty()] * 3
    out = track_video(frames, detections=dets, settings=TrackerSettings(min_hits=2))
    assert [len(f) for f in out[:4]] == [1, 1, 1, 1] and all(bool(f.confirmed[0]) for f in out[:4])
    assert [bool(f.interpolated[0]) for f in out[:4]] == [False, True, True, False]


@pytest.mark.parametrize("shape", [(3, 64, 100, 3), (2, 90, 481, 3), (1, 1080, 1920, 3)])
def test_frame_histograms_count_every_sampled_pixel_in_its_colour_bin(shape) -> None:
    """The scene-cut histograms: each sampled pixel (every ``W // 160``-th row and column) in
    the bin of the top three bits of its R, G, B; rows sum to one; float32 bit for bit what
    counting them one by one gives."""
    frames = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    hist = frame_histograms(frames)
    step = max(1, shape[2] // 160)
    for t in range(shape[0]):
        small = frames[t, ::step, ::step].numpy().astype(np.int64) // 32
        bins = (small[..., 0] * 64 + small[..., 1] * 8 + small[..., 2]).ravel()
        expect = np.bincount(bins, minlength=512).astype(np.float32) / np.float32(bins.size)
        assert hist.dtype == torch.float32 and hist.shape == (shape[0], 512)
        assert np.array_equal(hist[t].numpy(), expect)
    assert torch.allclose(hist.sum(dim=1), torch.ones(shape[0]))
    flat = torch.full((1, 40, 40, 3), 200, dtype=torch.uint8)  # one colour: all in bin 6*64+6*8+6
    assert frame_histograms(flat)[0, 438] == 1.0
    # numpy frames (the cadence before torch loads, reenact.faces.early): the same float32 values
    as_numpy = frame_histograms(frames.numpy())
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert np.array_equal(as_numpy, hist.numpy())


def test_shot_cuts_of_numpy_and_torch_histograms_agree() -> None:
    """A cut (two flat colours) and no cut (noise on one colour) found the same way either kind."""
    from reenact.faces.track import shot_cuts

    frames = np.full((4, 48, 64, 3), 40, np.uint8)
    frames[2:] = 220  # frame 2 starts a shot
    frames[1, :4, :4] = 255  # a little change that is no cut
    hist = frame_histograms(frames)
    before = frame_histograms(frames[:1])[0]
    assert shot_cuts(hist, None, 0.12).tolist() == [False, False, True, False]
    assert shot_cuts(hist, before, 0.12).tolist() == shot_cuts(torch.from_numpy(hist), torch.from_numpy(before),
                                                                  0.12).tolist()
