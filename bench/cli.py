"""CLI responsiveness, measured in one run (issue 16).

goal refuse_ratio: time to refuse a text file named .mp4 / time of ``reenact --version`` (<= 3)
goal sigint_ratio, sigterm_ratio: time from the signal to exit / time one chunk of frames
takes on the same clip (<= 2)

    python bench/cli.py [--clip PATH] [--chunk 8]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.models import MOBILEFACE, SCRFD  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _timed(argv: list[str], cwd: Path, expect: int) -> float:
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, *argv], cwd=cwd, env=ENV, capture_output=True).returncode
    took = time.perf_counter() - t0
    assert rc == expect, (argv, rc)
    return took


def _run_args(fixtures: Path, clip: Path, out: Path, chunk: int) -> list[str]:
    return ["-c", "import sys; from reenact.cli import deidentify_main; sys.exit(deidentify_main())",
            str(clip), "-o", str(out), "--device", "cpu",
            "--detector-model", str(SCRFD.file(fixtures)), "--identity-model", str(MOBILEFACE.file(fixtures)),
            "--identity-mean", f"{MOBILEFACE.mean:g}", "--identity-std", f"{MOBILEFACE.std:g}",
            "--set", f"read.chunk_size={chunk}"]


def _stop_latency(fixtures: Path, clip: Path, work: Path, chunk: int, sig: signal.Signals) -> float:
    out = work / f"stop_{sig.name}.mp4"
    proc = subprocess.Popen([sys.executable, *_run_args(fixtures, clip, out, chunk), "--quiet"], env=ENV,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and not any(p.name.startswith(f".{out.stem}.partial") and p.stat().st_size
                                          for p in work.iterdir()):
        time.sleep(0.02)
    time.sleep(1.0)  # well inside the stream
    t0 = time.perf_counter()
    proc.send_signal(sig)
    rc = proc.wait()
    took = time.perf_counter() - t0
    assert rc == 128 + sig, (sig.name, rc)
    assert not any(".partial" in p.name for p in work.iterdir()), "a partial file was left"
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--chunk", type=int, default=8)
    args = parser.parse_args()
    fixtures = fixtures_dir()
    if fixtures is None:
        sys.exit("needs the fixture clips (testing/fixtures.py)")
    clip = args.clip or fixtures / "videos" / "liveportrait_d12.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "text.mp4").write_text("not a video\n")
        version = statistics.median(_timed(["-m", "reenact.cli", "--version"], work, 0) for _ in range(3))
        refuse = statistics.median(_timed(["-m", "reenact.cli", "text.mp4", "--identity", str(clip)], work, 2)
                                   for _ in range(3))
        full = subprocess.run([sys.executable, *_run_args(fixtures, clip, work / "full.mp4", args.chunk), "--json"],
                              env=ENV, capture_output=True, text=True, check=True)
        report = json.loads(full.stdout)
        chunk_s = args.chunk / report["fps_processed"]
        sigint = _stop_latency(fixtures, clip, work, args.chunk, signal.SIGINT)
        sigterm = _stop_latency(fixtures, clip, work, args.chunk, signal.SIGTERM)
    print(f"reenact --version {version:.3f} s, refusal of a text .mp4 {refuse:.3f} s, one chunk of {args.chunk} "
          f"frames {chunk_s:.3f} s, SIGINT->exit {sigint:.3f} s, SIGTERM->exit {sigterm:.3f} s")
    for name, value, target in (("refuse_ratio", refuse / version, 3), ("sigint_ratio", sigint / chunk_s, 2),
                                ("sigterm_ratio", sigterm / chunk_s, 2)):
        print(goal(name, value, "<=", target, ".2f"))


if __name__ == "__main__":
    main()
