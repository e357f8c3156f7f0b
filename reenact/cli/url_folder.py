"""``deidentify s3://bucket/in/ -o s3://bucket/out/`` (and ``reenact``): a folder run in object storage.

The same decisions as a local folder run (mirrored names, sidecars beside each output,
finished outputs skipped, stale ones reported, one bad file never stops the rest), with
the bytes moved by :mod:`reenact.storage`: the driver lists, judges and sends URLs; each
worker (local processes or Ray tasks on any node) fetches, runs and uploads. At the end a
JSON summary (per file: node, seconds, status, counts; no credentials, no local paths) is
written to the output prefix as ``reenact-summary.json``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import posixpath
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reenact.batch import JobResult, UrlJob, job_note
from reenact.cli.checks import check_photo_path
from reenact.errors import InputError, StorageError, printable
from reenact.storage import (
    SUMMARY_NAME,
    UrlPlan,
    is_url,
    join,
    plan_url_folder,
    public_url,
    read_bytes,
    source_changed,
    write_bytes,
)

if TYPE_CHECKING:
    from reenact.cli.video import Mode
    from reenact.pipeline import RunPlan

#: how often Ray runs a file again when its worker or node dies mid-file
RAY_RETRIES = 3


def wants_urls(args: argparse.Namespace) -> bool:
    """True when the input or the output is a URL (not a local path)."""
    return is_url(args.input) or (args.output is not None and is_url(args.output))


def run(args: argparse.Namespace, mode: Mode) -> int:
    """A folder run whose input and/or output is a URL; returns the exit status."""
    source, output = _check_args(args)
    from reenact.cli.settings import resolve_settings
    from reenact.cli.video import warn_unused_flags
    from reenact.pipeline.plan import plan_run

    for name in ("botocore", "aiobotocore", "s3fs"):  # their INFO lines say where credentials came from
        logging.getLogger(name).setLevel(logging.WARNING)
    identity: Path | None = getattr(args, "identity", None)
    config = resolve_settings(args)
    warn_unused_flags(args, mode, config, folder=True)
    # every decision of the run, made once; the photo travels inside the plan (decoded, with its hash)
    run_plan = plan_run(mode, config, identity=identity, preview=args.preview)
    plan = plan_url_folder(source, output, overwrite=args.overwrite)  # credentials checked here, before any work
    known = plan.known + judge_done(plan, run_plan)
    if args.dry_run:
        print(json.dumps(_dry_run(mode, source, output, plan, known), indent=1))
        return 0
    started = datetime.datetime.now(datetime.timezone.utc)
    wall = time.perf_counter()
    results = _run_jobs(args, run_plan, plan.jobs)
    everything = known + results
    summary = build_summary(mode, source, output, everything, started, time.perf_counter() - wall,
                            executor="ray" if args.ray else "local")
    write_bytes(join(output, SUMMARY_NAME), json.dumps(summary, indent=1).encode())
    if args.json:
        print(json.dumps(summary, indent=1))
    elif not args.quiet:
        print(_table(summary))
    return 1 if any(r.status == "failed" for r in everything) else 0


def _check_args(args: argparse.Namespace) -> tuple[str, str]:
    if args.output is None:
        raise InputError(f"{public_url(str(args.input))}: a URL input needs -o/--output, the output folder's URL")
    if getattr(args, "audit", False):
        raise InputError("--audit writes absolute paths and identity codes to a file kept at mode 0600, which "
                         "object storage cannot keep; run --audit on local files")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    identity = getattr(args, "identity", None)
    if identity is not None:
        if is_url(identity):
            raise InputError("--identity must be a local photo: the driver sends it to the workers")
        check_photo_path(Path(identity), "identity photo (--identity)")
    source, output = str(args.input), str(args.output)
    for url in (source, output):
        if not is_url(url) and args.ray:
            logging.getLogger("reenact").warning(
                "%s is a local folder: with --ray every node must see it at the same path", printable(url))
    return source, output


def judge_done(plan: UrlPlan, run_plan: RunPlan) -> list[JobResult]:
    """The finished outputs: ``skipped`` when made from this source with these settings,
    else skipped as stale (with the reason and the way to redo it), as for a local folder run."""
    from reenact.pipeline.run import stale_reason

    judged = []
    with tempfile.TemporaryDirectory(prefix="reenact-reports-") as tmp:
        for job, result in plan.done:
            reason = _stale(job, run_plan, Path(tmp), stale_reason)
            if reason is not None:  # not a failure of the file: skipped, and the way to redo it
                result.details["stale"] = reason
                result.error = f"stale: {reason}; --overwrite remakes it"
            judged.append(result)
    return judged


def _stale(job: UrlJob, run_plan: RunPlan, tmp: Path, stale_reason: Any) -> str | None:
    name = posixpath.basename(job.output)
    try:
        text = read_bytes(job.output + ".report.json")
        report = json.loads(text)
    except (StorageError, ValueError):
        return "it has no readable report beside it"
    local = tmp / name
    local.with_name(name + ".report.json").write_bytes(text)
    reason: str | None = stale_reason(local, run_plan, None)
    if reason is None and source_changed(job, report):
        reason = "its source file changed since (another clip under the same name)"
    return reason


def _run_jobs(args: argparse.Namespace, run_plan: RunPlan, jobs: list[UrlJob]) -> list[JobResult]:
    import torch
    from tqdm import tqdm

    from reenact.batch import run_jobs
    from reenact.packs.nodes import FACE_COMPONENTS, ready_on_node
    from reenact.pipeline import video_job
    from reenact.storage import run_url_job

    # the identity photo travels inside the plan (decoded once on the driver, with its hash)
    task = functools.partial(video_job, plan=run_plan, overwrite=args.overwrite)
    components = FACE_COMPONENTS if run_plan.classic else None
    prepare = functools.partial(ready_on_node, run_plan.config.models.pack, components)
    url_task = functools.partial(run_url_job, task=task, prepare=prepare)
    bar = tqdm(total=len(jobs), unit="video", disable=args.quiet or args.json)
    started, frames = time.perf_counter(), 0

    def tick(result: JobResult) -> None:
        nonlocal frames
        frames += int(result.details.get("frames") or 0)
        bar.set_postfix_str(f"{frames / max(time.perf_counter() - started, 1e-9):.1f} frames/s", refresh=False)
        bar.update(1)

    gpus = args.gpus_per_task if args.gpus_per_task is not None else (1.0 if torch.cuda.is_available() else 0.0)
    try:
        return run_jobs(jobs, url_task, workers=args.workers, ray_address=args.ray, gpus_per_task=gpus,
                        on_result=tick, retries=RAY_RETRIES if args.ray else 0)
    finally:
        bar.close()


def _relative(url: str | Path | None, folder: str) -> str | None:
    if url is None:
        return None
    text, root = str(url), folder.rstrip("/") + "/"
    return text[len(root):] if text.startswith(root) else posixpath.basename(text)


def build_summary(mode: str, source: str, output: str, results: list[JobResult], started: datetime.datetime,
                  wall_s: float, executor: str) -> dict[str, Any]:
    """The run's JSON summary: per file its names relative to the folders, node, seconds,
    status, frames and counts; the folders as URLs without credentials; no local path."""
    files = []
    for r in results:
        d = r.details
        files.append({
            "source": _relative(r.source, source), "output": _relative(r.output, output), "status": r.status,
            "node": d.get("node"), "seconds": round(r.seconds, 3), "fetch_s": d.get("fetch_s"),
            "prepare_s": d.get("prepare_s"), "task_s": d.get("task_s"), "upload_s": d.get("upload_s"),
            "models": d.get("models"), "frames": d.get("frames"), "tracks": d.get("tracks"),
            "counts": d.get("counts"), "faces": d.get("faces"), "error": r.error,
        })
    frames = sum(int(f["frames"] or 0) for f in files)
    return {
        "command": mode, "input": public_url(source), "output": public_url(output), "executor": executor,
        "started": started.isoformat(timespec="seconds"), "wall_s": round(wall_s, 3), "frames": frames,
        "frames_per_s": round(frames / wall_s, 3) if wall_s > 0 else None,
        "counts": {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "ignored")},
        "nodes": sorted({f["node"] for f in files if f["node"]}),
        "files": files,
    }


def _table(summary: dict[str, Any]) -> str:
    rows = summary["files"]
    names = [printable(f["source"]) for f in rows]
    width = max([len(n) for n in names] + [4])
    lines = [f"{'file':<{width}}  {'status':<8}  {'seconds':>8}  {'node':<20}  note"]
    for f, name in zip(rows, names, strict=True):
        lines.append(f"{name:<{width}}  {f['status']:<8}  {f['seconds']:>8.1f}  {printable(f['node'] or ''):<20}  "
                     f"{printable(f['error'] or job_note(f))}")
    lines.append(", ".join(f"{n} {s}" for s, n in summary["counts"].items())
                 + f"; summary in {summary['output'].rstrip('/')}/{SUMMARY_NAME}")
    return "\n".join(lines)


def _dry_run(mode: str, source: str, output: str, plan: UrlPlan, known: list[JobResult]) -> dict[str, Any]:
    return {
        "mode": mode, "input": public_url(source), "output": public_url(output),
        "jobs": [[_relative(j.source, source), _relative(j.output, output)] for j in plan.jobs],
        "skipped": [[_relative(r.source, source), r.error] for r in known if r.status == "skipped"],
        "failed": [[_relative(r.source, source), r.error] for r in known if r.status == "failed"],
        "ignored": [[_relative(r.source, source), r.error] for r in known if r.status == "ignored"],
    }
