"""Ctrl-C during a folder run with several workers: finished files kept, nothing new started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.models import MOBILEFACE, SCRFD

HERE = Path(__file__).resolve().parent

SCRIPT = """
import sys
from pathlib import Path

import pytest
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


def _cli_run_until_partial(fixtures: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real ``deidentify`` run on a fixture clip, waited on until its hidden partial file exists."""
    out = tmp_path / "out.mp4"
    code = "import sys; from reenact.cli import deidentify_main; sys.exit(deidentify_main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(fixtures / "videos" / "liveportrait_d12.mp4"), "-o", str(out), "--quiet",
         "--device", "cpu", "--detector-model", str(SCRFD.file(fixtures)),
         "--identity-model", str(MOBILEFACE.file(fixtures)),
         "--identity-mean", "0", "--identity-std", "1", "--set", "read.chunk_size=8"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.iterdir() if ".partial" in p.name]
        if partial and partial[0].stat().st_size > 0:
            return proc, out
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no partial file appeared; the run ended with {proc.poll()}: {proc.stderr.read()}")


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_cleans_up_like_ctrl_c(fixtures: Path, tmp_path: Path, sig: signal.Signals, status: int) -> None:
    """`timeout`, `docker stop` and schedulers stop a run with SIGTERM: no hidden partial file stays."""
    proc, out = _cli_run_until_partial(fixtures, tmp_path)
    sent = time.perf_counter()
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == status
    took = time.perf_counter() - sent
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err and sig.name in err, err
    assert not out.exists(), "a stopped run left an output"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a stopped run left files"
    assert took < 30, f"stopping took {took:.1f} s"
