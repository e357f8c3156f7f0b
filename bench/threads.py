"""The thread budget, before and after, on a quiet and on a busy machine, in one run.

Runs ``deidentify`` (whole processes, as a user would) from two checkouts, interleaved:
``before`` (the commit before ``reenact/threads.py`` was added, exported with ``git
archive``, or ``--before DIR``) and ``after`` (this checkout), on each clip, in two
conditions:

* ``quiet``: nothing of ours runs beside it (the machine may still be shared: its load
  average is printed);
* ``busy``: one competing CPU-bound process per usable core (``while True: pass``) runs
  during every run of both checkouts.

Prints wall time and CPU time (user + system, the process and its children) per run, the medians, the after/before ratio per clip and condition, and
how much each checkout slows down from quiet to busy. Goals: after/before <= 1.05 quiet
(the budget costs nothing where the cores are ours) and <= 1.0 busy.

Run:  nice -n 10 python bench/threads.py [--clips sample d0 crowd] [--frames 40] [--runs 2]
      [--method blur] [--conditions quiet busy]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vs_deface import hogs, measure  # noqa: E402  (bench/ is on sys.path when run as a script)

from reenact.threads import usable_cores  # noqa: E402
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.media import cut_clip  # noqa: E402

CLIPS = {"sample": "samples/astronaut_clip.mp4", "d0": "videos/liveportrait_d0.mp4",
         "crowd": "videos/facenet_pytorch_video.mp4", "friends": "videos/mobileface_friends1.mp4"}
GOALS = {"quiet": 1.05, "busy": 1.0}


def export_before(dest: Path) -> str:
    """The commit before the thread budget, exported to ``dest``; returns its hash."""
    added = subprocess.run(["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "--", "reenact/threads.py"],
                           capture_output=True, text=True, check=True).stdout.split()
    rev = f"{added[-1]}^" if added else "HEAD"
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    tar_path = dest.with_suffix(".tar")
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    tar_path.unlink()
    return rev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=["sample", "d0"], choices=list(CLIPS))
    parser.add_argument("--frames", type=int, default=40, help="frames of each clip (0: all)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--method", default="blur", choices=["blur", "synthetic"])
    parser.add_argument("--conditions", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    parser.add_argument("--before", type=Path, default=None, help="checkout to compare with (default: git archive)")
    parser.add_argument("--hogs", type=int, default=0, help="competing processes when busy (0: one per core)")
    parser.add_argument("--after-threads", type=int, nargs="*", default=[],
                        help="also run this checkout with REENACT_THREADS=N (one variant per N)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    try:
        if args.before is None:
            before_dir = work / "before"
            before_dir.mkdir()
            rev = export_before(before_dir)
        else:
            before_dir, rev = args.before.resolve(), "given"
        fixtures = fixtures_dir()
        cores = usable_cores()
        n_hogs = args.hogs or cores
        print(f"machine: {cores} usable cores, load {os.getloadavg()[0]:.2f} at start; before = {rev}, "
              f"after = this checkout; deidentify --method {args.method}; {args.runs} runs; busy = {n_hogs} hogs")
        checkouts: dict[str, tuple[Path, dict[str, str]]] = {"before": (before_dir, {}), "after": (REPO, {})}
        for n in args.after_threads:
            checkouts[f"after_t{n}"] = (REPO, {"REENACT_THREADS": str(n)})
        lines = []
        for clip in args.clips:
            src_path = REPO / CLIPS[clip] if clip == "sample" else (fixtures / CLIPS[clip] if fixtures else None)
            if src_path is None or not src_path.exists():
                print(f"{clip}: not found, skipped")
                continue
            src = work / f"{clip}.mp4"
            if args.frames:
                cut_clip(src_path, src, args.frames, crf=4)
            else:
                shutil.copy(src_path, src)
            walls: dict[tuple[str, str], list[float]] = {}
            cpus: dict[tuple[str, str], list[float]] = {}
            for condition in args.conditions:
                with hogs(n_hogs if condition == "busy" else 0):
                    time.sleep(0.5)
                    load = os.getloadavg()[0]
                    for _ in range(args.runs):
                        for name, (root, extra) in checkouts.items():
                            env = dict(os.environ, PYTHONPATH=str(root))
                            env.pop("REENACT_THREADS", None)
                            env.pop("OMP_NUM_THREADS", None)
                            env.update(extra)
                            cmd = [sys.executable, "-c", "from reenact.cli import deidentify_script; "
                                   "deidentify_script()", str(src), "-o", str(work / f"{clip}_{name}.mp4"),
                                   "--overwrite", "--quiet", "--method", args.method]
                            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                            walls.setdefault((condition, name), []).append(measure(cmd, env).wall_s)
                            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                            cpus.setdefault((condition, name), []).append(
                                c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
                print(f"{clip} {condition} (load {load:.1f} after the hogs started): " + "; ".join(
                    f"{n} " + " ".join(f"{w:.1f}" for w in walls[(condition, n)]) + " s wall, "
                    + " ".join(f"{c:.1f}" for c in cpus[(condition, n)]) + " s CPU" for n in checkouts), flush=True)
                for name in list(checkouts)[1:]:
                    ratio = statistics.median(a / b for a, b in zip(walls[(condition, name)],
                                                                    walls[(condition, "before")], strict=True))
                    ok = ratio <= GOALS[condition]
                    lines.append(f"goal {name}_vs_before_{condition}_{clip}: {ratio:.2f} (target <= "
                                 f"{GOALS[condition]}) {'PASS' if ok else 'FAIL'}")
            if {"quiet", "busy"} <= set(args.conditions):
                for name in checkouts:
                    slow = statistics.median(walls[("busy", name)]) / statistics.median(walls[("quiet", name)])
                    print(f"{clip} {name}: busy/quiet {slow:.2f}")
        print()
        for line in lines:
            print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
