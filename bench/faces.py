"""Face stage benchmarks, measured in one run on the shared fixture clips.

1. ``detect_every=3`` with tracking against detection on every frame (plus tracking):
   speed-up, and coverage = share of the faces found by every-frame detection that the
   ``detect_every=3`` tracks also have (IoU >= 0.5).
2. Batched alignment (one ``warp_to_crop`` call) against a per-face loop.
3. Milliseconds per 720p frame for each detector backend.
4. dlib's face descriptor: ``dlib-bin`` against our torch port of its network
   (:mod:`reenact.faces.dlib_net`), seconds per 150x150 chip at batch 1 and 16, and the
   largest descriptor difference between them.

Run:  .venv/bin/python bench/faces.py [--frames 90] [--backend insightface|offline] [--threads 1]
      [--only detect|align|detectors|dlib]
Needs the fixtures (REENACT_FIXTURES or ../shared/fixtures).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reenact.faces.align import ffhq_template, similarity_from_points, warp_to_crop
from reenact.faces.detect import DetectorSettings, FaceDetector, make_detector
from reenact.faces.identity import DlibFaceEncoder
from reenact.faces.track import FaceTracker, TrackerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.models import SCRFD  # noqa: E402


def read_clip(path: Path, count: int) -> torch.Tensor:
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= count:
                break
    return torch.from_numpy(np.stack(frames))


def run_tracker(frames: torch.Tensor, detector: FaceDetector, every: int) -> tuple[float, list, FaceTracker]:
    tracker = FaceTracker(TrackerSettings(detect_every=every), detector=detector)
    start = time.perf_counter()
    out = []
    for i in range(0, frames.shape[0], 16):
        out += tracker.push(frames[i : i + 16])
    out += tracker.flush()
    return time.perf_counter() - start, out, tracker


def best_iou(box: np.ndarray, boxes: np.ndarray) -> float:
    if boxes.shape[0] == 0:
        return 0.0
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    union = (box[2:] - box[:2]).prod() + (boxes[:, 2:] - boxes[:, :2]).prod(axis=1) - inter
    return float((inter / union).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=90, help="frames per clip (default 90)")
    parser.add_argument("--backend", default="insightface", choices=["insightface", "offline"],
                        help="detector for the detect_every comparison")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats, best kept (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--only", choices=["detect", "align", "detectors", "dlib"], default=None,
                        help="run one section only (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = fixtures_dir()
    if root is None:
        print("fixtures not found: set REENACT_FIXTURES", file=sys.stderr)
        return 2
    scrfd_path = SCRFD.file(root)
    detectors = {
        "insightface": make_detector("insightface", scrfd_path),
        "offline": make_detector("offline", settings=DetectorSettings(working_size=640)),
    }
    goals: list[str] = []
    sections = {
        "detect": lambda: bench_detect_every(args, root, detectors, goals),
        "align": lambda: bench_align(root, detectors, goals),
        "detectors": lambda: bench_detectors(root, detectors),
        "dlib": lambda: bench_dlib_descriptor(root, detectors, goals),
    }
    for name, run in sections.items():
        if args.only in (None, name):
            run()
    print("\n".join(goals))
    return 0


def bench_detect_every(args: argparse.Namespace, root: Path, detectors: dict, goals: list[str]) -> None:
    """1. detect_every=3 + tracking vs every frame."""
    detector = detectors[args.backend]
    total_every, total_k3, found, covered = 0.0, 0.0, 0, 0
    for clip in ("mobileface_friends1.mp4", "liveportrait_d12.mp4"):
        frames = read_clip(root / "videos" / clip, args.frames)
        detector.detect(frames[:1])  # warm-up
        # interleaved repeats, best of each: the machine may be shared
        t_every, t_k3 = float("inf"), float("inf")
        for _ in range(args.repeats):
            t, out_every, tr_every = run_tracker(frames, detector, 1)
            t_every = min(t_every, t)
            t, out_k3, tr_k3 = run_tracker(frames, detector, 3)
            t_k3 = min(t_k3, t)
        # faces that every-frame detection finds (the raw detections of the every-frame run)
        raw = detector.detect(frames)
        f_clip = sum(len(d) for d in raw)
        c_clip = sum(
            1 for d, faces in zip(raw, out_k3, strict=True) for box in d.boxes if best_iou(box, faces.boxes) >= 0.5
        )
        print(f"{clip}: {frames.shape[0]} frames {tuple(frames.shape[1:3])}, {args.backend}: "
              f"every frame {t_every:.2f}s ({tr_every.detector_calls} detector calls), "
              f"detect_every=3 {t_k3:.2f}s ({tr_k3.detector_calls} calls), speed-up {t_every / t_k3:.2f}x, "
              f"coverage {c_clip}/{f_clip} = {c_clip / max(f_clip, 1):.3f}")
        total_every += t_every
        total_k3 += t_k3
        found += f_clip
        covered += c_clip
    goals.append(goal("detect_every3_speedup", total_every / total_k3, ">=", 2.0))
    goals.append(goal("detect_every3_coverage", covered / max(found, 1), ">=", 0.98))


def bench_align(root: Path, detectors: dict, goals: list[str]) -> None:
    """2. batched alignment vs a per-face loop (64 faces from 720p frames, 256 px FFHQ crops)."""
    frames = read_clip(root / "videos" / "mobileface_friends1.mp4", 16)
    dets = detectors["insightface"].detect(frames)
    index = torch.tensor([i for i, d in enumerate(dets) for _ in range(len(d))], dtype=torch.long)
    points = torch.from_numpy(np.concatenate([d.points for d in dets]))
    reps = max(1, 64 // points.shape[0] + 1)
    index, points = index.repeat(reps)[:64], points.repeat(reps, 1, 1)[:64]
    template = ffhq_template(256)
    warp_to_crop(frames, index[:2], similarity_from_points(points[:2], template), 256)  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        batched = warp_to_crop(frames, index, similarity_from_points(points, template), 256)
    t_batched = (time.perf_counter() - start) / 3
    start = time.perf_counter()
    for _ in range(3):
        looped = torch.cat([
            warp_to_crop(frames, index[i : i + 1], similarity_from_points(points[i : i + 1], template), 256)
            for i in range(points.shape[0])
        ])
    t_loop = (time.perf_counter() - start) / 3
    assert torch.allclose(batched, looped, atol=1e-3)
    print(f"alignment of {points.shape[0]} faces (720p -> 256): batched {t_batched * 1e3:.1f} ms, "
          f"per-face loop {t_loop * 1e3:.1f} ms, speed-up {t_loop / t_batched:.2f}x")
    goals.append(goal("align_batched_speedup", t_loop / t_batched, ">=", 2.0))


def bench_detectors(root: Path, detectors: dict) -> None:
    """3. ms per 720p frame for each detector backend."""
    frames = read_clip(root / "videos" / "mobileface_friends1.mp4", 16)
    for name, det in detectors.items():
        det.detect(frames[:1])
        start = time.perf_counter()
        det.detect(frames)
        ms = (time.perf_counter() - start) / frames.shape[0] * 1e3
        print(f"detector {name}: {ms:.1f} ms per 720p frame ({torch.get_num_threads()} torch threads, CPU)")


def bench_dlib_descriptor(root: Path, detectors: dict, goals: list[str]) -> None:
    """4. dlib's face descriptor: dlib-bin against the torch port, seconds per chip."""
    frames = read_clip(root / "videos" / "mobileface_friends1.mp4", 16)
    dets = detectors["insightface"].detect(frames)
    index = torch.tensor([i for i, d in enumerate(dets) for _ in range(len(d))], dtype=torch.long)
    points = torch.from_numpy(np.concatenate([d.points for d in dets])).float()
    reps = 32 // points.shape[0] + 1
    index, points = index.repeat(reps)[:32], points.repeat(reps, 1, 1)[:32]
    impls = {"dlib": DlibFaceEncoder(impl="dlib"), "torch": DlibFaceEncoder(impl="torch", batch_size=16)}
    chips = warp_to_crop(frames, index, similarity_from_points(points, impls["torch"].template()), 150)
    per_chip: dict[tuple[str, int], float] = {}
    for name, encoder in impls.items():
        for batch, count in ((1, 8), (16, 32)):
            encoder.descriptors(chips[:batch])  # warm-up (oneDNN prepares each batch shape once)
            best = float("inf")
            for _ in range(2):  # best of two: the machine may be shared
                start = time.perf_counter()
                for i in range(0, count, batch):
                    encoder.descriptors(chips[i : i + batch])
                best = min(best, time.perf_counter() - start)
            per_chip[name, batch] = best / count
    diff = (impls["torch"].descriptors(chips) - impls["dlib"].descriptors(chips)).abs().max().item()
    for (name, batch), seconds in per_chip.items():
        print(f"dlib descriptor, {name}: {seconds * 1e3:.1f} ms per chip at batch {batch} "
              f"({torch.get_num_threads()} torch threads, CPU)")
    print(f"dlib descriptor: torch vs dlib-bin max abs difference {diff:.2e} over {chips.shape[0]} chips")
    # the pipeline hands dlib-bin a whole list of chips at once: compare with its best
    dlib_best = min(per_chip["dlib", 1], per_chip["dlib", 16])
    goals.append(goal("dlib_torch_speedup", dlib_best / per_chip["torch", 16], ">=", 3.0))


if __name__ == "__main__":
    sys.exit(main())
