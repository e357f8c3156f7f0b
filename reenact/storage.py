"""Folders in object storage: fsspec URLs (``s3://bucket/in/``) as a folder run's input and output.

A URL folder run has the semantics of a local one (:func:`reenact.batch.plan_folder`):
mirrored names, sidecars beside each output, finished outputs skipped, a replaced source
noticed (by the object's size and ETag, else by its fingerprint), one bad file never stops
the rest. What differs is where the bytes are:

- the driver lists the input and output prefixes and sends :class:`~reenact.batch.UrlJob`
  objects (URLs, sizes, ETags), never local paths, so no node needs a shared disk;
- each worker (:func:`run_url_job`) fetches its source into its own bounded scratch folder
  (``REENACT_SCRATCH``, default ``$TMPDIR/reenact-scratch``), runs the local job there,
  uploads the sidecars and then the video, and removes the scratch folder. An output object
  appears only when complete: the local writer is atomic, and an upload is one PUT or a
  multipart upload completed last (s3fs aborts it on failure); a job killed mid-file leaves
  no object;
- credentials come from the standard environment and files of each node (``AWS_*``
  variables, ``~/.aws``); the driver never sends them. Errors name the URL, the error code
  and the fix in one line and never hold a secret.

Conventions: a URL is ``protocol://path`` (``file://`` and plain paths are local); the
"relative name" of an object is its key below the folder URL, with ``/`` separators.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from reenact.batch import (
    FINGERPRINT_BYTES,
    VIDEO_SUFFIXES,
    Job,
    JobResult,
    Task,
    UrlJob,
    fingerprint_of,
    tail_start,
)
from reenact.errors import InputError, ReenactError, StorageError, printable

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

#: the folder run's summary, written to the output prefix
SUMMARY_NAME = "reenact-summary.json"

#: scratch a job needs: its source, its output (at most about as large) and room for the encoder
SCRATCH_FACTOR = 3
SCRATCH_MARGIN = 64 << 20

#: what a protocol needs installed
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


def is_url(text: object) -> bool:
    """True for ``protocol://...`` other than ``file://`` (which is a local path)."""
    match = _SCHEME.match(str(text))
    return match is not None and match.group(1).lower() != "file"


def public_url(url: str) -> str:
    """``url`` without user name, password or query (where some tools put keys): safe to print."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def join(folder: str, relative: str) -> str:
    """``folder`` URL + a relative name (``/`` separators)."""
    return folder.rstrip("/") + "/" + relative.lstrip("/")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and the path inside it for ``url``.

    Raises :class:`InputError` when the protocol's package is missing (with the pip command)."""
    import fsspec

    match = _SCHEME.match(url)
    protocol = match.group(1).lower() if match else "file"
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        package = _PACKAGES.get(protocol, f"the fsspec package for {protocol}://")
        extra = " (pip install 'reenact[s3]')" if package == "s3fs" else ""
        raise InputError(f"{public_url(url)}: {protocol}:// URLs need {package}; install it{extra}") from exc
    except ValueError as exc:
        raise InputError(f"{public_url(url)}: not a usable URL ({exc})") from exc
    return fs, path.rstrip("/")


def _error_code(exc: BaseException) -> str:
    """The service's error code (``InvalidAccessKeyId``) or the exception's class name."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            if code:
                return str(code)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _explain(exc: BaseException, url: str, doing: str) -> str:
    """One line for a storage failure; names the URL, the error code and the fix, no secret."""
    where = public_url(url)
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    code = _error_code(exc)
    if names & {"NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"}:
        return (f"{where}: no credentials to {doing} it; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE with ~/.aws/credentials, on every node")
    if isinstance(exc, PermissionError) or code in {"InvalidAccessKeyId", "SignatureDoesNotMatch",
                                                     "AccessDenied", "ExpiredToken", "InvalidToken"}:
        return (f"{where}: access denied ({code}) to {doing} it; check the credentials "
                "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket's policy")
    if isinstance(exc, FileNotFoundError) or code in {"NoSuchBucket", "NoSuchKey", "404"}:
        return f"{where}: no such bucket, folder or object ({code})"
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError",
                "ServerDisconnectedError", "ReadTimeoutError", "ConnectionRefusedError"}:
        return (f"{where}: cannot reach the storage to {doing} it ({code}); check the endpoint "
                "(AWS_ENDPOINT_URL) and the network")
    return f"{where}: cannot {doing} it ({code})"


@contextlib.contextmanager
def storage_errors(url: str, doing: str) -> Iterator[None]:
    """Turn what fsspec/botocore raise while ``doing`` something to ``url`` into one
    :class:`StorageError` line (no traceback, no secret)."""
    try:
        yield
    except ReenactError:
        raise
    except Exception as exc:
        raise StorageError(_explain(exc, url, doing)) from None


@dataclass(frozen=True)
class ObjectInfo:
    """An object of a listing: its size in bytes and ETag (or None where the store has none)."""

    size: int
    etag: str | None


def _etag(info: dict[str, Any]) -> str | None:
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return str(tag).strip('"') if tag else None


def list_folder(url: str, *, must_exist: bool) -> dict[str, ObjectInfo]:
    """Every object under the folder ``url``, by relative name. The first request of a run:
    a missing or wrong credential fails here, before any work. Credentials are read afresh
    (fsspec's cached filesystems of this kind are dropped first)."""
    fs, _ = filesystem(url)
    type(fs).clear_instance_cache()
    fs, path = filesystem(url)
    with storage_errors(url, "list"):
        fs.invalidate_cache()
        if not must_exist and not fs.exists(path):
            bucket = path.split("/")[0]
            if not _is_local(fs) and not fs.exists(bucket):
                raise StorageError(f"{public_url(url)}: the bucket {printable(bucket)!r} does not exist; create it first")
            return {}
        listing = fs.find(path, detail=True)
    if must_exist and not listing:
        raise StorageError(f"{public_url(url)}: no such folder, or it is empty")
    if path in listing and (listing[path].get("type", "file") == "file"):
        raise InputError(f"{public_url(url)} is one object, not a folder: a URL run takes a folder "
                         "(give the folder that holds it)")
    found = {}
    for name, info in listing.items():
        if info.get("type", "file") != "file":
            continue
        relative = name[len(path):].lstrip("/") if name.startswith(path) else posixpath.basename(name)
        found[relative] = ObjectInfo(int(info.get("size") or 0), _etag(info))
    return found


@dataclass
class UrlPlan:
    """A URL folder run: jobs to run, results already known, and the finished outputs
    (relative output name -> source listing entry) whose freshness the caller judges."""

    jobs: list[UrlJob]
    known: list[JobResult]
    done: list[tuple[UrlJob, JobResult]]


def plan_url_folder(input_url: str, output_url: str, *, overwrite: bool = False, suffix: str = ".mp4") -> UrlPlan:
    """Mirror the folder ``input_url`` into ``output_url`` like :func:`reenact.batch.plan_folder`.

    Lists both prefixes (credentials checked here: :class:`StorageError` before any work).
    A video whose output object exists is in ``done`` (with its ``skipped`` result) unless
    ``overwrite``; sidecars left without their video (an upload cut off between them) are
    replaced by the re-run.
    """
    if input_url.rstrip("/") == output_url.rstrip("/") or output_url.startswith(input_url.rstrip("/") + "/"):
        raise InputError(f"output folder {public_url(output_url)} is inside the input folder "
                         f"{public_url(input_url)}: choose an output folder outside it")
    sources = list_folder(input_url, must_exist=True)
    outputs = list_folder(output_url, must_exist=False)
    plan = UrlPlan([], [], [])
    claimed: dict[str, str] = {}
    for relative in sorted(sources):
        info = sources[relative]
        source = join(input_url, relative)
        if posixpath.splitext(relative)[1].lower() not in VIDEO_SUFFIXES:
            if relative != SUMMARY_NAME:
                plan.known.append(JobResult(source, None, "ignored", error="not a video file extension"))
            continue
        out_relative = posixpath.splitext(relative)[0] + suffix
        output = join(output_url, out_relative)
        if out_relative in claimed:
            plan.known.append(JobResult(source, output, "failed", error=(
                f"its output {posixpath.basename(out_relative)} would be the output of "
                f"{posixpath.basename(claimed[out_relative])} too; rename one of them")))
            continue
        claimed[out_relative] = relative
        job = UrlJob(source, output, info.size, info.etag)
        if out_relative in outputs and not overwrite:
            plan.done.append((job, JobResult(source, output, "skipped", error="output exists (use --overwrite)")))
            continue
        plan.jobs.append(job)
    return plan


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def _ensure_folder(fs: Any, folder: str) -> None:
    """A local output folder must exist before a file is put in it (object stores have none)."""
    if _is_local(fs):
        fs.makedirs(folder, exist_ok=True)


def read_bytes(url: str) -> bytes:
    """The whole object at ``url`` (a small one: a report)."""
    fs, path = filesystem(url)
    with storage_errors(url, "read"):
        return bytes(fs.cat_file(path))


def write_bytes(url: str, data: bytes) -> None:
    """Write the object at ``url`` in one request (it appears whole or not at all)."""
    fs, path = filesystem(url)
    with storage_errors(url, "write"):
        _ensure_folder(fs, posixpath.dirname(path))
        fs.pipe_file(path, data)


def url_fingerprint(url: str, size: int) -> str:
    """:func:`reenact.batch.source_fingerprint` of an object, read by two ranged requests."""
    fs, path = filesystem(url)
    with storage_errors(url, "read"):
        head = bytes(fs.cat_file(path, start=0, end=min(size, FINGERPRINT_BYTES)))
        start = tail_start(size)
        tail = bytes(fs.cat_file(path, start=start, end=min(size, start + FINGERPRINT_BYTES))) if start else b""
    return fingerprint_of(size, head, tail)


def source_changed(job: UrlJob, report: dict[str, Any]) -> bool:
    """True when the source of ``job`` is not the object its output's report was made from:
    the size and ETag recorded by :func:`run_url_job` first, else the content fingerprint."""
    recorded = report.get("source_object") or {}
    if recorded.get("etag") and job.etag and recorded.get("size") == job.size:
        if recorded["etag"] == job.etag:
            return False
    return bool(report.get("source_fingerprint") != url_fingerprint(job.source, job.size))


# --- the worker side ------------------------------------------------------------------------


def scratch_root() -> Path:
    """This node's scratch folder: ``REENACT_SCRATCH`` or ``$TMPDIR/reenact-scratch``."""
    return Path(os.environ.get("REENACT_SCRATCH") or Path(tempfile.gettempdir()) / "reenact-scratch")


def node_name() -> str:
    """This machine's host name, plus the Ray node id when running in a Ray worker."""
    name = socket.gethostname()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):
            name += "/" + ray.get_runtime_context().get_node_id()[:12]
    return name


def _clear_abandoned(root: Path) -> None:
    """Remove scratch folders of jobs whose process is gone (a killed worker's leftovers)."""
    for folder in root.glob("job-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _scratch(size: int) -> Path:
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    _clear_abandoned(root)
    need = size * SCRATCH_FACTOR + SCRATCH_MARGIN
    free = shutil.disk_usage(root).free
    if free < need:
        raise StorageError(f"the scratch folder of node {node_name()} has {free >> 20} MiB free, this file needs "
                           f"{need >> 20} MiB: set REENACT_SCRATCH to a larger disk on that node")
    return Path(tempfile.mkdtemp(prefix=f"job-{os.getpid()}-", dir=root))


def _finish_report(report: Path, job: UrlJob, local: dict[str, str]) -> None:
    """Record the source object's size and ETag in the output's report (freshness on
    re-runs) and put the URLs (or names) in place of this node's scratch paths."""
    if not report.is_file():
        return
    text = report.read_text(encoding="utf-8")
    for path, name in local.items():
        text = text.replace(json.dumps(path)[1:-1], json.dumps(name)[1:-1])
    data = json.loads(text)
    data["source_object"] = {"size": job.size, "etag": job.etag}
    part = report.with_name(report.name + ".part")
    part.write_text(json.dumps(data, indent=1), encoding="utf-8")
    part.replace(report)


def run_url_job(job: UrlJob, *, task: Task, prepare: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run a local ``task`` on one object, on whichever node this runs on.

    1. make a scratch folder for this job (bounded: refused when the disk cannot hold it);
    2. fetch the source (its size and ETag must still be those listed);
    3. ``prepare()``: the models this node needs, verified by hash (see ``reenact.packs.nodes``);
    4. ``task(Job(local source, local output))``: the local pipeline, atomic local writes
       (what else the task needs, such as the identity photo, travels inside it: the run plan);
    5. upload the sidecars, then the video last: its object appearing means the file is done;
    6. remove the scratch folder, whatever happened.

    Returns the task's details plus ``node``, ``fetch_s``, ``prepare_s``, ``task_s``, ``upload_s``,
    ``bytes_in``/``bytes_out`` and ``models`` (how each model was checked on this node).
    Error messages name the URLs, never the scratch paths.
    """
    work = _scratch(job.size)
    local_in = work / "in" / posixpath.basename(job.source)
    local_out = work / "out" / posixpath.basename(job.output)
    try:
        local_in.parent.mkdir()
        local_out.parent.mkdir()
        # 2. fetch
        started = time.perf_counter()
        src_fs, src_path = filesystem(job.source)
        with storage_errors(job.source, "read"):
            info = src_fs.info(src_path)
            if int(info.get("size") or 0) != job.size or (job.etag and _etag(info) != job.etag):
                raise StorageError(f"{public_url(job.source)} was replaced during the run (its size or ETag "
                                   "changed since it was listed); run again")
            src_fs.get_file(src_path, str(local_in))
        if local_in.stat().st_size != job.size:
            raise StorageError(f"{public_url(job.source)}: fetched {local_in.stat().st_size} of {job.size} bytes; "
                               "run again")
        fetch_s = time.perf_counter() - started
        # 3. models
        started = time.perf_counter()
        models = prepare() if prepare is not None else {}
        prepare_s = time.perf_counter() - started
        # 4. the local job
        started = time.perf_counter()
        details = dict(task(Job(local_in, local_out)) or {})
        task_s = time.perf_counter() - started
        if not local_out.is_file():
            raise StorageError(f"{public_url(job.output)}: the job wrote no output")
        # 5. upload: sidecars first, the video last
        scrub = {str(local_in): public_url(job.source), str(local_out): public_url(job.output),
                 str(work): "<scratch>"}
        _finish_report(local_out.with_name(local_out.name + ".report.json"), job, scrub)
        sidecars = sorted(p for p in local_out.parent.iterdir()
                          if p.is_file() and p.name.startswith(local_out.name + ".") and not p.name.endswith(".part"))
        started = time.perf_counter()
        out_fs, out_path = filesystem(job.output)
        folder = posixpath.dirname(out_path)
        with storage_errors(job.output, "write"):
            _ensure_folder(out_fs, folder)
        sent = 0
        for path in [*sidecars, local_out]:
            with storage_errors(job.output, "write"):
                out_fs.put_file(str(path), posixpath.join(folder, path.name))
            sent += path.stat().st_size
        details.update(node=node_name(), fetch_s=round(fetch_s, 3), prepare_s=round(prepare_s, 3),
                       task_s=round(task_s, 3), upload_s=round(time.perf_counter() - started, 3),
                       bytes_in=job.size, bytes_out=sent, models=models)
        return details
    except Exception as exc:
        # the scratch paths mean nothing to the user (and are not theirs to see): name the URLs
        text = str(exc).replace(str(local_in), job.source).replace(str(local_out), job.output)
        exc.args = (text.replace(str(work), "<scratch>"),)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
