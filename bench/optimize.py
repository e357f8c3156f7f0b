"""Benchmark of the ``optimize`` mapping backend: warm start over time against from scratch.

On consecutive frames of a fixture clip (one face, aligned with reenact.faces), the
tiny generator and the fixture identity (MobileFace) and landmark (PFLD) models, the
same frames are mapped twice in this one run:

* warm: the first frame from the best random start, each later frame from the previous
  frame's latent (the backend's normal mode, early stop on);
* scratch: every frame from the best random start (``warm_start=False``), early stop on.

Both runs get the SAME step budget per frame (``--budget``: ``steps_first == steps_warm``), and
early stopping is on with the backend's defaults (``early_stop_patience``, ``early_stop_rel_tol``
of :class:`OptimizeSettings`), so the step ratio is set by when each run stops improving, not by
the budgets (the backend's default budgets, 100 first / 20 warm, would make it ~5x by
themselves). Frames where a run used its whole budget (no early stop) are counted and printed.

Over the frames after the first (the first is a cold start in both), the goal compares
the optimisation steps each run takes until its early stop, and checks that the warm
run's mean final task loss (all terms but the temporal one) is the same as the scratch
run's (within ``--tol``) or lower. Per frame, the steps each run needs to reach the
scratch run's final loss are printed too. Steps, not seconds, are the measure (a step
costs the same in both runs); wall times are printed as well.

    python bench/optimize.py [--frames 8] [--stride 2] [--resolution 64] [--budget 100] [--threads 1]

Needs the shared fixtures (REENACT_FIXTURES or ../shared/fixtures).
Goals (DESIGN.md format, at the end):
    warm start takes >= 3x fewer steps than from scratch ...
    ... and ends at the same final loss (mean warm / scratch <= 1 + tol).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from reenact.faces.align import align_faces, arcface_template, ffhq_template
from reenact.faces.detect import largest_face, make_detector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reenact.io.images import read_image
from reenact.io.reader import VideoReader
from reenact.mapping.optimize import OptimizeSettings, OptimizingMapper
from reenact.models.onnx_modules import OnnxIdentity, OnnxLandmarks
from reenact.models.stylegan2 import tiny_generator
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.models import MOBILEFACE, PFLD  # noqa: E402


def steps_to(history: list[float], level: float, tol: float) -> int | None:
    """First step whose loss is within ``tol`` (relative) of ``level``; None if never."""
    for k, value in enumerate(history):
        if value <= level * (1 + tol):
            return k
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--stride", type=int, default=2, help="use every n-th frame of the clip")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--budget", type=int, default=100,
                    help="step budget of every frame in both runs (steps_first = steps_warm)")
    ap.add_argument("--tol", type=float, default=0.01, help="relative tolerance on 'the same loss'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip", default="videos/liveportrait_d0.mp4")
    ap.add_argument("--target", default="images/deepface/img1.jpg")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fx = fixtures_dir()
    if fx is None:
        print("shared fixtures not found: set REENACT_FIXTURES", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    needed = args.frames * args.stride
    with VideoReader(fx / args.clip, chunk_size=needed, backend="av") as reader:
        frames = next(iter(reader)).frames[::args.stride][: args.frames]
    detector = make_detector("offline")
    points = []
    for dets in detector.detect(frames):
        best = largest_face(dets)
        if best < 0:
            print("a benchmark frame has no face", file=sys.stderr)
            return 2
        points.append(torch.from_numpy(dets.points[best]))
    n = frames.shape[0]
    R = args.resolution
    crops, _ = align_faces(frames, torch.arange(n), torch.stack(points), ffhq_template(R), R)
    identity = OnnxIdentity(MOBILEFACE.spec(fx))
    landmarks = OnnxLandmarks(PFLD.spec(fx))
    photo = read_image(fx / args.target)
    dets = detector.detect(photo[None])[0]
    best = largest_face(dets)
    tcrop, _ = align_faces(photo[None], torch.tensor([0]), torch.from_numpy(dets.points[best : best + 1]),
                           arcface_template(112), 112)
    with torch.no_grad():
        target = identity(tcrop).expand(n, -1).contiguous()
    settings = OptimizeSettings(steps_first=args.budget, steps_warm=args.budget)
    assert settings.early_stop_patience > 0  # early stopping on (backend defaults)
    G = tiny_generator(seed=0, resolution=R)
    track = torch.zeros(n, dtype=torch.long)
    print(f"{n} frames of {args.clip} (every {args.stride}), tiny generator {R} px, "
          f"{args.threads} thread(s); budget {args.budget} steps per frame in both runs, early stop "
          f"after {settings.early_stop_patience} steps without a {settings.early_stop_rel_tol:g} relative "
          f"gain; setup {time.perf_counter() - t0:.1f} s")

    runs = {}
    for name, warm in (("warm", True), ("scratch", False)):
        mapper = OptimizingMapper(G, identity, landmarks, settings)
        t = time.perf_counter()
        _, stats = mapper.map(crops, target, track, record_history=True, warm_start=warm)
        runs[name] = (stats, time.perf_counter() - t)
    warm_stats, warm_s = runs["warm"]
    scratch_stats, scratch_s = runs["scratch"]
    assert warm_stats.task_history is not None and scratch_stats.task_history is not None

    print(f"{'frame':>5} {'scratch loss':>12} {'scratch steps':>13} {'warm steps':>10} {'warm loss':>9}")
    total_scratch = total_warm = 0
    reached = 0
    for f in range(1, n):
        level = float(scratch_stats.final["task"][f])
        s = steps_to(scratch_stats.task_history[f], level, args.tol)
        w = steps_to(warm_stats.task_history[f], level, args.tol)
        assert s is not None  # the scratch run's final loss is its best
        total_scratch += s
        if w is None:
            total_warm += int(warm_stats.steps[f])
        else:
            total_warm += w
            reached += 1
        print(f"{f:>5} {level:>12.4f} {s:>13} {('-' if w is None else str(w)):>10} "
              f"{float(warm_stats.final['task'][f]):>9.4f}")
    later = n - 1
    reach_ratio = total_scratch / max(total_warm, 1)
    scratch_taken = int(scratch_stats.steps[1:].sum())
    warm_taken = int(warm_stats.steps[1:].sum())
    ratio = scratch_taken / max(warm_taken, 1)
    scratch_loss = float(scratch_stats.final["task"][1:].mean())
    warm_loss = float(warm_stats.final["task"][1:].mean())
    loss_ratio = warm_loss / scratch_loss
    print(f"first frame (cold in both): {int(warm_stats.steps[0])} steps, task loss "
          f"{float(warm_stats.final['task'][0]):.4f}")
    print(f"later {later} frames, steps taken until early stop: scratch {scratch_taken}, warm {warm_taken} "
          f"({ratio:.1f}x); mean final task loss: scratch {scratch_loss:.4f}, warm {warm_loss:.4f}")
    print(f"steps to each frame's scratch loss (+{args.tol:.0%}): scratch {total_scratch}, warm {total_warm} "
          f"({reach_ratio:.1f}x; warm reached it on {reached}/{later} frames, else counted with all its steps)")
    for name, st in (("scratch", scratch_stats), ("warm", warm_stats)):
        capped = int((st.steps[1:] >= args.budget).sum())
        print(f"{name}: later frames that used the whole budget (no early stop): {capped}/{later}")
    print(f"wall time of all frames: scratch {scratch_s:.1f} s, warm {warm_s:.1f} s ({scratch_s / warm_s:.1f}x)")
    for term in ("identity", "landmarks"):
        print(f"mean final {term} (later frames): warm {float(warm_stats.final[term][1:].mean()):.4f}, "
              f"scratch {float(scratch_stats.final[term][1:].mean()):.4f}")
    limit = 1 + args.tol
    print(goal("warm_start_step_ratio", ratio, ">=", 3, ".1f"))
    print(goal("warm_start_loss_ratio", loss_ratio, "<=", limit, target_fmt="g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
