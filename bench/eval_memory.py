"""Benchmark of ``reenact eval``: peak memory follows the frame size, not the clip length.

Evaluates the 1080p crowd fixture clip against itself for a short and a 4x longer span,
each in a fresh subprocess (so peak RSS is that run's own), and prints time per frame and
the ratio of the peak RSS of the long run to the short one. Needs the shared fixtures
(``REENACT_FIXTURES`` or ``../shared/fixtures``).

    python bench/eval_memory.py [--short 10] [--long 40] [--clip videos/facenet_pytorch_video.mp4]

Goal (DESIGN.md format, at the end):
    peak RSS of the long run <= 1.15x the short run's (streaming: per-frame state only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.models import MOBILEFACE, PFLD, SCRFD  # noqa: E402

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from reenact.faces import OnnxArcFaceEncoder, make_detector
from reenact.faces.landmarks import PfldLandmarks
from reenact.evaluate.report import EvalSettings, evaluate_videos

fx, clip, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
scrfd, mobileface, mean, std, pfld = sys.argv[4:9]
det = make_detector("insightface", scrfd)
enc = OnnxArcFaceEncoder(mobileface, float(mean), float(std))
lm = PfldLandmarks(pfld)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
r = evaluate_videos(fx / clip, fx / clip, det, enc, lm, settings=EvalSettings(max_frames=n))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "frames": r["alignment"]["pairs"], "faces": r["summary"]["faces_evaluated"],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_load_mib": base / 1024}))
"""


def _run(fixtures: str, clip: str, n: int) -> dict[str, float]:
    fx = Path(fixtures)
    models = [str(SCRFD.file(fx)), str(MOBILEFACE.file(fx)), str(MOBILEFACE.mean), str(MOBILEFACE.std),
              str(PFLD.file(fx))]
    out = subprocess.run([sys.executable, "-c", _CHILD, fixtures, clip, str(n), *models], check=True,
                         capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=40)
    parser.add_argument("--clip", default="videos/facenet_pytorch_video.mp4")
    args = parser.parse_args()
    fixtures = fixtures_dir()
    if fixtures is None:
        print("shared fixtures not found: set REENACT_FIXTURES", file=sys.stderr)
        return 2
    results = {}
    for n in (args.short, args.long):
        r = _run(str(fixtures), args.clip, n)
        results[n] = r
        print(f"{args.clip} x{r['frames']:.0f} frames ({r['faces']:.0f} faces): {r['seconds']:.1f} s "
              f"({1000 * r['seconds'] / r['frames']:.0f} ms/frame pair), peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(after loading models {r['rss_after_load_mib']:.0f} MiB)")
    ratio = results[args.long]["peak_rss_mib"] / results[args.short]["peak_rss_mib"]
    print(f"peak RSS ratio {args.long} vs {args.short} frames: {ratio:.3f}")
    target = 1.15
    print(goal(f"eval_peak_rss_{args.long}_vs_{args.short}_frames", ratio, "<=", target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
