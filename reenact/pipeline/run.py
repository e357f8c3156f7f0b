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
10. check identities of the output faces and climb the privacy ladder where one fails
    (:mod:`reenact.pipeline.privacy`; ``deidentify --method blur|pixelate|solid`` skip 5-8
    and load no generator or mapper)
11. encode (writer thread; audio copied; atomic) and write the report beside the output; with
    ``audit`` the per-frame similarities, absolute paths and preview go to an audit file
    (``OUTPUT.audit.json``, mode 0600), never into the default report

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
import yaml

from reenact.batch import Job, source_fingerprint
from reenact.config import to_dict
from reenact.device import resolve_device
from reenact.errors import ConfigError, InputError, NoFaceError, OutputExistsError
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
from reenact.packs import LoadedPack, check_pack_for_mode, load_pack, registry
from reenact.packs import _face_models as pack_face_models
from reenact.pipeline.identity import ClassicRedaction, classic_method, policy_class
from reenact.pipeline.report import model_paths, public_config
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

    def get(self, config: PipelineConfig, device: torch.device, faces_only: bool = False) -> LoadedPack:
        """The pack for ``config`` on ``device``; its detector applies ``detector.score_threshold``.

        ``faces_only``: only the face models (detector, identity), no generator or mapper
        (``deidentify --method blur|pixelate|solid``).
        """
        need_mapper = config.mapper == "trained"
        explicit = config.detector.score_threshold  # None: the mode's default (FaceReplacer resolves it)
        load_threshold = min(DETECTOR_LOAD_THRESHOLD if explicit is None else explicit, DETECTOR_LOAD_THRESHOLD)
        # every face size: deidentify redacts faces too small to replace (FaceReplacer applies the limit)
        detector_settings = dataclasses.replace(config.detector, score_threshold=load_threshold, min_face_size=0.0)
        key = (config.models, detector_settings, str(device), need_mapper, faces_only)
        if key not in self._packs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                if faces_only:
                    detector, identity, threshold = pack_face_models(
                        config.models, registry.get_pack(config.models.pack), detector_settings)
                    self._packs[key] = LoadedPack(
                        name=config.models.pack, detector=detector, identity=identity, generator=None,  # type: ignore[arg-type]
                        attribute_encoder=None, mapper=None, trained=True, match_threshold=threshold, device=device)
                else:
                    self._packs[key] = load_pack(config.models, device=device, detector_settings=detector_settings,
                                                 need_mapper=need_mapper)
            self.loads += 1
        pack = self._packs[key]
        return dataclasses.replace(pack, detector=ThresholdedDetector(pack.detector, config.detector.threshold,
                                                                       config.detector.min_face_size))


_PROCESS_PACKS = PackCache()


def cached_pack(config: PipelineConfig, device: torch.device, cache: PackCache | None = None,
                faces_only: bool = False) -> LoadedPack:
    """The pack for ``config`` from ``cache`` (default: one cache per process, so API calls and
    folder runs in one process share loaded models)."""
    return (cache or _PROCESS_PACKS).get(config, device, faces_only)


def faces_only_models(pack: LoadedPack) -> dict[str, Any]:
    """The report's models entry of a faces-only pack (no generator or mapper loaded)."""
    return {"pack": pack.name, "detector": pack.detector.name, "identity": pack.identity.name,
            "identity_match_threshold": pack.match_threshold, "generator": None}


def report_paths(output: Path) -> dict[str, Path]:
    """Files written beside an output video: its whole name plus ``.report.json``,
    ``.config.yaml`` and ``.preview.png`` (``o.mkv`` -> ``o.mkv.report.json``), so two outputs
    in one folder (``o.mkv``, ``o.mov``) never share a sidecar."""
    output = Path(output)
    return {
        "report": output.with_name(f"{output.name}.report.json"),
        "config": output.with_name(f"{output.name}.config.yaml"),
        "preview": output.with_name(f"{output.name}.preview.png"),
        "audit": output.with_name(f"{output.name}.audit.json"),
    }


def check_sidecars(output: Path, overwrite: bool, preview: bool = False, audit: bool = False) -> None:
    """Refuse, like the video itself, sidecar files of ``output`` that exist (without ``overwrite``);
    the preview and the audit file only when this run writes them."""
    if overwrite:
        return
    for kind, path in report_paths(output).items():
        if (kind not in ("preview", "audit") or {"preview": preview, "audit": audit}[kind]) and path.exists():
            raise OutputExistsError(f"{path}: already exists (the {kind} of {output.name}); "
                                    "pass --overwrite to replace it")


def check_inputs(
    source: Path | None,
    output: Path | None,
    mode: Mode,
    config: PipelineConfig,
    *,
    identity: str | Path | None = None,
    overwrite: bool = False,
    preview: bool = False,
    audit: bool = False,
) -> VideoInfo | None:
    """Step 1: everything that can be checked before any model is loaded (also for --dry-run).

    The video is probed (when ``source`` is a file), the output checked, the identity and
    reference photos read, the pack name, device and mapper requirements validated. Returns
    the video's info, or None when ``source`` is None (a folder run checks each file later).
    """
    info = probe(source) if source is not None else None
    if source is not None and output is not None:
        check_output_path(source, output, overwrite)
        check_sidecars(output, overwrite, preview, audit)
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

    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give one photo file")
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
    audit: bool = False,
) -> dict[str, Any]:
    """Run the pipeline on one video and write the output, its report and resolved config.

    Returns the report (also written as JSON beside the output). Raises a ReenactError
    naming the problem before any work when the inputs cannot be used. ``packs``: where
    loaded models are kept between videos (default: one cache per process). ``audit``: also
    write ``OUTPUT.audit.json`` (mode 0600: per-frame similarities, absolute paths, identity
    codes, the preview's path); a deidentify preview (original frames) is written only then.
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    # 1. check inputs
    info = check_inputs(source, output, mode, config, identity=identity, overwrite=overwrite, preview=preview,
                        audit=audit)
    assert info is not None
    # 2. models, identity policy, face selection
    classic = classic_method(mode, config.deidentify.method)
    pack = check_photo_faces(config, identity, packs, faces_only=classic)
    threshold = identity_threshold(config, pack)
    warnings: list[str] = []
    if classic:
        policy: Any = ClassicRedaction(config.deidentify.method)
    else:
        policy = policy_class(mode).for_run(pack, config, threshold, identity, warnings)
    if preview and policy.private and not audit:
        preview = False
        warnings.append("--preview shows the original faces: a deidentify run writes it only with --audit")
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

    chunk_size = config.read.frames_per_chunk(info.width, info.height)  # bounded in bytes too
    with open_video(source, chunk_size=chunk_size, backend=config.read.backend) as reader:
        encode = dataclasses.asdict(config.encode)
        if encode["metadata"] == "auto":  # deidentify strips what names the person; reenact keeps
            encode["metadata"] = "strip" if policy.private else "keep"
        with VideoWriter(output, info, source=source, overwrite=overwrite, **encode) as writer:
            stream = run_stream(reader, transform, writer, queue_bytes=config.read.queue_bytes)

    # 12. report
    run = replacer.report
    # an untrained pack is logged once when it loads; the report's `models` says `trained: false`
    models = faces_only_models(pack) if classic else pack.describe()
    report = run.to_dict(
        mode=mode, source=source, output=output, models=models, config=config, stream=stream,
        video={"width": info.width, "height": info.height, "fps": info.avg_fps, "frame_count": info.frame_count},
        threshold=threshold,
        mapper={"kind": config.mapper, "tracks": {str(k): v for k, v in replacer.mapping.report().items()}
                if replacer.mapping is not None else {}},
        seconds=time.perf_counter() - started,
    )
    photo = _photo_record(identity)
    report["identity_photo"] = {"name": Path(photo["path"]).name, "sha256": photo["sha256"]} if photo else None
    report["source_fingerprint"] = source_fingerprint(source)
    report["warnings"].extend(warnings)
    if policy.private:
        report["stripped"] = {**writer.stripped, "audio_kept": writer.audio_kept}
        if writer.audio_kept:
            report["warnings"].append(
                f"the audio ({', '.join(writer.audio_kept)}) was kept as it is: a voice can identify the "
                "person; pass --audio drop to leave it out"
            )
    if reference is not None:
        report["reference_similarity"] = {str(k): v for k, v in sorted(replacer.select.similarity.items())}
        nobody = replacer.select.warning()
        if nobody is not None:
            report["warnings"].append(nobody)
    failed = run.failed_identity_tracks()
    if failed:
        report["warnings"].append(
            f"{len(failed)} track(s) got no synthetic identity that passes the privacy check; their faces were "
            "redacted (fail-closed). With an ONNX identity model, check --identity-mean/--identity-std"
        )
    for warning in report["warnings"]:
        log.warning("%s: %s", source.name, warning)
    if run.counts["frames_with_faces"] == 0:
        log.warning("%s: no faces found; the output is the input re-encoded", source)
        report["warnings"].append("no faces found: the output is the input re-encoded")
    paths = report_paths(output)
    atomic_write_text(paths["report"], json.dumps(report, indent=2))
    # the written config names the photos and model files, not their folders (the audit file has them)
    atomic_write_text(paths["config"], yaml.safe_dump(public_config(config), sort_keys=False))
    if preview:
        _write_preview(replacer.kept, paths["preview"], mode=0o600 if policy.private else 0o644)
    if audit:
        record = run.audit_dict(source=source, output=output)
        record["identity_photo"] = photo
        record["faces"] = config.faces
        record["model_paths"] = model_paths(config)
        record["preview"] = str(paths["preview"].absolute()) if preview else None
        with atomic_path(paths["audit"], mode=0o600) as tmp:
            tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return report


def dump_yaml_text(config: PipelineConfig) -> str:
    """The resolved settings as YAML text (written atomically beside the output)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def check_photo_faces(config: PipelineConfig, identity: str | Path | None,
                      packs: PackCache | None = None, faces_only: bool = False) -> LoadedPack:
    """The check a run makes once the models are loaded: the identity photo and the
    ``reference:`` photo each show a face (NoFaceError otherwise). Returns the loaded pack
    (cached, so a run after ``--dry-run`` in one process does not load it again)."""
    pack = cached_pack(config, resolve_device(config.device), packs, faces_only)
    photos = [("identity photo (--identity)", identity)]
    if config.faces.startswith("reference:"):
        photos.append(("reference photo (--faces reference:...)", config.faces.split(":", 1)[1]))
    for what, photo in photos:
        if photo is None:
            continue
        try:
            identity_from_photo(photo, pack.detector, pack.identity)
        except NoFaceError as exc:
            raise NoFaceError(f"{what}: {exc}") from exc
    return pack


def _photo_record(photo: str | Path | None) -> dict[str, str] | None:
    """Which identity photo a run used (path and content hash), so re-runs can spot a change."""
    if photo is None:
        return None
    return {"path": str(Path(photo).absolute()), "sha256": hashlib.sha256(Path(photo).read_bytes()).hexdigest()}


def stale_reason(output: Path, mode: Mode, config: PipelineConfig, identity: str | Path | None,
                 source: Path | None = None) -> str | None:
    """Why an existing output was made differently from what this run would make, or None.

    Compares the report written beside it: mode, resolved settings, identity photo and
    the source's fingerprint (:func:`reenact.batch.source_fingerprint`), so a different clip
    put in place under the same name is not taken for done.
    """
    path = report_paths(output)["report"]
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no readable report beside it"
    if report.get("mode") != mode:
        return f"it was made by {report.get('mode')}"
    if report.get("config") not in (public_config(config), to_dict(config)):
        return "it was made with other settings"
    made_with = (report.get("identity_photo") or {}).get("sha256")
    wanted = (_photo_record(identity) or {}).get("sha256")
    if made_with != wanted:
        return "it was made with another identity photo"
    if source is not None and report.get("source_fingerprint") != source_fingerprint(source):
        return "its source file changed since (another clip under the same name)"
    return None


def _preview_frames(info: VideoInfo, count: int = 4) -> set[int]:
    n = max(info.frame_count, 1)
    return {min(n - 1, round(k * (n - 1) / max(count - 1, 1))) for k in range(count)}


def _write_preview(kept: dict[int, tuple[torch.Tensor, torch.Tensor]], path: Path, mode: int = 0o644) -> None:
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
    with atomic_path(path, mode=mode) as tmp:
        image.save(tmp, format="PNG")


def video_job(
    job: Job, *, mode: Mode, config: PipelineConfig, identity: str | Path | None, overwrite: bool, preview: bool,
    audit: bool = False,
) -> dict[str, Any]:
    """Folder runs: one video as a batch task (picklable through functools.partial); the
    models are loaded once per worker process and reused for each of its videos."""
    report = process_video(job.source, job.output, mode, config, identity=identity, overwrite=overwrite,
                           preview=preview, audit=audit)
    return {"frames": report["frames"], "tracks": len(report["tracks"]), "counts": report["counts"]}
