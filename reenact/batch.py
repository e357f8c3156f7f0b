"""Folder jobs: one video in, one video out, run locally or on a Ray cluster.

:func:`plan_folder` mirrors an input tree into an output tree; :func:`run_jobs` runs a
task on every job with a local process pool (``workers``) or one Ray task per video
(``ray_address``), and gathers results and failures the same way: one failing file never
stops the rest, finished outputs are skipped on a re-run, and a Ctrl-C keeps every
finished file (the writer of the file in progress removes its temporary file).

A task is a picklable callable ``task(job) -> dict`` (a module-level function or a
``functools.partial`` of one) that writes ``job.output`` atomically and returns what it
wants to report; it raises on failure.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import logging
import multiprocessing
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reenact.errors import InputError, ReenactError, printable
from reenact.threads import ThreadBudget, threads_from_env

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
)

Status = Literal["done", "skipped", "failed", "ignored"]


@dataclass(frozen=True)
class Job:
    """One video to process: where it is and where its output goes."""

    source: Path
    output: Path


@dataclass(frozen=True)
class UrlJob:
    """One object to process when input and output are fsspec URLs (``s3://bucket/in/a.mp4``).

    The driver sends these to the workers, never local paths: each worker fetches
    ``source`` to its own scratch folder (see :mod:`reenact.storage`). ``size`` and ``etag``
    are what the listing said, so a worker notices a source replaced during the run.
    """

    source: str
    output: str
    size: int
    etag: str | None = None


@dataclass
class JobResult:
    """What happened to one file of a folder run (URLs as ``str`` for a URL run)."""

    source: Path | str
    output: Path | str | None
    status: Status
    seconds: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FolderPlan:
    """Jobs to run, plus results already known (existing outputs, non-video files)."""

    jobs: list[Job]
    known: list[JobResult]


Task = Callable[[Any], dict[str, Any]]
"""``task(job)`` for a :class:`Job` or a :class:`UrlJob`."""


#: bytes hashed at each end of a source file for its fingerprint
FINGERPRINT_BYTES = 1 << 20


def fingerprint_of(size: int, head: bytes, tail: bytes) -> str:
    """The fingerprint of a file of ``size`` bytes from its first MiB and (for a file over
    1 MiB) its last part: the bytes from ``max(1 MiB, size - 1 MiB)`` to the end."""
    digest = hashlib.sha256(str(size).encode())
    digest.update(head)
    digest.update(tail)
    return f"{size}:{digest.hexdigest()}"


def tail_start(size: int) -> int | None:
    """Where the fingerprint's tail starts in a file of ``size`` bytes (None: no tail)."""
    return max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES) if size > FINGERPRINT_BYTES else None


def source_fingerprint(path: str | os.PathLike[str]) -> str:
    """A cheap identity of a source file: size plus sha256 of its first and last MiB.

    A re-run of a folder compares it with the one recorded in the output's report, so a
    different clip put in place under the same name is processed again rather than
    skipped. Reading 2 MiB costs milliseconds where a full hash of a long 4K video costs
    seconds; any re-encode or edit changes the container header or the tail (index).
    """
    p = Path(path)
    size = p.stat().st_size
    start = tail_start(size)
    with open(p, "rb") as f:
        head = f.read(FINGERPRINT_BYTES)
        tail = b""
        if start is not None:
            f.seek(start)
            tail = f.read(FINGERPRINT_BYTES)
    return fingerprint_of(size, head, tail)


def _outside(path: Path, root: Path) -> bool:
    """True when ``path`` (a symlink somewhere under ``root``) resolves outside ``root``."""
    target = path.resolve()
    return target != root and root not in target.parents


def plan_folder(
    input_dir: Path,
    output_dir: Path,
    *,
    overwrite: bool = False,
    suffix: str = ".mp4",
    follow_symlinks: bool = False,
    temporary: Callable[[str], bool] | None = None,
) -> FolderPlan:
    """Mirror ``input_dir`` into ``output_dir``: every video becomes a job.

    Files whose output already exists are reported ``skipped`` unless ``overwrite``;
    files that are not videos (by extension) are reported ``ignored``, never dropped
    silently. An output folder inside the input folder is refused (a re-run would take
    its own outputs as inputs). Symbolic links that lead out of the input folder are
    reported ``ignored`` unless ``follow_symlinks``. Files whose name ``temporary`` says is a
    writer's temporary file (one a killed run left) are reported ``ignored`` too.
    """
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    if not input_dir.is_dir():
        raise InputError(f"{input_dir} is not a folder")
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise InputError(
            f"output folder {output_dir} is inside the input folder {input_dir}: "
            "choose an output folder outside it"
        )
    jobs: list[Job] = []
    known: list[JobResult] = []
    claimed: dict[Path, Path] = {}
    for source in sorted(p for p in input_dir.rglob("*") if p.is_file()):
        relative = source.relative_to(input_dir)
        if not follow_symlinks and _outside(source, input_dir):
            known.append(JobResult(source, None, "ignored",
                                   error="a link to a file outside the input folder (use --follow-symlinks)"))
            continue
        if temporary is not None and temporary(source.name):
            known.append(JobResult(source, None, "ignored", error="a temporary file left by an interrupted run"))
            continue
        if source.suffix.lower() not in VIDEO_SUFFIXES:
            known.append(JobResult(source, None, "ignored", error="not a video file extension"))
            continue
        output = (output_dir / relative).with_suffix(suffix)
        if output in claimed:
            known.append(JobResult(
                source, output, "failed",
                error=f"its output {output.name} would be the output of {claimed[output].name} too; rename one of them",
            ))
            continue
        claimed[output] = source
        if output.exists() and not overwrite:
            known.append(JobResult(source, output, "skipped", error="output exists (use --overwrite)"))
            continue
        jobs.append(Job(source, output))
    return FolderPlan(jobs, known)


_interrupted = False
"""Set in a pool worker when it receives Ctrl-C or a stop signal: it then starts no further job."""

_in_job = False
"""True in a pool worker while it runs a job: a signal then aborts the job (the writer removes
its temporary file); between jobs the signal only marks the worker as stopped."""

#: the signals a pool worker stops on: Ctrl-C, and the stop signals its parent passes on
WORKER_STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                            if s is not None)


def _on_interrupt(signum: int, frame: object) -> None:
    global _interrupted
    first = not _interrupted
    _interrupted = True
    if first and _in_job:  # once: a second signal must not break the clean-up of the first
        raise KeyboardInterrupt


def _init_worker(processes: int = 1) -> None:
    """A pool worker's start, before any job imports torch: signal handling, and its share of
    the cores (one of ``processes`` processes; reenact.threads)."""
    for sig in WORKER_STOP_SIGNALS:
        signal.signal(sig, _on_interrupt)
    ThreadBudget.for_process(processes).apply(load_torch=True)  # every job loads torch


def _stop_workers(pool: futures.ProcessPoolExecutor, signum: int) -> None:
    """Pass a stop signal on to every worker of ``pool`` (a SIGTERM sent to this process
    alone, by a service manager or ``kill``, would otherwise let them finish their videos)."""
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.pid is not None and process.is_alive():
            try:
                os.kill(process.pid, signum)
            except OSError as exc:  # it ended meanwhile
                log.debug("could not signal worker %s: %s", process.pid, exc)


def _run_one_ray(task: Task, job: Job | UrlJob) -> JobResult:
    """A Ray task: its share is the CPUs Ray assigned it (``REENACT_THREADS`` overrides)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    ThreadBudget.for_process(1, threads_from_env() or max(1, int(cpus))).apply()
    return _run_one(task, job)


def _run_one(task: Task, job: Job | UrlJob) -> JobResult:
    global _in_job
    if _interrupted:
        return JobResult(job.source, job.output, "failed", error="interrupted before it started")
    start = time.perf_counter()
    try:
        if isinstance(job.output, Path):
            job.output.parent.mkdir(parents=True, exist_ok=True)
        _in_job = True
        try:
            if _interrupted:  # the signal came between the check above and here
                raise KeyboardInterrupt
            details = task(job)
        finally:
            _in_job = False
        return JobResult(job.source, job.output, "done", time.perf_counter() - start, details=details or {})
    except ReenactError as exc:
        return JobResult(job.source, job.output, "failed", time.perf_counter() - start, error=str(exc))
    except Exception as exc:  # one bad file must never stop the rest: report it with its cause
        log.debug("job %s failed:\n%s", job.source, traceback.format_exc())
        return JobResult(
            job.source, job.output, "failed", time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}"
        )


def run_jobs(
    jobs: Sequence[Job | UrlJob],
    task: Task,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    gpus_per_task: float = 0.0,
    on_result: Callable[[JobResult], None] | None = None,
    retries: int = 0,
) -> list[JobResult]:
    """Run ``task`` on every job; return one result per job in the order given.

    ``workers > 1`` uses a local process pool; ``ray_address`` (an address or ``"auto"``;
    ``"local"`` starts a local instance) runs one Ray task per job, each asking for
    ``gpus_per_task`` GPUs. ``on_result`` is called as each job finishes (progress).
    ``retries``: how often Ray runs a job again when its worker or node dies (a job that
    fails by itself is not retried); only safe for tasks whose output appears whole or not
    at all on a storage every node sees (:func:`reenact.storage.run_url_job`).
    """
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if not jobs:
        return []
    if ray_address is not None:
        return _run_ray(jobs, task, ray_address, gpus_per_task, on_result, retries)
    results: dict[int, JobResult] = {}
    if workers == 1:
        for i, job in enumerate(jobs):
            results[i] = _run_one(task, job)
            if on_result:
                on_result(results[i])
    else:
        # spawn, not fork: forking a process that already runs torch/onnxruntime threads can hang
        # a worker that gets Ctrl-C or a stop signal (passed on by this process) aborts its video
        # (the writer removes its temporary file) and starts no other: the jobs it was handed in
        # advance come back as "interrupted"
        with futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker, initargs=(workers,)) as pool:
            pending = {pool.submit(_run_one, task, job): i for i, job in enumerate(jobs)}
            try:
                for done in futures.as_completed(pending):
                    results[pending[done]] = done.result()
                    if on_result:
                        on_result(results[pending[done]])
            except KeyboardInterrupt as exc:  # Ctrl-C, or a stop signal (reenact.exits.Stopped)
                # every worker aborts its video within a chunk: none is finished after the signal
                _stop_workers(pool, getattr(exc, "signum", signal.SIGINT))
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return [results[i] for i in range(len(jobs))]


#: seconds to wait for a Ray head's port before a run is refused (``REENACT_RAY_CONNECT_TIMEOUT``)
RAY_CONNECT_TIMEOUT = 10.0


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port``, ``[v6]:port`` or ``ray://host:port``; None for anything else."""
    rest = address.removeprefix("ray://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def check_ray_address(address: str, environ: dict[str, str] | None = None) -> None:
    """Refuse, within a bounded time, a Ray address (given, or ``RAY_ADDRESS`` for ``auto``)
    whose port does not answer: Ray itself retries a dead address for minutes, silently.

    ``local`` and an ``auto`` without ``RAY_ADDRESS`` (Ray looks for a cluster started on
    this machine, and says at once when there is none) are left to Ray.
    """
    env = os.environ if environ is None else environ
    if address == "local":
        return
    from_env = address == "auto"
    target = env.get("RAY_ADDRESS", "") if from_env else address
    where = _host_port(target) if target else None
    if where is None:
        return
    try:
        timeout = float(env.get("REENACT_RAY_CONNECT_TIMEOUT", RAY_CONNECT_TIMEOUT))
    except ValueError:
        raise InputError("REENACT_RAY_CONNECT_TIMEOUT must be a number of seconds, got "
                         f"{printable(env['REENACT_RAY_CONNECT_TIMEOUT'])!r}") from None
    try:
        with socket.create_connection(where, timeout=timeout):
            return
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        if from_env:
            raise InputError(
                f"--ray auto: no Ray cluster answers at {printable(target)} (taken from the RAY_ADDRESS "
                f"environment variable: {reason} within {timeout:g} s); start one there (`ray start --head`), "
                "fix or unset RAY_ADDRESS, or use --ray local") from exc
        raise InputError(
            f"--ray {printable(target)}: no Ray cluster answers there ({reason} within {timeout:g} s); "
            "start one with `ray start --head`, give its address, or use --ray local") from exc


def _run_ray(
    jobs: Sequence[Job | UrlJob],
    task: Task,
    address: str,
    gpus_per_task: float,
    on_result: Callable[[JobResult], None] | None,
    retries: int = 0,
) -> list[JobResult]:
    try:
        import ray
    except ImportError as exc:
        raise InputError("--ray needs the ray extra: pip install 'reenact[ray]'") from exc
    started_here = False
    if not ray.is_initialized():
        check_ray_address(address)  # a dead address: refused in seconds, not retried for minutes
        from_env = os.environ.get("RAY_ADDRESS")
        if address == "auto" and from_env:
            log.warning("--ray auto: connecting to %s, taken from the RAY_ADDRESS environment variable",
                        printable(from_env))
        try:
            # "local" starts a private instance: it never joins whatever RAY_ADDRESS or a
            # cluster already running on this machine says
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = ("start one with `ray start --head`, give its address, or use --ray local"
                    if address != "local" else "check that Ray can start on this machine")
            raise InputError(f"cannot connect to the Ray cluster at {address!r} ({exc}); {hint}") from exc
        started_here = True
        if address != "local":
            log.info("Ray cluster: %s", printable(ray.get_runtime_context().gcs_address))
    try:
        remote = ray.remote(num_gpus=gpus_per_task, max_retries=retries)(_run_one_ray)
        refs = [remote.remote(task, job) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: dict[int, JobResult] = {}
        remaining = list(refs)
        try:
            while remaining:
                ready, remaining = ray.wait(remaining, num_returns=1)
                for ref in ready:
                    i = index[ref]
                    try:
                        results[i] = ray.get(ref)
                    except Exception as exc:  # the worker itself died: report it like a failure
                        # one line: Ray's message goes on with a traceback and the worker's paths
                        first = (str(exc).strip().splitlines() or [""])[0]
                        results[i] = JobResult(jobs[i].source, jobs[i].output, "failed",
                                               error=f"Ray task failed ({type(exc).__name__}): {first}")
                    if on_result:
                        on_result(results[i])
        except KeyboardInterrupt:
            for ref in remaining:
                ray.cancel(ref, force=True)
            raise
        return [results[i] for i in range(len(jobs))]
    finally:
        if started_here:
            ray.shutdown()


def job_note(details: dict[str, Any]) -> str:
    """What a done file's faces are, for a folder run's table: "12 blurred, 3 filled solid"
    (no faces: "no faces found"); empty when the task said nothing about them."""
    faces = details.get("faces")
    if faces is None:
        return ""
    return ", ".join(f"{n} {kind}" for kind, n in faces.items()) or "no faces found"


def summary_table(results: Sequence[JobResult]) -> str:
    """A plain-text table of a folder run: one line per file, then the counts."""
    names = [printable(r.source) for r in results]
    width = max([len(n) for n in names] + [4])
    lines = [f"{'file':<{width}}  {'status':<8}  {'seconds':>8}  note"]
    for r, name in zip(results, names, strict=True):
        lines.append(f"{name:<{width}}  {r.status:<8}  {r.seconds:>8.1f}  {printable(r.error or job_note(r.details))}")
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "ignored")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
