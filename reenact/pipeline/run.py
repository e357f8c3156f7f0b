"""The video pipeline: one stream from decoded frames to the encoded output, in numbered steps.

0. plan the run: every decision made once (:func:`reenact.pipeline.plan.plan_run`: mode,
   policy, thresholds, cadence, device, the photos read once, output names)
1. check inputs (video readable, output writable, identity photo has a face) before any work
2. load the models (once per process for a folder run: :class:`PackCache`), embed each photo
   once, and build the identity policy of the plan (:mod:`reenact.pipeline.identity`)
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

Steps 4-10 are :class:`reenact.pipeline.stream.FaceReplacer` over the plan. Memory is bounded by the chunk
size and the tracker and smoother delays, never by video length.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from reenact.batch import Job, source_fingerprint
from reenact.config import to_dict
from reenact.errors import NoFaceError, OutputExistsError
from reenact.faces import FaceDetector, identity_from_photo
from reenact.faces.early import EarlyDetections
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
from reenact.packs import LoadedPack, load_pack, registry
from reenact.packs import _face_models as pack_face_models
from reenact.pipeline.plan import OutputNames, Photo, RunPlan, plan_run
from reenact.pipeline.preview_sheet import face_labels, write_sheet
from reenact.pipeline.report import model_paths, public_config
from reenact.pipeline.settings import Mode, PipelineConfig
from reenact.pipeline.stream import FaceReplacer, ThresholdedDetector
from reenact.summary import face_counts

log = logging.getLogger(__name__)


class PackCache:
    """Loaded model packs keyed only by what changes the models (pack, model files, detector
    size and NMS, the plan's load threshold, device, whether the trained mapper is needed), so
    a folder run loads them once and a new detector threshold never reloads them."""

    def __init__(self) -> None:
        self._packs: dict[tuple[Any, ...], LoadedPack] = {}
        self.loads = 0

    def get(self, plan: RunPlan, detector: FaceDetector | None = None) -> LoadedPack:
        """The pack for ``plan`` on its device; its detector applies the plan's photo threshold
        (the video's is applied by :class:`FaceReplacer`). A classic redaction loads only the
        face models (detector, identity), no generator or mapper. ``detector``: one made
        already, taken by a faces-only pack that would make the same
        (:func:`reenact.packs._face_models`)."""
        config, device, faces_only = plan.config, plan.device, plan.classic
        need_mapper = config.mapper == "trained"
        # every face size: deidentify redacts faces too small to replace (FaceReplacer applies the limit)
        detector_settings = dataclasses.replace(config.detector, score_threshold=plan.load_threshold,
                                                min_face_size=0.0)
        key = (config.models, detector_settings, str(device), need_mapper, faces_only)
        if key not in self._packs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                if faces_only:
                    detector, identity, threshold = pack_face_models(
                        config.models, registry.get_pack(config.models.pack), detector_settings, detector)
                    self._packs[key] = LoadedPack(
                        name=config.models.pack, detector=detector, identity=identity, generator=None,  # type: ignore[arg-type]
                        attribute_encoder=None, mapper=None, trained=True, match_threshold=threshold, device=device)
                else:
                    self._packs[key] = load_pack(config.models, device=device, detector_settings=detector_settings,
                                                 need_mapper=need_mapper)
            self.loads += 1
        pack = self._packs[key]
        return dataclasses.replace(pack, detector=ThresholdedDetector(pack.detector, plan.photo_threshold,
                                                                       config.detector.min_face_size))


_PROCESS_PACKS = PackCache()


def cached_pack(plan: RunPlan, cache: PackCache | None = None, detector: FaceDetector | None = None) -> LoadedPack:
    """The pack for ``plan`` from ``cache`` (default: one cache per process, so API calls and
    folder runs in one process share loaded models); ``detector``: see :meth:`PackCache.get`."""
    return (cache or _PROCESS_PACKS).get(plan, detector)


def faces_only_models(pack: LoadedPack) -> dict[str, Any]:
    """The report's models entry of a faces-only pack (no generator or mapper loaded)."""
    return {"pack": pack.name, "detector": pack.detector.name, "identity": pack.identity.name,
            "identity_match_threshold": pack.match_threshold, "generator": None}


def report_paths(output: Path) -> dict[str, Path]:
    """Files written beside an output video (:class:`OutputNames`): ``report``, ``config``,
    ``preview`` and ``audit``."""
    names = OutputNames.of(output)
    return {"report": names.report, "config": names.config, "preview": names.preview, "audit": names.audit}


def check_sidecars(output: Path, overwrite: bool, preview: bool = False, audit: bool = False) -> None:
    """Refuse, like the video itself, sidecar files of ``output`` that exist (without ``overwrite``);
    the preview and the audit file only when this run writes them."""
    if overwrite:
        return
    for kind, path in report_paths(output).items():
        if (kind not in ("preview", "audit") or {"preview": preview, "audit": audit}[kind]) and path.exists():
            raise OutputExistsError(f"{path}: already exists (the {kind} of {output.name}); "
                                    "pass --overwrite to replace it")


def check_files(plan: RunPlan, source: Path | None, output: Path | None, overwrite: bool = False) -> VideoInfo | None:
    """Step 1 for one video (after :func:`plan_run` checked the settings and photos): the
    video is probed (when ``source`` is a file) and the output and its sidecars checked.
    Returns the video's info, or None when ``source`` is None (a folder run checks each file later)."""
    info = probe(source) if source is not None else None
    if source is not None and output is not None:
        check_output_path(source, output, overwrite)
        check_sidecars(output, overwrite, plan.preview, plan.audit)
    return info


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
    """Step 1: everything that can be checked before any model is loaded (also for --dry-run):
    the run's plan (:func:`plan_run`: photos, pack, device, mapper) and the files
    (:func:`check_files`). Returns the video's info, or None when ``source`` is None."""
    plan = plan_run(mode, config, identity=identity, preview=preview, audit=audit)
    return check_files(plan, source, output, overwrite)


@dataclass(frozen=True, eq=False)
class PhotoCodes:
    """The identity codes of a run's photos (float [D]; None where the run has no such photo)
    and what was noticed about them."""

    target: torch.Tensor | None
    reference: torch.Tensor | None
    warnings: tuple[str, ...] = ()


def photo_codes(plan: RunPlan, pack: LoadedPack) -> PhotoCodes:
    """The check a run makes once the models are loaded, and the codes it needs: the identity
    photo and the reference photo each show a face (NoFaceError naming the photo otherwise);
    a weakly detected identity face gets a warning. Each photo is embedded once."""
    warnings: list[str] = []
    target = reference = None
    if plan.identity is not None:
        found = _photo_face(plan.identity, pack)
        score = float(found.detections.scores[found.index_used])
        least = plan.config.optimize.min_target_score
        if score < least:
            warnings.append(f"identity photo {plan.identity.path}: face detected with score {score:.3f} < "
                            f"{least}; use a sharper, frontal photo")
            log.warning(warnings[-1])
        target = found.embedding
    if plan.reference is not None:
        reference = _photo_face(plan.reference, pack).embedding
    return PhotoCodes(target, reference, tuple(warnings))


def _photo_face(photo: Photo, pack: LoadedPack) -> Any:
    try:
        return identity_from_photo(photo.image, pack.detector, pack.identity, name=str(photo.path))
    except NoFaceError as exc:
        raise NoFaceError(f"{photo.what}: {exc}") from exc


def check_photo_faces(plan: RunPlan, packs: PackCache | None = None) -> LoadedPack:
    """``--dry-run``'s last check: the photos show a face (loads the models, cached, so a run
    after it in one process does not load them again). Returns the loaded pack."""
    pack = cached_pack(plan, packs)
    photo_codes(plan, pack)
    return pack


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
    The run's decisions are made once, by :func:`plan_run`; :func:`run_video` runs a plan.
    """
    plan = plan_run(mode, config, identity=identity, preview=preview, audit=audit)
    return run_video(plan, source, output, overwrite=overwrite, progress=progress, packs=packs)


def run_video(
    plan: RunPlan,
    source: str | Path,
    output: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    packs: PackCache | None = None,
    early: EarlyDetections | None = None,
) -> dict[str, Any]:
    """:func:`process_video` for a plan made by :func:`plan_run` (the CLI makes it once).
    ``early``: frames detected before the pipeline was imported (:mod:`reenact.faces.early`),
    used where the run's detector is the one that detected them."""
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    config = plan.config
    # 1. check inputs
    info = check_files(plan, source, output, overwrite)
    assert info is not None
    # 2. models, photos (each embedded once), identity policy, face selection
    pack = cached_pack(plan, packs, early.detector if early is not None else None)
    if early is not None:
        pack = dataclasses.replace(pack, detector=early.serve(pack.detector))
    plan = plan.bind(pack)
    photos = photo_codes(plan, pack)
    warnings = [*photos.warnings, *plan.warnings]
    keep = _preview_frames(info) if plan.preview else set()
    replacer = FaceReplacer(plan, pack, info.avg_fps or 25.0, target=photos.target, reference=photos.reference,
                            keep_frames=keep)

    # 3-11. decode -> faces -> encode, one stream
    def transform(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for chunk in replacer(chunks):
            if progress is not None:
                progress(chunk.start_index + len(chunk), info.frame_count)
            yield chunk

    chunk_size = config.read.frames_per_chunk(info.width, info.height)  # bounded in bytes too
    with open_video(source, chunk_size=chunk_size, backend=config.read.backend) as reader:
        encode = {**dataclasses.asdict(config.encode), "metadata": plan.metadata}
        with VideoWriter(output, info, source=source, overwrite=overwrite, **encode) as writer:
            stream = run_stream(reader, transform, writer, queue_bytes=config.read.queue_bytes)

    # 12. report, resolved config, preview and audit beside the output
    report = _run_report(plan, pack, replacer, source, output, info, stream, writer, warnings,
                         seconds=time.perf_counter() - started)
    _write_sidecars(plan, replacer, report, source, output)
    return report


def _run_report(plan: RunPlan, pack: LoadedPack, replacer: FaceReplacer, source: Path, output: Path,
                info: VideoInfo, stream: Any, writer: VideoWriter, warnings: list[str], seconds: float) -> dict[str, Any]:
    """Step 12: the report of a finished run, with every warning (each also logged)."""
    config = plan.config
    run = replacer.report
    # an untrained pack is logged once when it loads; the report's `models` says `trained: false`
    models = faces_only_models(pack) if plan.classic else pack.describe()
    report = run.to_dict(
        mode=plan.mode, source=source, output=output, models=models, config=config, stream=stream,
        video={"width": info.width, "height": info.height, "fps": info.avg_fps, "frame_count": info.frame_count},
        threshold=plan.threshold,
        mapper={"kind": config.mapper, "tracks": {str(k): v for k, v in replacer.mapping.report().items()}
                if replacer.mapping is not None else {}},
        seconds=seconds,
    )
    report["identity_photo"] = ({"name": plan.identity.name, "sha256": plan.identity.sha256}
                                if plan.identity is not None else None)
    report["source_fingerprint"] = source_fingerprint(source)
    report["warnings"].extend(warnings)
    if plan.private:
        report["stripped"] = {**writer.stripped, "audio_kept": writer.audio_kept}
        if writer.audio_kept:
            report["warnings"].append(
                f"the audio ({', '.join(writer.audio_kept)}) was kept as it is: a voice can identify the "
                "person; pass --audio drop to leave it out"
            )
    if plan.reference is not None:
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
    return report


def _write_sidecars(plan: RunPlan, replacer: FaceReplacer, report: dict[str, Any], source: Path,
                    output: Path) -> None:
    """The report, the resolved config (naming the photo, not its folder), the preview and
    the audit, each written atomically beside ``output``."""
    config, run = plan.config, replacer.report
    names = plan.outputs(output)
    atomic_write_text(names.report, json.dumps(report, indent=2))
    # the written config names the photos and model files, not their folders (the audit file has them)
    atomic_write_text(names.config, yaml.safe_dump(public_config(config), sort_keys=False))
    labels = face_labels(replacer.kept_faces, run.tracks, ladder=run.privacy is not None)
    if plan.preview:
        write_sheet(replacer.kept, labels, names.preview, mode=0o600 if plan.private else 0o644)
    if plan.audit:
        record = run.audit_dict(source=source, output=output)
        record["identity_photo"] = plan.identity.record() if plan.identity is not None else None
        record["faces"] = config.faces
        record["model_paths"] = model_paths(config)
        record["preview"] = str(names.preview.absolute()) if plan.preview else None
        record["preview_faces"] = {str(k): v for k, v in labels.items()} if plan.preview else None
        with atomic_path(names.audit, mode=0o600) as tmp:
            tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")


def stale_reason(output: Path, plan: RunPlan, source: Path | None = None) -> str | None:
    """Why an existing output was made differently from what ``plan`` would make, or None.

    Compares the report written beside it: mode, resolved settings, identity photo and
    the source's fingerprint (:func:`reenact.batch.source_fingerprint`), so a different clip
    put in place under the same name is not taken for done.
    """
    path = plan.outputs(output).report
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no readable report beside it"
    if report.get("mode") != plan.mode:
        return f"it was made by {report.get('mode')}"
    if report.get("config") not in (public_config(plan.config), to_dict(plan.config)):
        return "it was made with other settings"
    made_with = (report.get("identity_photo") or {}).get("sha256")
    wanted = plan.identity.sha256 if plan.identity is not None else None
    if made_with != wanted:
        return "it was made with another identity photo"
    if source is not None and report.get("source_fingerprint") != source_fingerprint(source):
        return "its source file changed since (another clip under the same name)"
    return None


def _preview_frames(info: VideoInfo, count: int = 4) -> set[int]:
    n = max(info.frame_count, 1)
    return {min(n - 1, round(k * (n - 1) / max(count - 1, 1))) for k in range(count)}


def video_job(job: Job, *, plan: RunPlan, overwrite: bool) -> dict[str, Any]:
    """Folder runs: one video as a batch task (picklable through functools.partial); the
    models are loaded once per worker process and reused for each of its videos. The device
    is resolved again on the worker (the plan may come from another machine)."""
    report = run_video(plan.on_this_machine(), job.source, job.output, overwrite=overwrite)
    return {"frames": report["frames"], "tracks": len(report["tracks"]), "counts": report["counts"],
            "faces": face_counts(report)}
