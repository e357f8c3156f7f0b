"""Calibrate the privacy threshold of each identity model (and chip) on the fixtures.

A de-identified face is private when it is *less similar to its original than nearly any
real photo of the same person is*. So the privacy threshold of a recogniser is the 0.1 %
quantile of its same-person ("genuine") similarities: at most 0.1 % of real same-person
pairs score below it. It is measured per identity model and per chip (the pipeline's tight
chip and a looser one with hair, ears and jaw), because each has its own scale.

Genuine pairs come from
- the labelled fixture photos (``identities.tsv``: every pair with the same label), and
- face tracks of the single-person fixture clips (frames at least ``--gap`` frames apart,
  so that near-duplicate neighbouring frames do not dominate).
Impostor pairs (different labels among the photos) give the false-match rate at the
threshold, for the record.

    .venv/bin/python bench/calibrate_privacy.py [--gap 10] [--json out.json]

The numbers it prints are the ones stored in ``reenact.faces.privacy_thresholds``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reenact.faces import privacy_thresholds as PT  # noqa: E402
from reenact.faces.detect import largest_face, make_detector  # noqa: E402
from reenact.faces.identity import DlibFaceEncoder, OnnxArcFaceEncoder  # noqa: E402
from reenact.io.images import read_image  # noqa: E402
from reenact.io.reader import open_video  # noqa: E402
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.models import MOBILEFACE  # noqa: E402

SINGLE_PERSON_CLIPS = ("liveportrait_d0.mp4", "liveportrait_d12.mp4", "sadtalker_WDA_KatieHill_000.mp4")


def _encoders(fx: Path) -> dict[str, object]:
    encoders: dict[str, object] = {"dlib-resnet": DlibFaceEncoder()}
    mobileface = MOBILEFACE.file(fx)
    if mobileface.is_file():
        encoders["arcface-onnx"] = OnnxArcFaceEncoder(mobileface, input_mean=MOBILEFACE.mean, input_std=MOBILEFACE.std)
    return encoders


def _embed(encoder: object, frames: torch.Tensor, points: np.ndarray, chip: str) -> np.ndarray:
    """Embeddings [F,D] of the faces at ``points`` [F,5,2] in ``frames`` [F,H,W,3] with one chip."""
    index = torch.arange(frames.shape[0])
    pts = torch.from_numpy(points).float()
    emb = PT.embed_with_chip(encoder, frames, index, pts, chip)  # type: ignore[arg-type]
    return emb.numpy()


def photo_embeddings(fx: Path, detector: object, encoders: dict[str, object]) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    labels: list[str] = []
    images, points = [], []
    with open(fx / "identities.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            image = read_image(fx / row["image"])
            dets = detector.detect(image[None])[0]  # type: ignore[attr-defined]
            if len(dets) == 0:
                continue
            labels.append(row["identity"])
            images.append(image)
            points.append(dets.points[largest_face(dets)])
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, enc in encoders.items():
        out[name] = {}
        for chip in PT.CHIPS:
            out[name][chip] = np.concatenate([
                _embed(enc, img[None], p[None], chip) for img, p in zip(images, points, strict=True)
            ])
    return labels, out


def clip_embeddings(fx: Path, detector: object, encoders: dict[str, object], gap: int) -> list[dict[str, dict[str, np.ndarray]]]:
    per_clip = []
    for clip in SINGLE_PERSON_CLIPS:
        path = fx / "videos" / clip
        if not path.is_file():
            continue
        frames, points = [], []
        with open_video(path) as reader:
            for chunk in reader:
                for i in range(chunk.frames.shape[0]):
                    if (chunk.start_index + i) % gap:
                        continue
                    dets = detector.detect(chunk.frames[i : i + 1])[0]  # type: ignore[attr-defined]
                    if len(dets) == 0:
                        continue
                    frames.append(chunk.frames[i])
                    points.append(dets.points[largest_face(dets)])
        stack, pts = torch.stack(frames), np.stack(points)
        per_clip.append({
            name: {chip: _embed(enc, stack, pts, chip) for chip in PT.CHIPS} for name, enc in encoders.items()
        })
    return per_clip


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=int, default=10, help="frames between sampled clip frames")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("fixtures not found (REENACT_FIXTURES or ../shared/fixtures)", file=sys.stderr)
        return 2
    detector = make_detector("offline")
    encoders = _encoders(fx)
    labels, photos = photo_embeddings(fx, detector, encoders)
    clips = clip_embeddings(fx, detector, encoders, args.gap)
    lab = np.asarray(labels)
    same = lab[:, None] == lab[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in encoders:
        table[name] = {}
        for chip in PT.CHIPS:
            sims = _cos(photos[name][chip], photos[name][chip])
            genuine = [sims[same & upper]]
            impostor = sims[~same & upper]
            for clip in clips:
                e = clip[name][chip]
                s = _cos(e, e)
                genuine.append(s[np.triu(np.ones_like(s, dtype=bool), 1)])
            g = np.concatenate(genuine)
            threshold = float(np.quantile(g, PT.GENUINE_QUANTILE))
            row = {
                "threshold": round(threshold, 4),
                "genuine_pairs": int(g.size),
                "genuine_below": float(np.mean(g < threshold)),
                "genuine_min": round(float(g.min()), 4),
                "impostor_pairs": int(impostor.size),
                "false_match_rate_at_threshold": float(np.mean(impostor >= threshold)),
            }
            table[name][chip] = row
            print(f"{name:13s} {chip:6s} threshold {row['threshold']:.4f}  genuine pairs {row['genuine_pairs']}"
                  f" (min {row['genuine_min']:.4f}, below {row['genuine_below']:.4%})  impostor pairs "
                  f"{row['impostor_pairs']}, false matches at it {row['false_match_rate_at_threshold']:.2%}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
