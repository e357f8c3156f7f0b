"""``reenact eval INPUT OUTPUT``: quality metrics for an input/output video pair (reenact.evaluate)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reenact.cli.checks import check_photo_path, check_video_header
from reenact.config import MODES, Mode
from reenact.errors import InputError, OutputExistsError

HELP = "quality metrics for an input/output video pair"

_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="the original video")
    p.add_argument("output", type=Path, help="the processed video (made by any tool)")
    p.add_argument("--identity", type=Path, default=None, help="target face photo (reenact mode)")
    p.add_argument("--mode", choices=list(MODES), default=None,
                   help="reenact (needs --identity) or deidentify; default: reenact when --identity is given")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: OUTPUT_eval next to OUTPUT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--landmarks", type=Path, default=None,
                   help="PFLD 68-point landmark ONNX file (default: dlib's 68-point predictor, installed offline)")
    p.add_argument("--detector", choices=["offline", "insightface"], default="offline")
    p.add_argument("--detector-model", type=Path, default=None, help="SCRFD ONNX or insightface pack")
    p.add_argument("--identity-model", type=Path, default=None,
                   help="ArcFace-style ONNX (default: dlib's descriptor)")
    p.add_argument("--identity-mean", type=float, default=None, help="identity model input mean")
    p.add_argument("--identity-std", type=float, default=None, help="identity model input std")
    p.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N input frames")
    p.add_argument("--reid-threshold", type=float, default=None,
                   help="cosine similarity counted as re-identified "
                   "(default: the identity model's operating point, the one deidentify's privacy check uses: "
                   "dlib 0.91, ArcFace-style ONNX 0.3259)")
    p.add_argument("--gallery", type=Path, default=None,
                   help="folder of photos of other people, added to the identity gallery as distractors")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _distractors(gallery: Path | None) -> list[Path]:
    if gallery is None:
        return []
    if not gallery.is_dir():
        raise InputError(f"--gallery {gallery} is not a folder; give a folder of face photos")
    photos = sorted(p for p in gallery.iterdir() if p.suffix.lower() in _PHOTO_SUFFIXES)
    if not photos:
        raise InputError(f"--gallery {gallery} holds no .jpg/.png/.webp/.bmp photos")
    return photos


def run(args: argparse.Namespace) -> int:
    for video in (args.input, args.output):  # cheap checks first: no torch yet
        if not video.exists():
            raise InputError(f"{video}: no such file")
        if video.is_dir():
            raise InputError(f"{video}: is a folder; eval compares two video files")
        check_video_header(video)
    if args.identity is not None:
        check_photo_path(args.identity, "identity photo (--identity)")
    elif args.mode == "reenact":
        raise InputError("--mode reenact needs --identity PHOTO (the face the video was given)")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
    # reenact.evaluate imports torch and the face models: loaded here, after the checks.
    from reenact.evaluate.models import EvalModelSettings, load_models
    from reenact.evaluate.report import EvalSettings, evaluate_videos, save_report

    mode: Mode = args.mode or ("reenact" if args.identity is not None else "deidentify")
    overrides = {"reid_threshold": args.reid_threshold} if args.reid_threshold is not None else {}
    settings = EvalSettings(mode=mode, max_frames=args.max_frames, **overrides)
    out_dir = args.out or args.output.with_name(args.output.stem + "_eval")
    if not args.overwrite and (out_dir / "report.json").exists():
        raise OutputExistsError(f"{out_dir / 'report.json'} exists; pass --overwrite or choose another --out")
    distractors = _distractors(args.gallery)
    models = load_models(EvalModelSettings(
        landmarks=args.landmarks, detector=args.detector, detector_model=args.detector_model,
        identity_model=args.identity_model, identity_mean=args.identity_mean, identity_std=args.identity_std,
    ))
    report = evaluate_videos(args.input, args.output, models.detector, models.identity, models.landmarks,
                             identity_image=args.identity, settings=settings, distractors=distractors)
    paths = save_report(report, out_dir, overwrite=args.overwrite)
    summary = report["summary"]
    if args.json:
        print(json.dumps({"report": str(paths["report"]), "summary": summary}, indent=1))
    elif not args.quiet:
        print("\n".join([f"report: {paths['report']}", *_summary_lines(summary)]))
    return 0


def _g(value: Any) -> str:
    """A number for people: 4 significant digits (the report keeps full precision)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _summary_lines(s: dict[str, Any]) -> list[str]:
    s = _rounded(s)
    t, a, p = s["temporal"], s["attributes"], s["privacy"]
    lines = []
    if "identity" in s:
        lines.append(f"identity: similarity to target {s['identity']['similarity_to_target']['mean']}, "
                     f"retrieval {s['identity']['retrieval_rate']}")
    return lines + [
        f"privacy: re-identification {p['reidentification_rate']} (threshold {p['threshold']})",
        f"attributes: pose error {a['pose_error_deg']['mean_abs']['mean']} deg, "
        f"expression error {a['expression_error']['mean']}",
        f"temporal: TL-ID {t['tl_id']['output']} (input {t['tl_id']['input']}), "
        f"TG-ID {t['tg_id']['output']} (input {t['tg_id']['input']}), "
        f"flicker {t['flicker']['output']} (input {t['flicker']['input']})",
        f"background PSNR: {s['background']['psnr_db']} dB",
    ]


def _rounded(value: Any) -> Any:
    """``value`` with every float as its 4-significant-digit text (for the summary lines)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return _g(value) if isinstance(value, float) else value
