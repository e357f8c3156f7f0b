"""The thread budget (reenact.threads): its arithmetic, where the cores come from, and that
real processes (the CLI, each --workers worker, a Ray task) run with it."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reenact.errors import ConfigError
from reenact.threads import (
    ThreadBudget,
    _cgroup_quota_cores,
    idle_cores,
    threads_from_env,
    usable_cores,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "astronaut_clip.mp4"
DEIDENTIFY = [sys.executable, "-c", "from reenact.cli import deidentify_script; deidentify_script()"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REENACT_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("cores", "processes", "threads", "expected"),
    [
        # share, compute, interop, encoder, decoder
        (2, 1, None, (2, 1, 1, 1, 1)),
        (1, 1, None, (1, 1, 1, 1, 1)),
        (2, 2, None, (1, 1, 1, 1, 1)),
        (2, 4, None, (1, 1, 1, 1, 1)),  # more processes than cores: one thread each, never zero
        (8, 1, None, (8, 7, 1, 1, 1)),
        (16, 1, None, (16, 14, 1, 2, 2)),
        (16, 2, None, (8, 7, 1, 1, 1)),
        (64, 3, None, (21, 19, 1, 2, 2)),
        (2, 1, 6, (6, 5, 1, 1, 1)),  # REENACT_THREADS / --threads sets the share outright
        (64, 8, 1, (1, 1, 1, 1, 1)),
    ],
)
def test_budget_arithmetic(cores: int, processes: int, threads: int | None, expected: tuple[int, ...]) -> None:
    b = ThreadBudget.resolve(cores, processes, threads)
    assert (b.share, b.compute, b.interop, b.encoder, b.decoder) == expected
    if threads is None:
        assert b.share * processes <= max(cores, processes)  # the processes together fit the cores
    assert b.compute + b.encoder <= max(b.share, 2)  # compute and the encoder fit the share


def test_budget_environment_turns_spinning_off() -> None:
    env = ThreadBudget.resolve(16, 2).environment()
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "7"


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ConfigError, match="cores >= 1"):
        ThreadBudget.resolve(0, 1)
    with pytest.raises(ConfigError, match="compute must be a positive integer"):
        ThreadBudget(share=1, compute=0, interop=1, encoder=1, decoder=1)
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ConfigError, match="REENACT_THREADS"):
            threads_from_env({"REENACT_THREADS": bad})
    assert threads_from_env({"REENACT_THREADS": " 3 "}) == 3
    assert threads_from_env({}) is None


def test_cgroup_quota_v2_and_v1(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    (root / "jobs" / "me").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "jobs" / "cpu.max").write_text("150000 100000\n")  # 1.5 cores for the parent group
    (root / "jobs" / "me" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/jobs/me\n")
    assert _cgroup_quota_cores(root, proc) == 1.5
    (root / "jobs" / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota_cores(root, proc) == math.inf

    v1 = tmp_path / "v1"
    (v1 / "cpu" / "box").mkdir(parents=True)
    (v1 / "cpu" / "box" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "box" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:memory:/box\n3:cpu,cpuacct:/box\n")
    (v1 / "cpu,cpuacct").symlink_to(v1 / "cpu")
    assert _cgroup_quota_cores(v1, proc) == 3.0
    assert _cgroup_quota_cores(v1, tmp_path / "missing") == math.inf


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two cores")
def test_usable_cores_follow_the_cpu_affinity() -> None:
    assert usable_cores() <= len(os.sched_getaffinity(0))
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from reenact.threads import ThreadBudget; print(ThreadBudget.for_process(1).share)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def _dry_run(tmp_path: Path, *flags: str, **env: str) -> dict[str, int]:
    out = subprocess.run([*DEIDENTIFY, str(SAMPLE), "-o", str(tmp_path / "out.mp4"), "--dry-run", *flags],
                         env=_env(**env), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    threads: dict[str, int] = json.loads(out.stdout)["threads"]
    return threads


def test_cli_process_runs_with_its_budget(tmp_path: Path) -> None:
    """deidentify's own process: torch's intra-op and inter-op counts are the budget's."""
    default = _dry_run(tmp_path)
    assert default["share"] == usable_cores()
    assert default["torch_threads"] == default["compute"]
    assert default["torch_interop_threads"] == 1
    given = _dry_run(tmp_path, REENACT_THREADS="5")
    assert (given["share"], given["compute"], given["torch_threads"]) == (5, 4, 4)


def test_threads_flag_sets_the_share_of_the_process_and_its_workers(tmp_path: Path) -> None:
    flagged = _dry_run(tmp_path, "--threads", "3", REENACT_THREADS="7")  # the flag wins over the variable
    assert (flagged["share"], flagged["torch_threads"]) == (3, 2)
    out = subprocess.run([*DEIDENTIFY, str(SAMPLE), "--dry-run", "--threads", "0"], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip() == "error: --threads must be at least 1, got 0"
    out = subprocess.run([*DEIDENTIFY, str(SAMPLE), "--dry-run"], env=_env(REENACT_THREADS="lots"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.count("\n") == 1 and "REENACT_THREADS='lots'" in out.stderr


def test_each_folder_worker_runs_with_its_share(tmp_path: Path) -> None:
    """--workers 2: both spawned workers size torch, onnxruntime and x264 to their share."""
    from reenact.batch import Job, run_jobs
    from testing.thread_probe import thread_probe

    sources = []
    for i in range(2):
        sources.append(tmp_path / f"in{i}.mp4")
        shutil.copy(SAMPLE, sources[-1])
    jobs = [Job(s, tmp_path / "out" / s.name) for s in sources]
    results = run_jobs(jobs, thread_probe, workers=2)
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    expected = ThreadBudget.for_process(2)
    for r in results:
        d = r.details
        assert d["pid"] != os.getpid()
        assert d["budget"]["share"] == expected.share
        assert d["torch_threads"] == d["onnx_intra"] == expected.compute
        assert d["torch_interop_threads"] == d["onnx_inter"] == 1
        assert d["encoder_threads"] == expected.encoder
        assert d["omp_wait_policy"] == "PASSIVE"
        assert r.output is not None and r.output.stat().st_size > 0


def test_a_ray_task_runs_with_the_cpus_ray_gave_it(tmp_path: Path) -> None:
    from testing.fixtures import require_extra

    require_extra("ray")
    import ray.cloudpickle

    import testing.thread_probe
    from reenact.batch import Job, run_jobs
    from testing.thread_probe import thread_probe

    ray.cloudpickle.register_pickle_by_value(testing.thread_probe)  # Ray's workers need not find testing/
    source = tmp_path / "in.mp4"
    shutil.copy(SAMPLE, source)
    results = run_jobs([Job(source, tmp_path / "out" / "in.mp4")], thread_probe, ray_address="local")
    assert [r.status for r in results] == ["done"], results[0].error
    d = results[0].details
    assert d["budget"]["share"] == 1  # one CPU per task: as many tasks as cores run at once
    assert d["torch_threads"] == d["onnx_intra"] == d["encoder_threads"] == 1


def test_idle_cores_are_the_cores_no_runnable_task_holds(tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    cores = usable_cores()  # the process's own cores (affinity, cgroup quota), not the host's
    loadavg.write_text("0.52 0.41 0.30 1/118 4242\n")  # the calling thread alone
    assert idle_cores(loadavg, samples=2, pause=0.0) == cores - 1
    loadavg.write_text(f"3.10 2.90 2.40 {cores + 2}/121 4242\n")  # every core taken (the busy bench's hogs)
    assert idle_cores(loadavg, samples=2, pause=0.0) == 0
    loadavg.write_text("garbage\n")
    assert idle_cores(loadavg) == 0  # unknown: no core counted free
