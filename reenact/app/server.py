"""The web app: a FastAPI server around :func:`reenact.pipeline.process_video` and one page.

Everything the page sends refers to inputs by an id the server gave out (an upload, or a
server path checked against the ``--allow`` folders); outputs are written only inside the
app's private temporary folder, so they can never overwrite an input. Errors the CLI
prints in one line (:class:`reenact.errors.ReenactError`) are answered as ``{"error":
message}``; anything else as a one-line internal error, its traceback logged on the server.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from reenact.config import Mode, from_dict, parse_override, replace, to_dict
from reenact.errors import ConfigError, InputError, ReenactError

from .jobs import Job, JobQueue, QueueFullError
from .media import cut_clip, outlined_png, read_frame
from .safety import (
    PathNotAllowedError,
    UploadTooLargeError,
    check_setting_paths,
    resolve_allowed,
    safe_name,
)

if TYPE_CHECKING:  # the pipeline (torch) is imported on first use: an idle app stays small
    from reenact.pipeline import PipelineConfig

log = logging.getLogger(__name__)

#: header every state-changing request must carry: a page on another site cannot add it
#: without a CORS preflight, which this server never approves
CSRF_HEADER = "x-reenact"


class EngineBusyError(ReenactError):
    """A run holds the models; a preview has to wait for it."""


@dataclass(frozen=True)
class AppSettings:
    """How the app is served. ``allow``: folders whose files may be used by path (resolved).
    ``max_upload``: bytes per upload. ``max_waiting``: runs that may wait in the queue.
    ``hosts``: Host headers accepted (DNS-rebinding guard); ``("*",)`` accepts any."""

    allow: tuple[Path, ...] = ()
    max_upload: int = 2 * 1024**3
    device: str = "auto"
    max_waiting: int = 4
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]", "testserver")
    workdir: Path | None = None


@dataclass
class Input:
    """A file the page may use: an upload or an allowed server path."""

    id: str
    kind: Literal["video", "photo"]
    path: Path
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, **self.info}


class Settings(BaseModel):
    """What the page chooses for a preview or a run."""

    input: str
    mode: Mode = "deidentify"
    identity: str | None = None
    pack: str = "tiny"
    faces: Literal["all", "largest"] = "all"
    seed: int = 0
    smoothing: Literal["one_euro", "gaussian", "none"] = "one_euro"
    advanced: str = Field("", max_length=20000)


class PreviewRequest(Settings):
    frame: int = Field(0, ge=0)


class PathRequest(BaseModel):
    path: str = Field(max_length=4096)
    kind: Literal["video", "photo"] = "video"


def pack_names() -> list[str]:
    """The model packs that ship with reenact (``reenact/packs/*.yaml``)."""
    folder = resources.files("reenact.packs")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def parse_advanced(text: str) -> dict[str, Any]:
    """``KEY=VALUE`` lines (YAML values, ``#`` comments), as ``--set`` takes them."""
    overrides: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, value = parse_override(line, f"advanced settings line {number}")
        overrides[key] = value
    return overrides


class App:
    """State of one running app: inputs, the engine lock, the run queue, the private folder."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        if settings.workdir is not None:
            settings.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.workdir = settings.workdir
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="reenact-app-"))  # mode 0700
        self.inputs: dict[str, Input] = {}
        self.engine = threading.Lock()
        self.queue = JobQueue(self.engine, settings.max_waiting)
        self._detectors: dict[tuple[Any, ...], Any] = {}

    def close(self) -> None:
        """Stop the queue (a running job is cancelled) and delete the private folder."""
        self.queue.stop()
        self.queue.thread.join(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def folder(self, kind: str) -> Path:
        path = self.workdir / kind / secrets.token_hex(8)
        path.mkdir(parents=True, mode=0o700)
        return path

    # inputs ------------------------------------------------------------------------------
    def register(self, kind: Literal["video", "photo"], path: Path, name: str) -> Input:
        """Check a file like the CLI does before any work, then give it an id."""
        from reenact.pipeline import PipelineConfig, check_inputs

        config = PipelineConfig(device=self.settings.device)
        try:
            if kind == "video":
                info = check_inputs(path, None, "deidentify", config)
                assert info is not None
                details = {"frames": info.frame_count, "width": info.width, "height": info.height,
                           "fps": info.avg_fps, "seconds": info.duration, "audio": len(info.audio_streams)}
            else:
                check_inputs(None, None, "reenact", config, identity=path)
                details = {}
        except ReenactError as exc:
            raise type(exc)(str(exc).replace(str(path), name)) from exc
        item = Input(secrets.token_hex(8), kind, path, name, details)
        self.inputs[item.id] = item
        return item

    def get_input(self, ident: str | None, kind: str) -> Input:
        item = self.inputs.get(ident or "")
        if item is None or item.kind != kind:
            raise InputError(f"no {kind} chosen (or it expired): upload one or give a path")
        return item

    # settings ----------------------------------------------------------------------------
    def config(self, req: Settings) -> PipelineConfig:
        """The pipeline settings of the page: the common choices, then the advanced lines."""
        from reenact.pipeline import PipelineConfig

        if req.pack not in pack_names():
            raise ConfigError(f"unknown model pack {req.pack!r}; packs: {', '.join(pack_names())}")
        overrides: dict[str, Any] = {"models.pack": req.pack, "faces": req.faces, "seed": req.seed,
                                     "smoothing.latent.method": req.smoothing, "device": self.settings.device}
        if req.smoothing == "none":  # as the CLI's --no-smooth: no filter anywhere
            overrides.update({"smoothing.alignment.method": "none", "smoothing.points.method": "none"})
        overrides.update(parse_advanced(req.advanced))
        config = replace(PipelineConfig(), overrides, where="settings")
        fixed = check_setting_paths(to_dict(config), self.settings.allow)
        if fixed:
            config = replace(config, fixed, where="settings")
        return from_dict(PipelineConfig, to_dict(config), where="settings")

    def sources(self, req: Settings) -> tuple[Input, Path | None, PipelineConfig]:
        video = self.get_input(req.input, "video")
        identity = None
        if req.mode == "reenact":
            if not req.identity:
                raise InputError("reenact needs an identity photo: choose the face to put on the video")
            identity = self.get_input(req.identity, "photo").path
        return video, identity, self.config(req)

    # preview -----------------------------------------------------------------------------
    def detector(self, config: PipelineConfig) -> Any:
        """The pack's face detector (for outlining faces), loaded once per settings."""
        from reenact.packs import load_pack

        key = (config.models, config.detector)
        if key not in self._detectors:
            self._detectors[key] = load_pack(config.models, "cpu", detector_settings=config.detector,
                                             need_mapper=False).detector
        return self._detectors[key]

    def preview(self, req: PreviewRequest) -> dict[str, Any]:
        """Process a short clip around ``req.frame`` with ``process_video``; before/after images."""
        from reenact.pipeline import process_video

        video, identity, config = self.sources(req)
        frames = int(video.info.get("frames") or 0)
        if frames and req.frame >= frames:
            raise InputError(f"frame {req.frame} is past the end: {video.name} has frames 0..{frames - 1}")
        if not self.engine.acquire(blocking=False):
            raise EngineBusyError("a run is using the models: preview again when it has finished, or cancel it")
        folder = self.folder("previews")
        started = time.perf_counter()
        try:
            before, index = cut_clip(video.path, folder / "clip.mp4", req.frame)
            report = process_video(folder / "clip.mp4", folder / "out.mp4", req.mode, config, identity=identity)
            after = read_frame(folder / "out.mp4", index)
            found = self.detector(config).detect(before[None])[0]
        except ReenactError as exc:
            raise type(exc)(str(exc).replace(str(folder / "clip.mp4"), f"{video.name} (frame {req.frame})")) from exc
        finally:
            self.engine.release()
            shutil.rmtree(folder, ignore_errors=True)
        boxes = np.asarray(found.boxes, dtype=np.float32).reshape(-1, 4)
        boxes = boxes[np.argsort(boxes[:, 0])] if len(boxes) else boxes
        labels = [f"face {k + 1}" for k in range(len(boxes))]
        tracks = _track_rows(report, index)
        warnings = [w for w in report.get("warnings", []) if not w.startswith("no faces found")]
        if not len(boxes) and not tracks:
            warnings.insert(0, f"no faces found in frame {req.frame}: the output is unchanged there")
        return {
            "frame": req.frame,
            "before": _data_url(outlined_png(before, boxes, labels)),
            "after": _data_url(outlined_png(after[: before.shape[0], : before.shape[1]], boxes[:, :4], labels)),
            "faces": len(boxes),
            "tracks": tracks,
            "warnings": warnings,
            "seconds": round(time.perf_counter() - started, 3),
        }

    # runs --------------------------------------------------------------------------------
    def submit(self, req: Settings) -> dict[str, Any]:
        from reenact.pipeline import process_video

        video, identity, config = self.sources(req)
        folder = self.folder("runs")
        suffix = "reenacted" if req.mode == "reenact" else "deidentified"
        output = folder / f"{Path(video.name).stem}_{suffix}.mp4"
        mode = req.mode

        def work(job: Job) -> dict[str, Any]:
            # the preview sheet shows original faces: a deidentify run writes it only with the
            # audit file; both stay in this app's private folder, shown to the user who uploaded
            report = process_video(video.path, output, mode, config, identity=identity, preview=True,
                                   audit=True, progress=job.progress)
            return {"frames": report["frames"], "fps": report["fps_processed"], "counts": report["counts"],
                    "tracks": _track_rows(report, None), "warnings": report["warnings"]}

        job = Job(secrets.token_hex(8), folder, work, label=video.name)
        try:
            ahead = self.queue.submit(job)
        except QueueFullError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return {"id": job.id, "ahead": ahead}

    def job(self, ident: str) -> Job:
        job = self.queue.jobs.get(ident)
        if job is None:
            raise InputError(f"no run {ident!r}")
        return job

    def job_state(self, job: Job) -> dict[str, Any]:
        files = {}
        if job.state == "done":
            for kind, pattern in RESULT_FILES.items():
                if next(job.folder.glob(pattern), None) is not None:
                    files[kind] = f"/api/jobs/{job.id}/files/{kind}"
        fps = job.fps()
        return {"id": job.id, "state": job.state, "done": job.done, "total": job.total,
                "fps": round(fps, 2) if fps else None, "ahead": self.queue.position(job), "error": job.error,
                "result": job.result, "files": files, "name": job.label}


#: what a finished run offers to view and download, by glob in its folder
RESULT_FILES = {"video": "*.mp4", "report": "*.report.json", "preview": "*.preview.png", "config": "*.config.yaml"}


def _track_rows(report: dict[str, Any], frame: int | None) -> list[dict[str, Any]]:
    """Per track: how its faces were handled and its identity similarity (at ``frame`` if given)."""
    rows = []
    for track_id, track in report.get("tracks", {}).items():
        key = "similarity_to_target" if "similarity_to_target" in track else "similarity_to_original"
        sims = track.get(key, {})
        at = dict((int(i), v) for i, v in sims.get("per_frame", []))
        value = at.get(frame) if frame is not None else sims.get("mean")
        synthetic = track.get("synthetic_identity") or {}
        if track.get("blurred"):
            rung = "blurred (privacy check failed)"
        elif track.get("replaced"):
            rung = "replaced" + (f" (identity draw {synthetic['draws']})" if synthetic.get("draws") else "")
        else:
            rung = "left as is"
        rows.append({"track": int(track_id), "frames": track.get("frames"), "replaced": track.get("replaced"),
                     "blurred": track.get("blurred"), "measure": key.replace("_", " "),
                     "similarity": None if value is None else round(float(value), 3), "rung": rung})
    return rows


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _status(exc: ReenactError) -> int:
    for kind, status in ((UploadTooLargeError, 413), (PathNotAllowedError, 403), (QueueFullError, 429),
                         (EngineBusyError, 409)):
        if isinstance(exc, kind):
            return status
    return 400


def create_app(settings: AppSettings = AppSettings()) -> FastAPI:
    """The FastAPI application; its private folder is removed when the app shuts down."""
    state = App(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="reenact", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.reenact = state
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.hosts))

    @app.middleware("http")
    async def require_header(request: Request, call_next: Any) -> Any:
        if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
            return JSONResponse({"error": f"refused: requests must come from the app's page ({CSRF_HEADER} header)"},
                                status_code=403)
        return await call_next(request)

    @app.exception_handler(ReenactError)
    async def reenact_error(_request: Request, exc: ReenactError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_code=_status(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error:\n%s", "".join(traceback.format_exception(exc)))
        return JSONResponse({"error": f"internal error ({type(exc).__name__}): {exc}"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        page = resources.files("reenact.app").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                           "media-src 'self'; style-src 'self' 'unsafe-inline'; "
                                           "script-src 'self' 'unsafe-inline'; connect-src 'self'"})

    @app.get("/api/options")
    def options() -> dict[str, Any]:
        return {"packs": pack_names(), "modes": ["deidentify", "reenact"], "smoothing": ["one_euro", "gaussian", "none"],
                "faces": ["all", "largest"], "max_upload": settings.max_upload,
                "allow": [str(p) for p in settings.allow]}

    @app.put("/api/upload/{kind}")
    async def upload(kind: Literal["video", "photo"], request: Request, name: str = "upload") -> dict[str, Any]:
        limit = settings.max_upload
        too_big = UploadTooLargeError(
            f"{name} is larger than the upload limit of {_size(limit)}; use a shorter clip, or start the app with "
            "--allow FOLDER and give the file's path"
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_big
        folder = state.folder("uploads")
        dest = folder / safe_name(name, "video.mp4" if kind == "video" else "photo.jpg")
        size = 0
        try:
            with open(dest, "xb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise too_big
                    f.write(chunk)
            if size == 0:
                raise InputError(f"{name} is empty")
            return state.register(kind, dest, name).public()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @app.post("/api/path")
    def use_path(req: PathRequest) -> dict[str, Any]:
        path = resolve_allowed(req.path, settings.allow, f"{req.kind} path")
        return state.register(req.kind, path, req.path).public()

    @app.post("/api/preview")
    def preview(req: PreviewRequest) -> dict[str, Any]:
        return state.preview(req)

    @app.post("/api/jobs")
    def submit(req: Settings) -> dict[str, Any]:
        return state.submit(req)

    @app.get("/api/jobs/{ident}")
    def job(ident: str) -> dict[str, Any]:
        return state.job_state(state.job(ident))

    @app.post("/api/jobs/{ident}/cancel")
    def cancel(ident: str) -> dict[str, Any]:
        job = state.job(ident)
        state.queue.cancel(job)
        return state.job_state(job)

    @app.get("/api/jobs/{ident}/files/{kind}")
    def result_file(ident: str, kind: Literal["video", "report", "preview", "config"]) -> FileResponse:
        job = state.job(ident)
        found = next(job.folder.glob(RESULT_FILES[kind]), None) if job.state == "done" else None
        if found is None:
            raise InputError(f"run {ident} has no {kind} (state: {job.state})")
        inline = kind in ("preview", "report")
        return FileResponse(found, filename=found.name, content_disposition_type="inline" if inline else "attachment")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "busy": state.queue.busy()}

    return app


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
