"""``reenact VIDEO --identity FACE`` and ``deidentify VIDEO``: the pipeline on a file or a folder."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reenact.cli.checks import (
    check_output_file,
    check_output_folder,
    check_photo_path,
    check_video_header,
)
from reenact.cli.settings import resolve_settings
from reenact.config import Mode, to_dict
from reenact.errors import InputError
from reenact.storage import is_url
from reenact.threads import current as thread_budget
from reenact.threads import idle_cores

if TYPE_CHECKING:
    from reenact.batch import FolderPlan
    from reenact.faces.early import EarlyDetections, EarlySchedule
    from reenact.pipeline import PipelineConfig, RunPlan
    from reenact.summary import Summary

DESCRIPTION = {
    "reenact": "Put the identity of a photo on the faces of a video (or of every video in a folder).",
    "deidentify": "Give every person in a video (or folder) a consistent synthetic identity.",
}


class _NoIdentity(argparse.Action):
    """``deidentify --identity``: say what deidentify does instead of "unrecognized argument"."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error("deidentify takes no --identity: it gives every face a synthetic identity; "
                     "to put the face of a photo on a video use `reenact VIDEO --identity PHOTO`")


def _path_or_url(text: str) -> Path | str:
    """A local path, or a URL kept as text (``Path`` would fold ``s3://`` into ``s3:/``)."""
    return text if is_url(text) else Path(text)


def add_args(p: argparse.ArgumentParser, mode: Mode) -> None:
    p.add_argument("input", type=_path_or_url,
                   help="a video file, or a folder of videos (a local path or a URL such as s3://bucket/in/)")
    if mode == "reenact":
        p.add_argument("--identity", type=Path, required=True, help="photo of the face to put on the video")
    else:
        p.add_argument("--identity", nargs="?", action=_NoIdentity, help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", type=_path_or_url, default=None,
                   help="output file (or folder for a folder input); default: INPUT_"
                   f"{'reenacted' if mode == 'reenact' else 'deidentified'} next to the input")
    p.add_argument("--faces", default=None, help="which faces: all (default), largest, or reference:IMAGE")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the synthetic identities (deidentify) and of --mapper optimize's random starts")
    p.add_argument("--pack", default=None, help="model pack: tiny (default, untrained) or full")
    p.add_argument("--faces-backend", choices=["pack", "offline", "insightface"], default=None,
                   help="face detector and identity models: the pack's, the offline ones, or insightface's")
    p.add_argument("--detector-model", default=None, help="SCRFD/RetinaFace ONNX file to detect faces with")
    p.add_argument("--detector-threshold", type=float, default=None, metavar="SCORE",
                   help="minimum detection confidence in (0, 1)")
    p.add_argument("--identity-model", default=None, help="ArcFace-style ONNX identity model")
    p.add_argument("--identity-mean", type=float, default=None, help="identity model input mean (0..255 scale)")
    p.add_argument("--identity-std", type=float, default=None, help="identity model input std (0..255 scale)")
    p.add_argument("--mapper", choices=["trained", "optimize"], default=None,
                   help="trained mapping network (fast) or per-frame optimisation in W (needs no training)")
    p.add_argument("--landmark-model", default=None,
                   help="68-point landmark ONNX (PFLD-style) for --mapper optimize")
    p.add_argument("--smooth", choices=["one_euro", "gaussian"], default=None, help="temporal filter in W")
    p.add_argument("--no-smooth", action="store_true",
                   help="no temporal smoothing of W, the alignment or the face points (for comparison)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.add_argument("--config", type=Path, default=None, help="pipeline settings (YAML), e.g. configs/optimize.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set blend.feather=0.1 (YAML value)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    if mode == "deidentify":
        p.add_argument("--method", choices=["auto", "synthetic", "blur", "pixelate", "solid"], default=None,
                       help="auto (default): synthetic identities with a trained pack, the face-shaped blur with "
                       "an untrained one; or synthetic, or a redaction of each face's shape: blur, pixelate or "
                       "solid (no generator loaded); every method is privacy-checked and escalates")
        p.add_argument("--privacy-threshold", type=float, default=None, metavar="SIMILARITY",
                       help="similarity to the original every checker must stay below (default: calibrated "
                       "per identity model and chip)")
    p.add_argument("--preview", action="store_true",
                   help="also write a PNG sheet of before/after frames (deidentify: only with --audit)")
    p.add_argument("--audit", action="store_true",
                   help="also write OUTPUT.audit.json (mode 0600): per-frame similarities, absolute paths, "
                   "identity codes; the default report has aggregates only")
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep the input's container and stream tags (deidentify strips all but rotation, "
                   "colour and language by default)")
    p.add_argument("--audio", choices=["keep", "drop"], default=None,
                   help="keep (default) or drop the input's audio")
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    p.add_argument("--workers", type=int, default=1, help="videos processed at once (folder input)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads per process, all pools together (default: the usable cores divided among "
                   "the --workers; or REENACT_THREADS)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run one task per video with Ray: a cluster's address, auto (the running "
                   "cluster, or RAY_ADDRESS), or local (start a private Ray instance on this machine)")
    p.add_argument("--gpus-per-task", type=float, default=None, help="GPUs per Ray task (default 1 with CUDA, else 0)")


def precheck(args: argparse.Namespace, mode: Mode) -> tuple[Path, Path]:
    """The cheap checks, before torch is imported: input exists and (a file) has a video
    header, identity photo is a file, the output path can be written. Returns (input, output)."""
    source: Path = args.input.absolute()
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if mode == "deidentify" and args.preview and not args.audit:
        raise InputError("--preview shows the original faces, so deidentify writes it only with --audit "
                         "(a private file, mode 0600): add --audit, or leave out --preview")
    identity = getattr(args, "identity", None)
    if identity is not None:
        check_photo_path(Path(identity), "identity photo (--identity)")
    suffix = "reenacted" if mode == "reenact" else "deidentified"
    if source.is_dir():
        output = Path(args.output or source.with_name(f"{source.name}_{suffix}"))
        check_output_folder(output)
    else:
        output = Path(args.output or source.with_name(f"{source.stem}_{suffix}.mp4"))
        check_video_header(source)
        check_output_file(source, output, args.overwrite)
    return source, output


def run(args: argparse.Namespace, mode: Mode) -> int:
    from reenact.cli import url_folder

    if url_folder.wants_urls(args):  # a folder in object storage (reenact.storage)
        return url_folder.run(args, mode)
    source, output = precheck(args, mode)  # refused before anything loads torch
    # The pipeline imports torch: loaded here, after the cheap checks, not when the CLI starts;
    # a file's first frames are detected meanwhile
    early = start_early_detection(args, mode, source)
    try:
        return _run(args, mode, source, output, early)
    finally:
        if early is not None:
            early.stop()  # done already where the run took its detections; an error or a --dry-run stops it here


def _run(args: argparse.Namespace, mode: Mode, source: Path, output: Path, early: EarlyDetections | None) -> int:
    from reenact.pipeline.plan import plan_run
    from reenact.pipeline.run import check_files, check_photo_faces

    thread_budget().apply()  # again, now that torch is loaded: its inter-op pool (reenact.threads)

    config = resolve_settings(args)
    identity = getattr(args, "identity", None)
    warn_unused_flags(args, mode, config, folder=source.is_dir())
    # every decision of the run, made once (the photos are read here, once)
    plan = plan_run(mode, config, identity=identity, preview=args.preview, audit=args.audit)
    check_files(plan, None if source.is_dir() else source, None if source.is_dir() else output, args.overwrite)
    check_model_files(plan)
    folder = folder_decisions(args, plan, source, output) if source.is_dir() else None
    if args.dry_run:
        # the run's last check before the video work: the photos show a face (loads the models)
        if plan.identity is not None or plan.reference is not None:
            check_photo_faces(plan)
        print(json.dumps(_plan(mode, config, source, output, identity, folder), indent=1))
        return 0
    # the temporary files a killed run (SIGKILL) left beside these outputs: removed, and named
    remove_leftovers([job.output for job in folder.jobs] if folder is not None else [output])
    if folder is not None:
        return _run_folder(args, plan, folder)
    return _run_file(args, plan, source, output, early)


#: The detection settings of a run with the defaults, for the detection made while torch
#: loads (:func:`early_schedule`): the mode's score threshold, full-pass cadence and
#: smallest face kept (``plan_run``'s tables: SCORE_THRESHOLDS, FULL_EVERY, ``drop_under``),
#: the detector's load threshold (DETECTOR_LOAD_THRESHOLD), the tracker's shot-cut threshold
#: and the reader's chunk bounds. Their sources import torch, so they are repeated here;
#: ``tests/cli/test_early_detection.py`` checks them against ``plan_run``. A stale value
#: costs only time: a run uses an early answer only from its own detector's model and settings.
EARLY_DEFAULTS: dict[str, dict[str, float]] = {
    "deidentify": {"threshold": 0.2, "full_every": 4, "drop_under": 0.0},
    "reenact": {"threshold": 0.5, "full_every": 1, "drop_under": 20.0},
}
EARLY_LOAD_THRESHOLD = 0.2
EARLY_CUT_THRESHOLD = 0.12
EARLY_CHUNK = (16, 8 * 1024 * 1024)

#: The interpreter's thread switch interval while one thread detects and the main thread
#: imports (seconds; Python's default is 0.005), for the run. Each time the detecting thread
#: gives up the GIL (onnxruntime, the decoder, numpy) it waits up to the interval for it back
#: from the importing thread. Measured on 2 cores (decode and detect 60 frames of the 512x512
#: clip while importing the pipeline): 0.005 s 2.87-3.05 s, 0.0002 s 2.56-2.59 s, one after
#: the other 3.51-3.68 s.
EARLY_SWITCH_INTERVAL = 0.0002


def early_schedule(args: argparse.Namespace, mode: Mode) -> EarlySchedule | None:
    """The detection a run of ``args`` is expected to make, known before its settings can be read
    (they import torch): the defaults (:data:`EARLY_DEFAULTS`), or None when a flag or a
    settings file may change the detector, its thresholds or its cadence."""
    if (args.config is not None or args.set or args.detector_model or args.detector_threshold is not None
            or args.pack not in (None, "tiny") or args.faces_backend == "insightface"):
        return None
    from reenact.faces.detect import DetectorSettings
    from reenact.faces.early import EarlySchedule

    values = EARLY_DEFAULTS[mode]
    detector = DetectorSettings(score_threshold=EARLY_LOAD_THRESHOLD, min_face_size=0.0)  # as the pack loads it
    return EarlySchedule(detector, values["threshold"], values["drop_under"], int(values["full_every"]),
                         EARLY_CUT_THRESHOLD, *EARLY_CHUNK)


def start_early_detection(args: argparse.Namespace, mode: Mode, source: Path) -> EarlyDetections | None:
    """Start decoding and detecting the first frames of ``source`` in a thread of their own
    (:mod:`reenact.faces.early`) while this one imports the pipeline (torch); the run takes what
    it found (:func:`reenact.pipeline.run.run_video`). None, and no thread: a folder,
    ``--dry-run``, flags that may change the detection (:func:`early_schedule`), a thread
    budget of one thread, or no idle core (:func:`reenact.threads.idle_cores`: with every core
    taken, the two threads only slow each other down). The thread is a daemon that never
    raises: Ctrl-C, a stop signal or an error in this thread end the run as before.

    Measured (issue 28), ``deidentify --method blur``, 60 frames of the 512x512 clip, 2 cores,
    interleaved with the main branch and deface (6 rounds, load 1.5-2.2): 5.28-6.21 s (median
    5.4) against 5.68-7.25 s (6.1) without, deface 5.43-6.48 s (5.9); 37-45 of the 60 frames are
    detected early, and the import takes 0.7-1.0 s longer (both threads want the GIL). With
    every core taken by other work (load 2.4-3.2, before the idle-core rule) it was 0.5-1.4 s
    slower than without, the import 3.1-4.4 s instead of about 2, hence that rule.
    """
    schedule = early_schedule(args, mode) if source.is_file() and not args.dry_run else None
    # a second thread only where the budget has a second thread and a core is free for it
    if schedule is None or thread_budget().share < 2 or idle_cores() < 1:
        return None
    from reenact.faces.early import EarlyDetections

    return EarlyDetections(schedule).start(source, switch_interval=EARLY_SWITCH_INTERVAL)


def remove_leftovers(outputs: list[Path]) -> None:
    """Remove what killed runs left beside ``outputs`` (never a live run's file) and say so in one line."""
    from reenact.io.writer import remove_leftovers as remove

    removed = remove(outputs)
    if removed:
        names = ", ".join(path.name for path in removed[:3]) + (f" and {len(removed) - 3} more"
                                                                if len(removed) > 3 else "")
        logging.getLogger("reenact").warning(
            "removed %d temporary file%s left by an interrupted run (killed before it could clean up): %s",
            len(removed), "s" if len(removed) > 1 else "", names)


def check_model_files(plan: RunPlan) -> None:
    """Every model file this run loads is here (one error naming all that are missing), and the
    face models it names are usable: the one model check of ``--dry-run`` and of the run,
    before any video work (what the loading would refuse is refused here)."""
    from reenact.models.pack_status import check_pack_files, needed_components
    from reenact.packs import check_face_models

    models = plan.config.models
    check_pack_files(models.pack, needed_components(
        models.pack, faces_only=plan.classic, need_mapper=plan.config.mapper == "trained",
        own_faces=models.faces_backend != "offline", detector_model=bool(models.detector_model),
        identity_model=bool(models.identity_model)))
    check_face_models(models)


def folder_decisions(args: argparse.Namespace, plan: RunPlan, source: Path, output: Path) -> FolderPlan:
    """What a folder run does with each file, the same for ``--dry-run`` and the run: jobs,
    outputs that are done (skipped) or stale (skipped too, with the reason and the way to redo
    it: made with other settings, another identity photo, or from another clip under the same
    name), files that are not videos."""
    from reenact.batch import JobResult, plan_folder
    from reenact.errors import ReenactError
    from reenact.io.writer import is_partial_name
    from reenact.pipeline.run import check_sidecars, stale_reason

    # a killed run's temporary files (in a folder that was a run's output) are no videos of it
    folder = plan_folder(source, output, overwrite=args.overwrite, temporary=is_partial_name)
    for result in folder.known:
        if result.status == "skipped" and result.output is not None:
            reason = stale_reason(Path(result.output), plan, Path(result.source))
            if reason is not None:  # not a failure of the file: skipped, and the way to redo it
                result.details["stale"] = reason
                result.error = f"stale: {reason}; --overwrite remakes it"
    jobs = []
    for job in folder.jobs:
        try:
            check_video_header(job.source)
            check_sidecars(job.output, args.overwrite, plan.preview, plan.audit)
        except ReenactError as exc:
            folder.known.append(JobResult(job.source, job.output, "failed", error=str(exc)))
            continue
        jobs.append(job)
    folder.jobs = jobs
    return folder


def _plan(mode: Mode, config: PipelineConfig, source: Path, output: Path, identity: Path | None,
          folder: FolderPlan | None) -> dict[str, Any]:
    plan: dict[str, Any] = {"mode": mode, "input": str(source), "output": str(output),
                            "identity": str(identity) if identity else None, "config": to_dict(config),
                            "threads": thread_budget().describe()}
    if folder is not None:
        plan["jobs"] = [[str(j.source), str(j.output)] for j in folder.jobs]
        plan["skipped"] = [[str(r.source), r.status, r.error] for r in folder.known
                           if r.status == "skipped" and "stale" not in r.details]
        plan["stale"] = [[str(r.source), r.details["stale"]] for r in folder.known if "stale" in r.details]
        plan["failed"] = [[str(r.source), r.error] for r in folder.known if r.status == "failed"]
        plan["ignored"] = [[str(r.source), r.error] for r in folder.known if r.status == "ignored"]
    return plan


def _run_file(args: argparse.Namespace, plan: RunPlan, source: Path, output: Path,
              early: EarlyDetections | None = None) -> int:
    from tqdm import tqdm

    from reenact.cli.console import held_warnings
    from reenact.pipeline import run_video

    with held_warnings() as logged:  # warnings wait for the summary: never inside the bar, each once
        bar = tqdm(total=None, unit="frame", disable=args.quiet or args.json, desc=source.name)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            report = run_video(plan, source, output, overwrite=args.overwrite, progress=progress, early=early)
        finally:
            bar.close()
    if args.json:
        print(json.dumps(report, indent=1))
    elif not args.quiet:
        print("\n".join(run_summary(args, plan.mode, report, source, output, logged).lines()))
    return 0


def run_summary(args: argparse.Namespace, mode: Mode, report: dict[str, Any], source: Path, output: Path,
                logged: list[str]) -> Summary:
    """The closing summary of one file's run (:func:`reenact.summary.summarize`): the files this
    run wrote, and the warnings logged during it that the report does not already list."""
    from reenact.pipeline.run import report_paths
    from reenact.summary import summarize, untrained_pack

    sidecars = report_paths(output)
    written: dict[str, Path] = {"video": output, "report": sidecars["report"], "config": sidecars["config"]}
    if args.preview and sidecars["preview"].exists():
        written["preview"] = sidecars["preview"]
    if args.audit and sidecars["audit"].exists():
        written["audit"] = sidecars["audit"]
    extra = tuple(message for message in logged
                  if not any(message.endswith(w) for w in report["warnings"])
                  and not message.startswith(f"{source}: no faces found")
                  and not (untrained_pack(report) and "is untrained" in message))
    command = f"{mode} {shlex.quote(str(args.input))}"
    return summarize(report, written, command=command, extra_warnings=extra)


def _run_folder(args: argparse.Namespace, plan: RunPlan, folder: FolderPlan) -> int:
    import torch
    from tqdm import tqdm

    from reenact.batch import run_jobs, summary_table
    from reenact.cli.console import held_warnings
    from reenact.pipeline import video_job

    if not folder.jobs and not folder.known:
        logging.getLogger("reenact").warning("no videos found in %s", args.input)
    task = functools.partial(video_job, plan=plan, overwrite=args.overwrite)
    bar = tqdm(total=len(folder.jobs), unit="video", disable=args.quiet or args.json)

    def tick(_result: object) -> None:
        bar.update(1)

    gpus = args.gpus_per_task if args.gpus_per_task is not None else (1.0 if torch.cuda.is_available() else 0.0)
    with held_warnings() as logged:  # printed once each after the bar (this process's videos)
        try:
            results = run_jobs(folder.jobs, task, workers=args.workers, ray_address=args.ray, gpus_per_task=gpus,
                               on_result=tick)
        finally:
            bar.close()
    everything = folder.known + results
    if args.json:
        print(json.dumps([{"source": str(r.source), "output": str(r.output) if r.output else None,
                           "status": r.status, "stale": r.details.get("stale"), "error": r.error,
                           "seconds": r.seconds} for r in everything], indent=1))
    elif not args.quiet:
        for message in logged:
            print(f"warning: {message}")
        print(summary_table(everything))
        stale = sum("stale" in r.details for r in everything)
        if stale:
            print(f"{stale} existing output{'s were' if stale > 1 else ' was'} made differently (stale) and "
                  f"left as {'they are' if stale > 1 else 'it is'}: add --overwrite to remake "
                  f"{'them' if stale > 1 else 'it'}")
    return 1 if any(r.status == "failed" for r in everything) else 0


def warn_unused_flags(args: argparse.Namespace, mode: Mode, config: PipelineConfig, folder: bool) -> None:
    """Say so when a given option has no effect in this run, instead of ignoring it silently."""
    log = logging.getLogger("reenact")
    unused = []
    if args.landmark_model and config.mapper != "optimize":
        unused.append("--landmark-model (only --mapper optimize uses it)")
    if (args.identity_mean is not None or args.identity_std is not None) and not config.models.identity_model:
        unused.append("--identity-mean/--identity-std (they describe --identity-model)")
    if not folder and args.workers != 1:
        unused.append("--workers (one file is one job)")
    if args.gpus_per_task is not None and not args.ray:
        unused.append("--gpus-per-task (only with --ray)")
    if mode == "reenact" and args.seed is not None and config.mapper != "optimize":
        unused.append("--seed (reenact uses it only for --mapper optimize's random starts)")
    for flag in unused:
        log.warning("ignored: %s", flag)
