"""Tracks per person in a crowd: does one person keep one track, and does every track end at a cut?

For each multi-face fixture clip (and ``cut``, a clip built here from two fixture clips with
one scene cut between them), in one run:

* **the product's path**: detection and tracking as ``deidentify --method blur`` runs them
  (the plan's detector threshold and cadence, :class:`DetectionCadence` on the reader's chunks,
  the tracker from :func:`reenact.pipeline.stream.build_tracker` with the pack's identity
  model), timing the detector and the tracker (its own identity embeddings included) apart;
  the faces the tracker embeds (identity model calls) are counted, as is their time;
* **the persons, counted independently**: the fixture SCRFD-500M's faces (score >= 0.5) on
  every frame, chained offline within each shot (the product's cuts; the known cut for
  ``cut``) by position and the fixture MobileFace V2 embeddings: a face joins the chain last
  seen within ``REF_GAP`` frames whose predicted centre is nearest (under ``REF_MOVE`` face
  heights per frame of gap) and whose embedding is not clearly someone else's
  (cosine >= ``REF_MIN_COS``). A chain of at least ``REF_MIN_FACES`` faces is a person.

Reported per clip: frames, SCRFD faces per frame, persons, the product's tracks (all, and
those with ``min_hits`` detections), and **tracks per person**: for each person, how many
product tracks cover its faces (a product box overlapping the SCRFD box by IoU >= 0.3),
averaged over the persons. For ``cut``: the tracks alive on the frame before the cut that
end there (all should) and the tracks seen on both sides (none should).

Goal lines: ``tracks_per_person_<clip>`` <= 1.2; ``tracks_across_cut`` <= 0;
``tracks_ended_at_cut`` >= 1.0 (share); ``cut_found`` >= 1.

Run:  python bench/tracks.py [--clips crowd friends hamilton cut] [--frames N]
Needs the fixtures (REENACT_FIXTURES or ../shared/fixtures). Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reenact.config import replace  # noqa: E402
from reenact.faces.boxes import box_iou, match_boxes  # noqa: E402
from reenact.faces.cadence import DetectionCadence  # noqa: E402
from reenact.faces.detect import FaceDetections  # noqa: E402
from reenact.faces.identity import OnnxArcFaceEncoder  # noqa: E402
from reenact.faces.track import TrackedFaces, TrackerSettings, frame_histograms, shot_cuts  # noqa: E402
from reenact.pipeline import PipelineConfig, plan_run  # noqa: E402
from reenact.pipeline.run import cached_pack  # noqa: E402
from reenact.pipeline.stream import ThresholdedDetector, build_tracker  # noqa: E402
from testing.fixtures import CLIPS, fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.media import read_frames  # noqa: E402
from testing.models import independent_judges  # noqa: E402

MULTI_FACE = ("crowd", "friends", "hamilton")
"""The fixture clips with several faces per frame (``shared/fixtures/README.md``)."""
CUT_FRAMES = 60
"""``cut``: the first CUT_FRAMES frames of friends, then CUT_FRAMES of crowd scaled to 720p."""
TARGET_TRACKS_PER_PERSON = 1.2
COVER_IOU = 0.3
REF_GAP = 12
REF_MOVE = 0.35
REF_MIN_COS = 0.2
REF_MIN_FACES = 3
FPS = 25.0


def cut_clip_frames(fx: Path) -> tuple[torch.Tensor, int]:
    """friends' first frames, then crowd's scaled to friends' size: one scene cut at the join."""
    first = torch.from_numpy(read_frames(fx / "videos" / CLIPS["friends"], CUT_FRAMES))
    second = torch.from_numpy(read_frames(fx / "videos" / CLIPS["crowd"], CUT_FRAMES))
    h, w = first.shape[1:3]
    second = torch.nn.functional.interpolate(second.permute(0, 3, 1, 2).float(), size=(h, w), mode="bilinear",
                                             antialias=True, align_corners=False)
    second = second.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return torch.cat([first, second]), CUT_FRAMES


class CountingEncoder:
    """The pack's identity encoder, counting the faces the tracker embeds and the seconds it takes."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.faces, self.seconds = 0, 0.0

    def embed(self, frames: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.inner.embed(frames, index, points)
        self.seconds += time.perf_counter() - start
        self.faces += len(index)
        return out


@dataclass
class ProductRun:
    tracked: list[TrackedFaces]
    cuts: list[int]
    detect_s: float
    track_s: float
    min_hits: int
    hits: dict[int, int] = field(default_factory=dict)
    embedded: int = 0
    embed_s: float = 0.0


def run_product(frames: torch.Tensor) -> ProductRun:
    """Detection and tracking as ``deidentify --method blur`` runs them (FaceReplacer's steps 3-4)."""
    config = replace(PipelineConfig(device="cpu"), {"deidentify.method": "blur"})
    plan = plan_run("deidentify", config)
    pack = cached_pack(plan)
    detection = plan.detection
    assert detection.full_every is not None
    detector = ThresholdedDetector(pack.detector, detection.threshold, plan.drop_under)
    encoder = CountingEncoder(pack.identity)
    tracker = build_tracker(plan, dataclasses.replace(pack, identity=encoder), FPS, detector)
    cadence = DetectionCadence(detector, detection.full_every, detection.light_scale,
                               config.tracker.scene_cut_threshold, detection.light_min_face)
    chunk = config.read.frames_per_chunk(int(frames.shape[2]), int(frames.shape[1]))
    detector.detect(frames[:1])  # warm the session
    detect_s = track_s = 0.0
    tracked: list[TrackedFaces] = []
    for k in range(0, len(frames), chunk):
        part = frames[k : k + chunk]
        start = time.perf_counter()
        raw = cadence.detect(part) if tracker.detector is None else None
        detect_s += time.perf_counter() - start
        start = time.perf_counter()
        tracked += tracker.push(part, raw)
        track_s += time.perf_counter() - start
    start = time.perf_counter()
    tracked += tracker.flush()
    track_s += time.perf_counter() - start
    hits: dict[int, int] = {}
    for faces in tracked:
        for tid, interp in zip(faces.track_ids.tolist(), faces.interpolated.tolist(), strict=True):
            hits[tid] = hits.get(tid, 0) + (0 if interp else 1)
    return ProductRun(tracked, list(tracker.scene_cuts), detect_s, track_s, config.tracker.min_hits, hits,
                      encoder.faces, encoder.seconds)


@dataclass
class Chain:
    faces: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> box
    last: int = -1
    code: torch.Tensor | None = None

    def predict(self, t: int) -> tuple[np.ndarray, float]:
        """Predicted centre at frame t and the face height."""
        frames = sorted(self.faces)
        box = self.faces[frames[-1]]
        centre = (box[:2] + box[2:]) / 2
        if len(frames) >= 2:
            before = self.faces[frames[-2]]
            velocity = (centre - (before[:2] + before[2:]) / 2) / (frames[-1] - frames[-2])
            centre = centre + velocity * (t - frames[-1])
        return centre, float(box[3] - box[1])


def reference_persons(frames: torch.Tensor, shots: list[int], scrfd: object,
                      mobileface: OnnxArcFaceEncoder) -> tuple[list[Chain], list[int]]:
    """Persons (chains of SCRFD faces, see the module docstring) and SCRFD faces per frame."""
    chains: list[Chain] = []
    open_chains: list[Chain] = []
    per_frame = []
    for t in range(len(frames)):
        if t in shots:
            open_chains = []
        dets: FaceDetections = scrfd.detect(frames[t : t + 1])[0]  # type: ignore[attr-defined]
        per_frame.append(len(dets))
        if not len(dets):
            continue
        codes = mobileface.embed(frames[t : t + 1], torch.zeros(len(dets), dtype=torch.long),
                                 torch.from_numpy(dets.points.astype(np.float32)))
        live = [c for c in open_chains if t - c.last <= REF_GAP]
        score = np.full((len(live), len(dets)), -1e6)
        centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
        for r, chain in enumerate(live):
            centre, height = chain.predict(t)
            dist = np.linalg.norm(centres - centre, axis=1) / max(height, 1.0)
            cos = (codes @ chain.code).numpy() if chain.code is not None else np.ones(len(dets))
            ok = (dist <= REF_MOVE * (t - chain.last)) & (cos >= REF_MIN_COS)
            score[r, ok] = -dist[ok]
        taken: set[int] = set()
        for r, c in match_boxes(score, min_score=-1e5):
            chain = live[r]
            chain.faces[t], chain.last = dets.boxes[c], t
            assert chain.code is not None
            chain.code = torch.nn.functional.normalize(chain.code * 0.8 + codes[c] * 0.2, dim=0)
            taken.add(int(c))
        for c in range(len(dets)):
            if c not in taken:
                chain = Chain({t: dets.boxes[c]}, t, codes[c])
                chains.append(chain)
                open_chains.append(chain)
    return [c for c in chains if len(c.faces) >= REF_MIN_FACES], per_frame


def tracks_per_person(persons: list[Chain], tracked: list[TrackedFaces]) -> tuple[float, int, list[int]]:
    """(mean product tracks covering each person, persons never covered, tracks per person)."""
    counts, uncovered = [], 0
    for person in persons:
        ids: set[int] = set()
        for t, box in person.faces.items():
            faces = tracked[t]
            if not len(faces):
                continue
            iou = box_iou(box[None].astype(np.float32), faces.boxes)[0]
            if iou.max() >= COVER_IOU:
                ids.add(int(faces.track_ids[int(iou.argmax())]))
        if ids:
            counts.append(len(ids))
        else:
            uncovered += 1
    return (float(np.mean(counts)) if counts else float("nan")), uncovered, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", nargs="+", choices=[*MULTI_FACE, "cut"], default=[*MULTI_FACE, "cut"])
    parser.add_argument("--frames", type=int, default=None, help="first N frames of each clip (default: all)")
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("SKIPPED: no fixtures (set REENACT_FIXTURES)")
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    scrfd, mobileface = independent_judges(fx)
    lines = []
    for name in args.clips:
        if name == "cut":
            frames, cut_at = cut_clip_frames(fx)
        else:
            frames, cut_at = torch.from_numpy(read_frames(fx / "videos" / CLIPS[name], args.frames)), -1
        if args.frames is not None:
            frames = frames[: args.frames]
        run = run_product(frames)
        if name == "cut":
            shots = [cut_at]
        else:  # the product's own cuts (the same histogram rule, recomputed here)
            shots = torch.nonzero(shot_cuts(frame_histograms(frames), None, TrackerSettings().scene_cut_threshold)).flatten().tolist()
        persons, per_frame = reference_persons(frames, shots, scrfd, mobileface)
        mean, uncovered, counts = tracks_per_person(persons, run.tracked)
        ids = {int(i) for f in run.tracked for i in f.track_ids}
        confirmed = {t for t, h in run.hits.items() if h >= run.min_hits}
        faces_out = [len(f) for f in run.tracked]
        face_frames = sum(faces_out)
        print(f"{name} {tuple(frames.shape[1:3])}, {len(frames)} frames, cuts {run.cuts} (reference shots {shots}): "
              f"SCRFD faces/frame {np.mean(per_frame):.1f} (min {min(per_frame)}, max {max(per_frame)}); "
              f"persons {len(persons)} ({uncovered} never covered); product faces/frame {np.mean(faces_out):.1f}, "
              f"tracks {len(ids)} ({len(confirmed)} with >= {run.min_hits} detections), "
              f"per person {sorted(counts, reverse=True)[:12]}...; "
              f"detect {run.detect_s:.1f} s, track {run.track_s:.2f} s "
              f"({100 * run.track_s / max(face_frames, 1):.3f} s per 100 face-frames), of which embedding "
              f"{run.embedded} faces in {run.embed_s:.2f} s")
        lines.append(goal(f"tracks_per_person_{name}", mean, "<=", TARGET_TRACKS_PER_PERSON))
        if name == "cut":
            before = {int(i) for f in run.tracked[:cut_at] for i in f.track_ids}
            after = {int(i) for f in run.tracked[cut_at:] for i in f.track_ids}
            alive = {int(i) for i in run.tracked[cut_at - 1].track_ids}
            ended = len(alive - after) / len(alive) if alive else float("nan")
            lines.append(goal("cut_found", float(cut_at in run.cuts), ">=", 1.0, ".0f"))
            lines.append(goal("tracks_across_cut", float(len(before & after)), "<=", 0.0, ".0f"))
            lines.append(goal("tracks_ended_at_cut", ended, ">=", 1.0))
        print(lines[-1] if name != "cut" else "\n".join(lines[-4:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
