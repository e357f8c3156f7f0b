"""The video pipeline: one stream from decoded frames to the encoded output, in numbered steps.

1. check inputs (video readable, output writable, identity photo has a face) before any work
2. load the models (once per process for a folder run: :class:`PackCache`) and the identity
   policy of the mode (:mod:`reenact.pipeline.identity`)
3. decode in chunks (reader thread; :mod:`reenact.io`)
4. detect, track and select faces (:mod:`reenact.faces`, :mod:`reenact.pipeline.selection`)
5. smooth each track's alignment transform and align FFHQ-style crops
6. map crop and identity code to a latent per face (:mod:`reenact.pipeline.mapping`)
7. smooth each track's latent over time (:mod:`reenact.temporal`)
8. synthesize the faces with the generator
9. blend them back into the frames (:mod:`reenact.blend`)
10. check identities of the output faces and redact what fails (:mod:`reenact.pipeline.privacy`)
11. encode (writer thread; audio copied; atomic) and write the report beside the output

Steps 4-10 are :class:`reenact.pipeline.stream.FaceReplacer`. Memory is bounded by the chunk
size and the tracker and smoother delays, never by video length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from reenact.batch import Job
from reenact.config import dump_yaml, to_dict
from reenact.device import resolve_device
from reenact.errors import ConfigError, InputError
from reenact.faces import identity_from_photo
from reenact.io import (
    FrameChunk,
    VideoInfo,
    VideoWriter,
    check_output_path,
    open_video,
    probe,
    run_stream,
)
from reenact.io.atomic import atomic_path, atomic_write_text
from reenact.packs import LoadedPack, check_pack_for_mode, load_pack
from reenact.pipeline.identity import policy_class
from reenact.pipeline.settings import Mode, PipelineConfig
from reenact.pipeline.stream import FaceReplacer, ThresholdedDetector, identity_threshold

log = logging.getLogger(__name__)

DETECTOR_LOAD_THRESHOLD = 0.2
"""Score threshold the detector model is loaded with; ``detector.score_threshold`` at or above
it is applied to the detections (no reload). A lower setting loads the model with it."""


class PackCache:
    """Loaded model packs keyed only by what changes the models (pack, model files, detector
    size and NMS, device, whether the trained mapper is needed), so a folder run loads them
    once and a new detector threshold never reloads them."""

    def __init__(self) -> None:
        self._packs: dict[tuple[Any, ...], LoadedPack] = {}
        self.loads = 0

    def get(self, config: PipelineConfig, device: torch.device) -> LoadedPack:
        """The pack for ``config`` on ``device``; its detector applies ``detector.score_threshold``."""
        need_mapper = config.mapper == "trained"
        explicit = config.detector.score_threshold  # None: the mode's default (FaceReplacer resolves it)
        load_threshold = min(DETECTOR_LOAD_THRESHOLD if explicit is None else explicit, DETECTOR_LOAD_THRESHOLD)
        # every face size: deidentify redacts faces too small to replace (FaceReplacer applies the limit)
        detector_settings = dataclasses.replace(config.detector, score_threshold=load_threshold, min_face_size=0.0)
        key = (config.models, detector_settings, str(device), need_mapper)
        if key not in self._packs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self._packs[key] = load_pack(config.models, device=device, detector_settings=detector_settings,
                                             need_mapper=need_mapper)
            self.loads += 1
        pack = self._packs[key]
        return dataclasses.replace(pack, detector=ThresholdedDetector(pack.detector, config.detector.threshold,
                                                                       config.detector.min_face_size))


_PROCESS_PACKS = PackCache()


def cached_pack(config: PipelineConfig, device: torch.device, cache: PackCache | None = None) -> LoadedPack:
    """The pack for ``config`` from ``cache`` (default: one cache per process, so API calls and
    folder runs in one process share loaded models)."""
    return (cache or _PROCESS_PACKS).get(config, device)


def report_paths(output: Path) -> dict[str, Path]:
    """Files written beside an output video."""
    stem = output.with_suffix("")
    return {
        "report": Path(f"{stem}.report.json"),
        "config": Path(f"{stem}.config.yaml"),
        "preview": Path(f"{stem}.preview.png"),
    }


def check_inputs(
    source: Path | None,
    output: Path | None,
    mode: Mode,
    config: PipelineConfig,
    *,
    identity: str | Path | None = None,
    overwrite: bool = False,
) -> VideoInfo | None:
    """Step 1: everything that can be checked before any model is loaded (also for --dry-run).

    The video is probed (when ``source`` is a file), the output checked, the identity and
    reference photos read, the pack name, device and mapper requirements validated. Returns
    the video's info, or None when ``source`` is None (a folder run checks each file later).
    """
    info = probe(source) if source is not None else None
    if source is not None and output is not None:
        check_output_path(source, output, overwrite)
    policy_class(mode).check_request(identity)
    if identity is not None:
        _check_photo(Path(identity), "identity photo (--identity)")
    if config.faces.startswith("reference:"):
        _check_photo(Path(config.faces.split(":", 1)[1]), "reference photo (--faces reference:...)")
    check_pack_for_mode(config.models.pack, mode)  # an unknown pack, or one that cannot serve this mode
    resolve_device(config.device)
    if config.mapper == "optimize":
        if config.models.identity_model is None and not (
            config.models.pack == "full" or config.models.faces_backend == "insightface"
        ):
            raise ConfigError(
                "--mapper optimize needs a differentiable ONNX identity model: give --identity-model "
                "with --identity-mean/--identity-std, or use the insightface face backend"
            )
        if not config.optimize.landmark_model.path and config.optimize.weights.landmarks > 0:
            raise ConfigError("--mapper optimize needs a 68-point landmark ONNX model: give --landmark-model")
    return info


def _check_photo(path: Path, what: str) -> None:
    from reenact.io import read_image

    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        read_image(path)
    except InputError as exc:
        raise InputError(f"{what} {path} cannot be used: {exc}") from exc


def process_video(
    source: str | Path,
    output: str | Path,
    mode: Mode,
    config: PipelineConfig = PipelineConfig(),
    *,
    identity: str | Path | None = None,
    overwrite: bool = False,
    preview: bool = False,
    progress: Callable[[int, int], None] | None = None,
    packs: PackCache | None = None,
) -> dict[str, Any]:
    """Run the pipeline on one video and write the output, its report and resolved config.

    Returns the report (also written as JSON beside the output). Raises a ReenactError
    naming the problem before any work when the inputs cannot be used. ``packs``: where
    loaded models are kept between videos (default: one cache per process).
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    # 1. check inputs
    info = check_inputs(source, output, mode, config, identity=identity, overwrite=overwrite)
    assert info is not None
    # 2. models, identity policy, face selection
    pack = cached_pack(config, resolve_device(config.device), packs)
    threshold = identity_threshold(config, pack)
    warnings: list[str] = []
    policy = policy_class(mode).for_run(pack, config, threshold, identity, warnings)
    reference = None
    if config.faces.startswith("reference:"):
        reference = identity_from_photo(config.faces.split(":", 1)[1], pack.detector, pack.identity).embedding
    keep = _preview_frames(info) if preview else set()
    replacer = FaceReplacer(pack, config, mode, info.avg_fps or 25.0, reference=reference, keep_frames=keep,
                            policy=policy)

    # 3-11. decode -> faces -> encode, one stream
    def transform(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for chunk in replacer(chunks):
            if progress is not None:
                progress(chunk.start_index + len(chunk), info.frame_count)
            yield chunk

    with open_video(source, chunk_size=config.read.chunk_size, backend=config.read.backend) as reader:
        with VideoWriter(output, info, source=source, overwrite=overwrite, **dataclasses.asdict(config.encode)) as writer:
            stream = run_stream(reader, transform, writer)

    # 12. report
    run = replacer.report
    if not pack.trained:
        run.warn(f"model pack {pack.name!r} is untrained: a smoke test, not a result")
    report = run.to_dict(
        mode=mode, source=source, output=output, models=pack.describe(), config=config, stream=stream,
        video={"width": info.width, "height": info.height, "fps": info.avg_fps, "frame_count": info.frame_count},
        threshold=threshold,
        mapper={"kind": config.mapper, "tracks": {str(k): v for k, v in replacer.mapping.report().items()}},
        seconds=time.perf_counter() - started,
    )
    report["identity_photo"] = _photo_record(identity)
    report["warnings"].extend(warnings)
    if reference is not None:
        report["reference_similarity"] = {str(k): v for k, v in sorted(replacer.select.similarity.items())}
        nobody = replacer.select.warning()
        if nobody is not None:
            report["warnings"].append(nobody)
    failed = run.failed_identity_tracks()
    if failed:
        report["warnings"].append(
            f"{len(failed)} track(s) got no synthetic identity that passes the privacy check; their faces were "
            "blurred (fail-closed). With an ONNX identity model, check --identity-mean/--identity-std"
        )
    for warning in report["warnings"]:
        log.warning("%s: %s", source.name, warning)
    if run.counts["frames_with_faces"] == 0:
        log.warning("%s: no faces found; the output is the input re-encoded", source)
        report["warnings"].append("no faces found: the output is the input re-encoded")
    paths = report_paths(output)
    atomic_write_text(paths["report"], json.dumps(report, indent=2))
    dump_yaml(config, paths["config"])
    if preview:
        _write_preview(replacer.kept, paths["preview"])
        report["preview"] = str(paths["preview"])
    return report


def _photo_record(photo: str | Path | None) -> dict[str, str] | None:
    """Which identity photo a run used (path and content hash), so re-runs can spot a change."""
    if photo is None:
        return None
    return {"path": str(Path(photo).absolute()), "sha256": hashlib.sha256(Path(photo).read_bytes()).hexdigest()}


def stale_reason(output: Path, mode: Mode, config: PipelineConfig, identity: str | Path | None) -> str | None:
    """Why an existing output was made differently from what this run would make, or None.

    Compares the report written beside it: mode, resolved settings and identity photo.
    """
    path = report_paths(output)["report"]
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no readable report beside it"
    if report.get("mode") != mode:
        return f"it was made by {report.get('mode')}"
    if report.get("config") != to_dict(config):
        return "it was made with other settings"
    made_with = (report.get("identity_photo") or {}).get("sha256")
    wanted = (_photo_record(identity) or {}).get("sha256")
    if made_with != wanted:
        return "it was made with another identity photo"
    return None


def _preview_frames(info: VideoInfo, count: int = 4) -> set[int]:
    n = max(info.frame_count, 1)
    return {min(n - 1, round(k * (n - 1) / max(count - 1, 1))) for k in range(count)}


def _write_preview(kept: dict[int, tuple[torch.Tensor, torch.Tensor]], path: Path) -> None:
    """A PNG sheet: one row per kept frame, before | after."""
    from PIL import Image

    if not kept:
        return
    rows = [torch.cat([before, after], dim=1) for _i, (before, after) in sorted(kept.items())]
    width = max(r.shape[1] for r in rows)
    sheet = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[1])) for r in rows], dim=0)
    scale = min(1.0, 1600 / max(sheet.shape[0], sheet.shape[1]))
    image = Image.fromarray(sheet.numpy())
    if scale < 1:
        image = image.resize((max(1, math.floor(image.width * scale)), max(1, math.floor(image.height * scale))))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def video_job(
    job: Job, *, mode: Mode, config: PipelineConfig, identity: str | Path | None, overwrite: bool, preview: bool
) -> dict[str, Any]:
    """Folder runs: one video as a batch task (picklable through functools.partial); the
    models are loaded once per worker process and reused for each of its videos."""
    report = process_video(job.source, job.output, mode, config, identity=identity, overwrite=overwrite,
                           preview=preview)
    return {"frames": report["frames"], "tracks": len(report["tracks"]), "counts": report["counts"]}
