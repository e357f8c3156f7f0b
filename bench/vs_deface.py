"""deidentify against deface, whole processes, interleaved, in one run.

For each clip (a 512x512 one-face clip and the 720p multi-face clip, cut to their first
``--frames`` frames) the tools run interleaved, ``--runs`` times each:

* ``deface`` (blur, its defaults),
* ``deidentify`` (the default pack, synthetic identities),
* ``deidentify --method blur`` (skipped while the CLI has no ``--method``).

Measured per run: whole-process wall time and peak memory, the larger of the main
process's VmHWM and the largest sum of resident memory over the process tree (deface
encodes through an ffmpeg child process, so the tree counts), sampled every 20 ms from
``/proc``. Reported: medians over the runs, the ratios to deface in the same run, and the
recall of each tool: the share of the faces that an independent detector (the fixture
SCRFD, through the project's insightface backend) finds in the input whose pixels the tool
changed (mean absolute difference inside the box's central half above ``--changed``).

Run:  python bench/vs_deface.py [--frames 60] [--runs 3] [--clips d0 friends]
Needs the fixtures (REENACT_FIXTURES or ../shared/fixtures). Takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testing.fixtures import fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.media import cut_clip, read_frames  # noqa: E402
from testing.models import SCRFD  # noqa: E402

CLIPS = {"d0": "liveportrait_d0.mp4", "friends": "mobileface_friends1.mp4"}
TARGET_WALL = {"blur": 1.0, "synthetic": 2.0}
TARGET_RSS_MIB = 1024.0


# ------------------------------------------------------------------ process measurement
def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Run:
    wall_s: float
    peak_mib: float


def measure(cmd: list[str], env: dict[str, str]) -> Run:
    """Run ``cmd``; wall time and peak memory (MiB) of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = 0
    peak_main = 0
    while proc.poll() is None:
        pids = _tree(proc.pid)
        peak_tree = max(peak_tree, sum(_status_kib(p, "VmRSS") for p in pids))
        peak_main = max(peak_main, _status_kib(proc.pid, "VmHWM"))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return Run(wall, max(peak_tree, peak_main) / 1024.0)


# ----------------------------------------------------------------------------- frames
def reference_faces(frames: np.ndarray, scrfd: Path) -> list[np.ndarray]:
    """SCRFD boxes [N,4] per frame (the independent detector of the recall measure)."""
    from reenact.faces.detect import DetectorSettings, make_detector

    detector = make_detector("insightface", scrfd, DetectorSettings(working_size=640, score_threshold=0.5))
    out = []
    for start in range(0, len(frames), 8):
        out += [d.boxes for d in detector.detect(frames[start : start + 8])]
    return out


def recall(inp: np.ndarray, out: np.ndarray, faces: list[np.ndarray], changed: float) -> tuple[float, int]:
    """Share of the reference faces whose central half the tool changed."""
    hit = total = 0
    for t in range(min(len(inp), len(out))):
        for x1, y1, x2, y2 in faces[t]:
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
            xa, xb = int(max(0, cx - hw)), int(min(inp.shape[2], cx + hw + 1))
            ya, yb = int(max(0, cy - hh)), int(min(inp.shape[1], cy + hh + 1))
            if xb <= xa or yb <= ya:
                continue
            diff = np.abs(inp[t, ya:yb, xa:xb].astype(np.int16) - out[t, ya:yb, xa:xb].astype(np.int16))
            total += 1
            hit += int(diff.mean() > changed)
    return (hit / total if total else float("nan")), total


# ------------------------------------------------------------------------------- main
@dataclass
class Tool:
    name: str
    cmd: list[str]
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


def has_method_option(env: dict[str, str]) -> bool:
    text = subprocess.run(
        [sys.executable, "-c", "from reenact.cli import deidentify_main; deidentify_main()", "--help"],
        env=env, capture_output=True, text=True,
    ).stdout
    return "--method" in text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--changed", type=float, default=6.0, help="mean |diff| (0..255) that counts as changed")
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    args = parser.parse_args()

    fixtures = fixtures_dir()
    if fixtures is None:
        raise SystemExit("fixtures not found; set REENACT_FIXTURES")
    scrfd = SCRFD.file(fixtures)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    deface_bin = shutil.which("deface") or str(Path(sys.executable).parent / "deface")
    # what the ``deidentify`` console script runs (reenact.cli.deidentify_script), from this checkout
    deid = [sys.executable, "-c", "from reenact.cli import deidentify_script; deidentify_script()"]
    blur_ok = has_method_option(env)

    work = Path(tempfile.mkdtemp(prefix="vs_deface_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.frames} frames, {args.runs} runs")
    goals: list[str] = []
    try:
        for clip in args.clips:
            src = work / f"{clip}.mp4"
            cut_clip(fixtures / "videos" / CLIPS[clip], src, args.frames, crf=4)
            outs = {"deface": work / f"{clip}_deface.mp4", "synthetic": work / f"{clip}_synthetic.mp4",
                    "blur": work / f"{clip}_blur.mp4"}
            tools = [
                Tool("deface", [deface_bin, str(src), "-o", str(outs["deface"])]),
                Tool("synthetic", deid + [str(src), "-o", str(outs["synthetic"]), "--overwrite", "--quiet"]),
            ]
            if blur_ok:
                tools.append(Tool("blur", deid + [str(src), "-o", str(outs["blur"]), "--overwrite", "--quiet",
                                                  "--method", "blur"]))
            for _ in range(args.runs):
                for tool in tools:
                    if tool.name == "deface":
                        outs["deface"].unlink(missing_ok=True)
                    tool.runs.append(measure(tool.cmd, env))
            inp = read_frames(src)
            faces = reference_faces(inp, scrfd)
            base = tools[0]
            print(f"\n{clip}: {inp.shape[2]}x{inp.shape[1]}, {len(inp)} frames, "
                  f"{sum(len(f) for f in faces)} SCRFD faces")
            print(f"{'tool':<12}{'wall s (median)':>17}{'runs':>26}{'peak MiB':>10}{'recall':>8}")
            rec = {}
            for tool in tools:
                r, _n = recall(inp, read_frames(outs[tool.name]), faces, args.changed)
                rec[tool.name] = r
                runs = " ".join(f"{x.wall_s:.1f}" for x in tool.runs)
                print(f"{tool.name:<12}{tool.median('wall_s'):>17.2f}{runs:>26}"
                      f"{max(x.peak_mib for x in tool.runs):>10.0f}{r:>8.3f}")
            for method in ("blur", "synthetic"):
                tool = next((t for t in tools if t.name == method), None)
                name = f"wall_vs_deface_{method}_{clip}"
                if tool is None:
                    goals.append(f"goal {name}: SKIPPED (no --method yet)")
                    continue
                # ratio per interleaved round, then the median: load changes hit both alike
                ratio = statistics.median(t.wall_s / b.wall_s for t, b in zip(tool.runs, base.runs, strict=True))
                goals.append(goal(name, ratio, "<=", TARGET_WALL[method], ".2f"))
            for tool in tools[1:]:
                peak = max(x.peak_mib for x in tool.runs)
                goals.append(goal(f"peak_rss_mib_{clip}_{tool.name}", peak, "<=", TARGET_RSS_MIB, ".0f", ".0f"))
            for tool in tools[1:]:
                goals.append(goal(f"recall_vs_deface_{clip}_{tool.name}", rec[tool.name], ">=", rec["deface"],
                                  target_fmt=".3f"))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for line in goals:
        print(line)


if __name__ == "__main__":
    main()
