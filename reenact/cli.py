"""Command-line entry points: the one place that turns errors into exit codes.

``reenact VIDEO --identity FACE`` is the main command; ``reenact <subcommand> ...`` runs
the tools listed in :data:`SUBCOMMANDS`. Each subcommand is a pair of functions: one
adds its arguments to an ``argparse`` parser, one runs it and returns an exit status.
Library errors (:class:`reenact.errors.ReenactError`) become one clear line on stderr and
the error's ``exit_code``; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from reenact import __version__
from reenact.errors import ReenactError

if TYPE_CHECKING:
    from reenact.pipeline import PipelineConfig

Mode = Literal["reenact", "deidentify"]
AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

#: name -> (help, add_arguments, run). Subcommands register themselves below.
SUBCOMMANDS: dict[str, tuple[str, AddArgs, Run]] = {}


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.INFO,
        format="%(levelname)s: %(message)s",
    )


def _run_guarded(run: Run, args: argparse.Namespace) -> int:
    try:
        return run(args)
    except ReenactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing partial was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `reenact ... --dry-run | head`: the reader left, that is fine
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _subcommand_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reenact", description="reenact tools")
    parser.add_argument("--version", action="version", version=f"reenact {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _run) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        sub_parser.add_argument("--quiet", action="store_true", help="only print errors")
        add_args(sub_parser)
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    return _run_guarded(SUBCOMMANDS[args.command][2], args)


def main(argv: Sequence[str] | None = None) -> int:
    """``reenact``: dispatch to a subcommand (``reenact models list``) or the video command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return _subcommand_main(args)
    return _video_main(args, "reenact")


# --- subcommands ---------------------------------------------------------------------------
# Each engineer adds the registration of their subcommand below (additive edits only).


# eval: quality metrics for an input/output video pair (reenact.evaluate)
def _eval_add_args(p: argparse.ArgumentParser) -> None:
    from pathlib import Path

    p.add_argument("input", type=Path, help="the original video")
    p.add_argument("output", type=Path, help="the processed video (made by any tool)")
    p.add_argument("--identity", type=Path, default=None, help="target face photo (reenact mode)")
    p.add_argument("--mode", choices=["reenact", "deidentify"], default=None,
                   help="reenact (needs --identity) or deidentify; default: reenact when --identity is given")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: OUTPUT_eval next to OUTPUT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--landmarks", type=Path, required=True, help="PFLD 68-point landmark ONNX file")
    p.add_argument("--detector", choices=["offline", "insightface"], default="offline")
    p.add_argument("--detector-model", type=Path, default=None, help="SCRFD ONNX or insightface pack")
    p.add_argument("--identity-model", type=Path, default=None,
                   help="ArcFace-style ONNX (default: dlib's descriptor)")
    p.add_argument("--identity-mean", type=float, default=None, help="identity model input mean")
    p.add_argument("--identity-std", type=float, default=None, help="identity model input std")
    p.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N input frames")
    p.add_argument("--reid-threshold", type=float, default=None, help="cosine similarity counted as re-identified (default per identity model: dlib 0.92, ArcFace-style ONNX 0.35)")
    p.add_argument("--gallery", type=Path, default=None,
                   help="folder of photos of other people, added to the identity gallery as distractors")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _eval_run(args: argparse.Namespace) -> int:
    import json

    from reenact.evaluate.models import EvalModelSettings, load_models
    from reenact.evaluate.report import EvalSettings, evaluate_videos, save_report

    mode: Literal["reenact", "deidentify"] = args.mode or ("reenact" if args.identity is not None else "deidentify")
    overrides = {"reid_threshold": args.reid_threshold} if args.reid_threshold is not None else {}
    settings = EvalSettings(mode=mode, max_frames=args.max_frames, **overrides)
    out_dir = args.out or args.output.with_name(args.output.stem + "_eval")
    if not args.overwrite and (out_dir / "report.json").exists():
        from reenact.errors import OutputExistsError

        raise OutputExistsError(f"{out_dir / 'report.json'} exists; pass --overwrite or choose another --out")
    models = load_models(EvalModelSettings(
        landmarks=args.landmarks, detector=args.detector, detector_model=args.detector_model,
        identity_model=args.identity_model, identity_mean=args.identity_mean, identity_std=args.identity_std,
    ))
    from pathlib import Path

    distractors: list[Path] = []
    if args.gallery is not None:
        if not args.gallery.is_dir():
            from reenact.errors import InputError

            raise InputError(f"--gallery {args.gallery} is not a folder; give a folder of face photos")
        exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
        distractors = sorted(p for p in args.gallery.iterdir() if p.suffix.lower() in exts)
        if not distractors:
            from reenact.errors import InputError

            raise InputError(f"--gallery {args.gallery} holds no .jpg/.png/.webp/.bmp photos")
    report = evaluate_videos(args.input, args.output, models.detector, models.identity, models.landmarks,
                             identity_image=args.identity, settings=settings, distractors=distractors)
    paths = save_report(report, out_dir, overwrite=args.overwrite)
    s = report["summary"]
    if args.json:
        print(json.dumps({"report": str(paths["report"]), "summary": s}, indent=1))
    elif not args.quiet:
        t, a, p = s["temporal"], s["attributes"], s["privacy"]
        lines = [f"report: {paths['report']}"]
        if "identity" in s:
            lines.append(f"identity: similarity to target {s['identity']['similarity_to_target']['mean']}, "
                         f"retrieval {s['identity']['retrieval_rate']}")
        lines += [
            f"privacy: re-identification {p['reidentification_rate']} (threshold {p['threshold']})",
            f"attributes: pose error {a['pose_error_deg']['mean_abs']['mean']} deg, "
            f"expression error {a['expression_error']['mean']}",
            f"temporal: TL-ID {t['tl_id']['output']} (input {t['tl_id']['input']}), "
            f"TG-ID {t['tg_id']['output']} (input {t['tg_id']['input']}), "
            f"flicker {t['flicker']['output']} (input {t['flicker']['input']})",
            f"background PSNR: {s['background']['psnr_db']} dB",
        ]
        print("\n".join(lines))
    return 0


SUBCOMMANDS["eval"] = ("quality metrics for an input/output video pair", _eval_add_args, _eval_run)


# models: reenact models list|pull|import|verify (reenact.models.weights)
def _models_add_args(p: argparse.ArgumentParser) -> None:
    from pathlib import Path

    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("list", help="packs, their components, sources, licences and cache state")
    ls.add_argument("pack", nargs="?", default=None, help="only this pack")
    ls.add_argument("--json", action="store_true", help="print JSON")
    pull = sub.add_parser("pull", help="download (checked, resumable) and convert a pack's weights")
    pull.add_argument("pack", help="pack name, e.g. full")
    pull.add_argument("--component", default=None, help="only this component, e.g. generator")
    imp = sub.add_parser("import", help="convert a local file into the cache (NVlabs .pkl, rosinality .pt, ...)")
    imp.add_argument("target", help="PACK/COMPONENT, e.g. full/generator; or `paper` with the authors' folder(s)")
    imp.add_argument("file", type=Path, nargs="+",
                     help="the local weight file (for `paper`: one folder, or the pretrained-models and checkpoint folders)")
    ver = sub.add_parser("verify", help="re-hash and re-load a pack's cached weights")
    ver.add_argument("pack", help="pack name")
    ver.add_argument("--json", action="store_true", help="print JSON")


def _models_run(args: argparse.Namespace) -> int:
    import json

    from reenact.errors import ModelError
    from reenact.models import weights

    cmd = args.models_command
    if cmd == "list":
        names = [args.pack] if args.pack else weights.list_packs()
        rows = []
        for name in names:
            pack = weights.get_pack(name)
            for comp_name, comp in pack.components.items():
                try:
                    where = str(weights.resolve(name, comp_name))
                except ModelError as exc:
                    where = "built in" if comp.scheme == "builtin" else f"missing ({type(exc).__name__})"
                rows.append({"pack": name, "component": comp_name, "kind": comp.kind, "source": comp.source,
                             "sha256": comp.sha256, "licence": comp.licence, "path": where})
        if args.json:
            print(json.dumps({"cache": str(weights.cache_dir()), "components": rows}, indent=1))
        else:
            print(f"cache: {weights.cache_dir()}")
            for r in rows:
                print(f"{r['pack']}/{r['component']:<18} {r['kind']:<17} {r['path']}\n"
                      f"    source: {r['source'] or 'reenact-train'}   licence: {r['licence']}")
        return 0
    if cmd == "pull":
        got = weights.pull(args.pack, args.component, progress=not args.quiet)
        for comp_name, path in got.items():
            if not args.quiet:
                print(f"{args.pack}/{comp_name}: {path if path is not None else 'not available (see warning)'}")
        return 0
    if cmd == "import":
        if "/" not in args.target and weights.get_pack(args.target).components["generator"].kind == "stylegan1":
            from reenact.packs.paper_import import import_paper

            for comp_name, path in import_paper(args.file, args.target).items():
                if not args.quiet:
                    print(f"imported {args.target}/{comp_name}: {path}")
            return 0
        if len(args.file) != 1:
            from reenact.errors import InputError

            raise InputError(f"import {args.target}: give one file, got {len(args.file)}")
        path = weights.import_file(args.file[0], args.target)
        if not args.quiet:
            print(f"imported {args.file[0]} as {args.target}: {path}")
        return 0
    results = weights.verify(args.pack)
    if args.json:
        print(json.dumps([{"component": v.component, "ok": v.ok, "path": str(v.path) if v.path else None,
                           "message": v.message} for v in results], indent=1))
    elif not args.quiet:
        for v in results:
            print(f"{'ok  ' if v.ok else 'FAIL'} {args.pack}/{v.component}: {v.message}")
    return 0 if all(v.ok for v in results) else 1


SUBCOMMANDS["models"] = ("list, pull, import and verify model weights", _models_add_args, _models_run)


# reenact VIDEO --identity FACE / deidentify VIDEO: the pipeline on a file or a folder
def _video_add_args(p: argparse.ArgumentParser, mode: Mode) -> None:
    from pathlib import Path

    p.add_argument("input", type=Path, help="a video file, or a folder of videos")
    if mode == "reenact":
        p.add_argument("--identity", type=Path, required=True, help="photo of the face to put on the video")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output file (or folder for a folder input); default: INPUT_"
                   f"{'reenacted' if mode == 'reenact' else 'deidentified'} next to the input")
    p.add_argument("--faces", default=None, help="which faces: all (default), largest, or reference:IMAGE")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the synthetic identities (deidentify) and of --mapper optimize's random starts")
    p.add_argument("--pack", default=None, help="model pack: tiny (default, untrained) or full")
    p.add_argument("--faces-backend", choices=["pack", "offline", "insightface"], default=None,
                   help="face detector and identity models: the pack's, the offline ones, or insightface's")
    p.add_argument("--detector-model", default=None, help="SCRFD/RetinaFace ONNX file to detect faces with")
    p.add_argument("--identity-model", default=None, help="ArcFace-style ONNX identity model")
    p.add_argument("--identity-mean", type=float, default=None, help="identity model input mean (0..255 scale)")
    p.add_argument("--identity-std", type=float, default=None, help="identity model input std (0..255 scale)")
    p.add_argument("--mapper", choices=["trained", "optimize"], default=None,
                   help="trained mapping network (fast) or per-frame optimisation in W (needs no training)")
    p.add_argument("--landmark-model", default=None,
                   help="68-point landmark ONNX (PFLD-style) for --mapper optimize")
    p.add_argument("--smooth", choices=["one_euro", "gaussian"], default=None, help="temporal filter in W")
    p.add_argument("--no-smooth", action="store_true", help="no temporal smoothing (for comparison)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.add_argument("--config", type=Path, default=None, help="pipeline settings (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set blend.feather=0.1 (YAML value)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--preview", action="store_true", help="also write a PNG sheet of before/after frames")
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    p.add_argument("--workers", type=int, default=1, help="videos processed at once (folder input)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run one task per video on a Ray cluster (address, or auto)")
    p.add_argument("--gpus-per-task", type=float, default=None, help="GPUs per Ray task (default 1 with CUDA, else 0)")


def _video_config(args: argparse.Namespace, mode: str) -> PipelineConfig:
    import yaml

    from reenact.config import from_dict, load_yaml, replace, to_dict
    from reenact.errors import ConfigError
    from reenact.pipeline import PipelineConfig

    config = load_yaml(PipelineConfig, args.config) if args.config else PipelineConfig()
    overrides: dict[str, object] = {}
    flags = {
        "faces": args.faces, "seed": getattr(args, "seed", None), "device": args.device, "mapper": args.mapper,
        "models.pack": args.pack, "models.faces_backend": args.faces_backend,
        "models.detector_model": args.detector_model, "models.identity_model": args.identity_model,
        "models.identity_model_mean": args.identity_mean, "models.identity_model_std": args.identity_std,
        "smoothing.method": "none" if args.no_smooth else args.smooth,
        "optimize.landmark_model.path": args.landmark_model,
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: {value!r} is not a valid YAML value") from exc
    config = replace(config, overrides, where="settings")
    return from_dict(PipelineConfig, to_dict(config), where="settings")


def _video_run(args: argparse.Namespace, mode: Mode) -> int:
    import functools
    import json
    from pathlib import Path

    from tqdm import tqdm

    from reenact.batch import plan_folder, run_jobs, summary_table
    from reenact.config import to_dict
    from reenact.errors import InputError
    from reenact.pipeline import check_inputs, process_video, stale_reason, video_job

    if args.smooth and args.no_smooth:
        raise InputError("--smooth and --no-smooth contradict each other: give one")
    config = _video_config(args, mode)
    identity = getattr(args, "identity", None)
    source: Path = args.input.absolute()
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    suffix = "reenacted" if mode == "reenact" else "deidentified"
    if source.is_dir():
        output = args.output or source.with_name(f"{source.name}_{suffix}")
        if Path(output).exists() and not Path(output).is_dir():
            raise InputError(f"-o {output} is a file; a folder input needs an output folder")
    else:
        output = args.output or source.with_name(f"{source.stem}_{suffix}.mp4")
    _warn_unused_flags(args, mode, config, folder=source.is_dir())
    check_inputs(None if source.is_dir() else source, None if source.is_dir() else Path(output), mode, config,
                 identity=identity, overwrite=args.overwrite)
    quiet = args.quiet or args.json
    if args.dry_run:
        plan = {"mode": mode, "input": str(source), "output": str(output), "identity": str(identity) if identity else None,
                "config": to_dict(config)}
        if source.is_dir():
            folder = plan_folder(source, Path(output), overwrite=args.overwrite)
            plan["jobs"] = [[str(j.source), str(j.output)] for j in folder.jobs]
            plan["skipped"] = [[str(r.source), r.status, r.error] for r in folder.known]
        print(json.dumps(plan, indent=1))
        return 0
    if not source.is_dir():
        bar = tqdm(total=None, unit="frame", disable=quiet, desc=source.name)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            report = process_video(source, output, mode, config, identity=identity,
                                   overwrite=args.overwrite, preview=args.preview, progress=progress)
        finally:
            bar.close()
        if args.json:
            print(json.dumps(report, indent=1))
        elif not args.quiet:
            c = report["counts"]
            print(f"wrote {output} ({report['frames']} frames, {len(report['tracks'])} tracks, "
                  f"{c['faces_replaced']} faces replaced, {c['faces_blurred']} blurred, "
                  f"{report['fps_processed']:.2f} fps)")
            for warning in report["warnings"]:
                print(f"warning: {warning}")
        return 0
    folder = plan_folder(source, Path(output), overwrite=args.overwrite)
    if not folder.jobs and not folder.known:
        logging.getLogger("reenact").warning("no videos found in %s", source)
    for result in folder.known:
        if result.status == "skipped" and result.output is not None:
            reason = stale_reason(result.output, mode, config, identity)
            if reason is not None:
                result.status = "failed"
                result.error = f"output exists but is stale: {reason}; use --overwrite to remake it"
    task = functools.partial(video_job, mode=mode, config=config, identity=identity, overwrite=args.overwrite,
                             preview=args.preview)
    bar = tqdm(total=len(folder.jobs), unit="video", disable=quiet)
    gpus = args.gpus_per_task if args.gpus_per_task is not None else (1.0 if _has_cuda() else 0.0)
    try:
        results = run_jobs(folder.jobs, task, workers=args.workers, ray_address=args.ray, gpus_per_task=gpus,
                           on_result=lambda _r: _tick(bar))
    finally:
        bar.close()
    everything = folder.known + results
    if args.json:
        print(json.dumps([{"source": str(r.source), "output": str(r.output) if r.output else None,
                           "status": r.status, "error": r.error, "seconds": r.seconds} for r in everything], indent=1))
    elif not args.quiet:
        print(summary_table(everything))
    return 1 if any(r.status == "failed" for r in everything) else 0


def _warn_unused_flags(args: argparse.Namespace, mode: Mode, config: PipelineConfig, folder: bool) -> None:
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


def _tick(bar: object) -> None:
    bar.update(1)  # type: ignore[attr-defined]


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _video_main(argv: list[str], mode: Mode) -> int:
    prog = "reenact" if mode == "reenact" else "deidentify"
    description = (
        "Put the identity of a photo on the faces of a video (or of every video in a folder)."
        if mode == "reenact"
        else "Give every person in a video (or folder) a consistent synthetic identity."
    )
    epilog = f"other tools: reenact {{{','.join(SUBCOMMANDS)}}} --help" if mode == "reenact" else None
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument("--version", action="version", version=f"reenact {__version__}")
    parser.add_argument("--quiet", action="store_true", help="only print errors")
    _video_add_args(parser, mode)
    args = parser.parse_args(argv)
    _setup_logging(args.quiet or args.json)
    return _run_guarded(lambda a: _video_run(a, mode), args)


def deidentify_main(argv: Sequence[str] | None = None) -> int:
    """``deidentify VIDEO``: synthetic, consistent identities for everyone in a video."""
    return _video_main(list(sys.argv[1:] if argv is None else argv), "deidentify")


# --- grid / interpolate: the paper's image tools (reenact.image_tools) ----------------------
import pathlib  # noqa: E402  (kept with the tools that use it; additive block)


def _image_tool_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", default="tiny", help="model pack: tiny (untrained) or full (trained mapper)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _image_tool_pack(args: argparse.Namespace) -> object:
    import torch

    from reenact.packs import PackSettings, load_pack

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_pack(PackSettings(pack=args.pack), device=device)


def _image_tool_output(args: argparse.Namespace, default_name: str) -> pathlib.Path:
    from reenact.errors import InputError, OutputExistsError

    Path = pathlib.Path
    if args.output is None and args.output_dir is None:
        raise InputError("give --output FILE (or the authors' --output_dir DIR)")
    out = Path(args.output) if args.output is not None else Path(args.output_dir) / default_name
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    return out


def _grid_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id-dir", "--id_dir", dest="id_dir", required=True, type=pathlib.Path, help="identity images")
    p.add_argument("--attr-dir", "--attr_dir", dest="attr_dir", required=True, type=pathlib.Path, help="attribute images")
    p.add_argument("--output", "-o", type=pathlib.Path, default=None, help="grid PNG to write")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", type=pathlib.Path, default=None,
                   help="folder to write grid.png into (authors' flag)")
    _image_tool_common(p)


def _grid_run(args: argparse.Namespace) -> int:
    from reenact.image_tools import identity_attribute_grid, list_images, save_image

    out = _image_tool_output(args, "grid.png")
    pack = _image_tool_pack(args)
    grid = identity_attribute_grid(list_images(args.id_dir), list_images(args.attr_dir), pack)
    save_image(grid, out)
    print(out)
    return 0


def _interpolate_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", type=pathlib.Path, default=None, help="identity image")
    p.add_argument("--attr", action="append", type=pathlib.Path, default=[], help="attribute image (two or more, in order)")
    p.add_argument("--input-dir", "--input_dir", dest="input_dir", type=pathlib.Path, default=None,
                   help="authors' layout: the first image (by name) is the identity, the rest the attributes")
    p.add_argument("--steps", type=int, default=8, help="frames per attribute segment")
    p.add_argument("--output", "-o", type=pathlib.Path, default=None, help=".gif (animation) or .png (strip)")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", type=pathlib.Path, default=None,
                   help="folder to write interpolation.gif into (authors' flag)")
    _image_tool_common(p)


def _interpolate_run(args: argparse.Namespace) -> int:
    from reenact.errors import InputError
    from reenact.image_tools import attribute_interpolation, list_images, save_frames

    if args.input_dir is not None:
        images = list_images(args.input_dir)
        identity, attrs = images[0], images[1:]
    else:
        if args.identity is None:
            raise InputError("give --identity IMAGE and two or more --attr IMAGE (or --input_dir DIR)")
        identity, attrs = args.identity, list(args.attr)
    out = _image_tool_output(args, "interpolation.gif")
    pack = _image_tool_pack(args)
    frames = attribute_interpolation(identity, attrs, pack, steps=args.steps)
    save_frames(frames, out)
    print(out)
    return 0


SUBCOMMANDS["grid"] = ("identity x attribute grid of two image folders (PNG)", _grid_add_args, _grid_run)
SUBCOMMANDS["interpolate"] = (
    "attribute interpolation at a fixed identity (GIF or PNG strip)", _interpolate_add_args, _interpolate_run)


# Keep this block last: subcommands registered below it are missing under `python -m reenact.cli`.
if __name__ == "__main__":
    sys.exit(main())
