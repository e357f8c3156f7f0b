"""What the detection cadence finds and costs, against CenterFace's full pass on every frame.

For each fixture clip (its first ``--frames`` frames), in one run:

* the reference: the full pass on every frame (deidentify's threshold, 0.2);
* :class:`reenact.faces.cadence.DetectionCadence` as deidentify runs it (``full_every``,
  ``light_scale``), chunk by chunk as the pipeline feeds it.

Reported per clip: the share of the reference's faces that the cadence reports too (a box
overlapping by IoU >= 0.3; held faces count, they are what the pipeline covers), the share
the light pass finds by itself on its frames, the widths of the faces it still misses, the
frames each pass ran on, and the detector time against the reference's (the light frames'
misses are what the tracker's interpolation and the hold rule are for; ``bench/vs_deface.py``
measures what the whole pipeline covers against an independent detector).

Run:  python bench/light_pass.py [--frames 60] [--clips d0 friends ...] [--full-every 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testing.fixtures import CLIPS, fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.media import read_frames  # noqa: E402

TARGET_RECALL = 0.98
TARGET_TIME = 1.05
"""Never (much) slower than the full pass: clips whose faces are too small for the light pass
(``detector.light_min_face``) get the full pass on every frame; the saving is the ratio."""
FOUND_IOU = 0.3


def found_share(reference: list, got: list, frames: list[int] | None = None) -> tuple[int, int, list[int]]:
    """(found, total, widths of the missed) of the reference faces in ``frames`` (all when None)."""
    from reenact.faces.boxes import box_iou

    hit = total = 0
    missed: list[int] = []
    for t in frames if frames is not None else range(len(reference)):
        ref, out = reference[t], got[t]
        if not len(ref):
            continue
        ok = box_iou(ref.boxes, out.boxes).max(axis=1) >= FOUND_IOU if len(out) else np.zeros(len(ref), bool)
        hit, total = hit + int(ok.sum()), total + len(ref)
        missed += [int(round(w)) for w in (ref.boxes[~ok, 2] - ref.boxes[~ok, 0])]
    return hit, total, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=list(CLIPS))
    parser.add_argument("--full-every", type=int, default=None, help="default: deidentify's")
    parser.add_argument("--light-scale", type=float, default=None, help="default: deidentify's")
    parser.add_argument("--chunk", type=int, default=16, help="frames per detect call, as the reader's chunks")
    args = parser.parse_args()

    import torch

    from reenact.faces.cadence import DetectionCadence
    from reenact.faces.detect import make_detector
    from reenact.faces.track import TrackerSettings
    from reenact.pipeline import PipelineConfig, plan_run

    settings = plan_run("deidentify", PipelineConfig()).detection  # as a deidentify run resolves it
    full_every = args.full_every or settings.full_every or 1
    light_scale = args.light_scale or settings.light_scale
    detector = make_detector("offline", None, settings)
    cut = TrackerSettings().scene_cut_threshold
    print(f"full pass every {full_every} frames, light pass at {light_scale:g} per side, "
          f"threshold {settings.threshold:g}, {args.frames} frames per clip")
    for name in args.clips:
        frames = torch.from_numpy(read_frames(fixtures_dir() / "videos" / CLIPS[name], args.frames))
        detector.detect(frames[:1]), detector.detect(frames[:1], light_scale)  # warm both input sizes
        start = time.perf_counter()
        reference = [detector.detect(frames[t : t + 1])[0] for t in range(len(frames))]
        full_s = time.perf_counter() - start
        cadence = DetectionCadence(detector, full_every, light_scale, cut, settings.light_min_face)
        start = time.perf_counter()
        got = []
        for k in range(0, len(frames), args.chunk):
            got += cadence.detect(frames[k : k + args.chunk])
        cadence_s = time.perf_counter() - start
        light_frames = [t for t, d in enumerate(got) if d.scale < 1.0]
        light_only = [detector.detect(frames[t : t + 1], light_scale)[0] if t in light_frames else None
                      for t in range(len(frames))]
        hit, total, missed = found_share(reference, got)
        lhit, ltotal, lmissed = found_share(reference, light_only, light_frames)
        share = hit / total if total else float("nan")
        ratio = cadence_s / full_s
        print(f"{name} {tuple(frames.shape[1:3])}: reference {total} faces; cadence finds {hit} "
              f"(missed widths {sorted(missed)}); its light pass alone {lhit}/{ltotal} on its "
              f"{len(light_frames)} frames (missed widths {sorted(lmissed)}); {cadence.full_frames} full "
              f"+ {cadence.light_frames} light frames, {cadence.held_faces} faces held; "
              f"{cadence_s:.2f} s vs {full_s:.2f} s")
        print(goal(f"cadence_recall_{name}", share, ">=", TARGET_RECALL))
        print(goal(f"cadence_time_{name}", ratio, "<=", TARGET_TIME, ".2f"))


if __name__ == "__main__":
    main()
