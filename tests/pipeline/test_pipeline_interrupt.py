"""Ctrl-C during a folder run with several workers: finished files kept, nothing new started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {here!r})
from pipeline_media import slow_job
from reenact.batch import Job, run_jobs

out = Path({out!r})
jobs = [Job(out / f"in{{i}}.mp4", out / f"v{{i}}.mp4") for i in range(6)]
try:
    run_jobs(jobs, slow_job, workers=2)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_ctrl_c_with_workers_starts_no_new_video(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(here=str(HERE), out=str(tmp_path))], start_new_session=True
    )
    log = tmp_path / "starts.log"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the second round of jobs"
    time.sleep(0.5)
    interrupted_at = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    starts = [(float(t), name) for t, name in (line.split() for line in log.read_text().splitlines())]
    assert all(t < interrupted_at for t, _name in starts), "a job started after Ctrl-C"
    finished = sorted(p.name for p in tmp_path.glob("v*.mp4"))
    started = sorted(name for _t, name in starts)
    assert len(finished) >= 2 and set(finished) < set(started), (finished, started)
    assert not list(tmp_path.glob("*.partial"))
