"""Calibrate the privacy check: the attacker's operating point and the same-context baseline.

An output face is private when the recogniser an attacker would run does not call it the
same person as its original (DESIGN.md, privacy model). Per identity model and chip this
measures:

1. **The operating point**: the similarity at which the recogniser calls two photos the same
   person at the loosest point an attacker would use: the looser (lower) of
   * the cosine that 1 % of different-person pairs of the labelled fixture photos reach
     (``--fmr``), and
   * the recogniser's documented rule where it has one for that chip: dlib's descriptor
     distance < 0.6 on its own chip (our ``tight`` chip reproduces dlib's 150 px, padding
     0.25 chip from five points). The distance is turned into a cosine with the descriptors'
     norms measured on the same photos: ``|a-b|^2 = |a|^2 + |b|^2 - 2|a||b|cos``, so at the
     median norm product ``cos = (|a|^2 + |b|^2 - 0.36) / (2|a||b|)``.
   Genuine pairs (same label among the photos; frames ``--gap`` apart in the single-person
   clips) are reported, never used for the decision.
2. **The same-context baseline**: the in-video check compares an output face with its own
   original in the same frame, and hair, ears, jaw line, background and light are shared.
   So on sampled frames of every fixture clip, each face (the run's offline detector) is
   embedded in the original frame and in the same frame with
   * ``flat``: the face-shaped region (:mod:`reenact.blend.redact`) filled with its mean
     colour (the face gone, the light kept): the baseline the run itself embeds,
   * ``solid``: the same region filled black (dark faces embed near black: for the record),
   * ``stranger``: another fixture person's photo pasted on the face (five-point similarity,
     the same feathered face-shaped mask),
   * ``blur`` / ``pixelate``: the face-shaped redactions, for the record.
   The check's rule (``reenact.faces.privacy_thresholds``) lets a face pass where it is
   below ``max(operating point, its own flat baseline + allowance)``, with the allowance
   :data:`~reenact.faces.privacy_thresholds.BASELINE_ALLOWANCE` (0: no more similar than
   the context alone). ``stranger - flat`` quantiles are printed for the record: how far
   above the empty context a different person's face in the same place reaches.

    python bench/calibrate_privacy.py [--gap 10] [--frames 6] [--json out.json] [--markdown out.md]

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
from reenact.blend.redact import face_regions, head_boxes, redact_faces, region_mask  # noqa: E402
from reenact.faces import privacy_thresholds as PT  # noqa: E402
from reenact.faces.align import similarity_from_points, warp_affine  # noqa: E402
from reenact.faces.detect import largest_face, make_detector  # noqa: E402
from reenact.faces.identity import DlibFaceEncoder, OnnxArcFaceEncoder  # noqa: E402
from reenact.io.images import read_image  # noqa: E402
from reenact.io.reader import open_video  # noqa: E402
from testing.fixtures import CLIPS, fixtures_dir  # noqa: E402
from testing.models import MOBILEFACE  # noqa: E402

SINGLE_PERSON_CLIPS = ("d0", "d12", "katie")
#: fixture photo identities that appear in a clip (never pasted there as a stranger)
CLIP_PEOPLE = {"hamilton": ("lin_manuel_miranda", "alex_lacamoire")}
#: dlib's documented same-person rule: descriptor distance below this
DLIB_DISTANCE = 0.6
#: the printed quantile of (stranger - flat)
STRANGER_QUANTILE = 0.9
VARIANTS = ("flat", "solid", "stranger", "blur", "pixelate")


def _encoders(fx: Path) -> dict[str, object]:
    encoders: dict[str, object] = {"dlib-resnet": DlibFaceEncoder()}
    mobileface = MOBILEFACE.file(fx)
    if mobileface.is_file():
        encoders["arcface-onnx"] = OnnxArcFaceEncoder(mobileface, input_mean=MOBILEFACE.mean, input_std=MOBILEFACE.std)
    return encoders


def _embed(encoder: object, frames: torch.Tensor, points: np.ndarray, chip: str) -> np.ndarray:
    """Embeddings [F,D] of the faces at ``points`` [F,5,2] in ``frames`` [F,H,W,3] with one chip."""
    index = torch.arange(frames.shape[0])
    pts = torch.from_numpy(np.asarray(points, np.float32))
    return PT.embed_with_chip(encoder, frames, index, pts, chip).numpy()  # type: ignore[arg-type]


def _dlib_norms(encoder: DlibFaceEncoder, frames: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """dlib's unnormalised descriptor norms on its own (tight) chip."""
    from reenact.faces.align import warp_to_crop

    M = similarity_from_points(torch.from_numpy(np.asarray(points, np.float32)), encoder.template())
    crops = warp_to_crop(frames, torch.arange(frames.shape[0]), M, encoder.crop_size)
    return encoder.descriptors(crops).norm(dim=1).numpy()


class Photos:
    """The labelled fixture photos: each one's image, largest face's points and label."""

    def __init__(self, fx: Path, detector: object) -> None:
        self.labels: list[str] = []
        self.images: list[torch.Tensor] = []
        self.points: list[np.ndarray] = []
        with open(fx / "identities.tsv", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                image = read_image(fx / row["image"])
                dets = detector.detect(image[None])[0]  # type: ignore[attr-defined]
                if len(dets) == 0:
                    continue
                self.labels.append(row["identity"])
                self.images.append(image)
                self.points.append(dets.points[largest_face(dets)])

    def embeddings(self, enc: object, chip: str) -> np.ndarray:
        return np.concatenate([_embed(enc, img[None], p[None], chip)
                               for img, p in zip(self.images, self.points, strict=True)])


def paste_stranger(frame: torch.Tensor, region: torch.Tensor, points: np.ndarray, photo: torch.Tensor,
                   photo_points: np.ndarray) -> torch.Tensor:
    """``frame`` with ``photo``'s face warped onto the face at ``points`` (five-point similarity)
    inside the face-shaped mask of ``region``.

    Conventions: frame, photo uint8 [H,W,3]; region float [5]; points [5,2]; returns uint8 [H,W,3].
    """
    height, width = frame.shape[:2]
    grown = region.clone()
    grown[2:4] *= 1.0 + 0.15
    left, top, right, bottom = head_boxes(grown[None], width, height)[0].tolist()
    if right - left < 2 or bottom - top < 2:
        return frame.clone()
    M = similarity_from_points(torch.from_numpy(np.asarray(photo_points, np.float32))[None],
                               torch.from_numpy(np.asarray(points, np.float32)))
    M[:, :, 2] -= torch.tensor([left, top], dtype=torch.float32)
    warped = warp_affine(photo.permute(2, 0, 1)[None].float(), M, (bottom - top, right - left), "border")[0]
    mask = region_mask(region, left, top, bottom - top, right - left)
    out = frame.clone()
    view = out[top:bottom, left:right].permute(2, 0, 1).float()
    out[top:bottom, left:right] = (view + (warped - view) * mask).round().clamp(0, 255).permute(1, 2, 0).to(torch.uint8)
    return out


def sample_frames(path: Path, gap: int, limit: int) -> list[torch.Tensor]:
    frames: list[torch.Tensor] = []
    with open_video(path, chunk_size=16) as reader:
        for chunk in reader:
            for i in range(chunk.frames.shape[0]):
                if (chunk.start_index + i) % gap == 0 and len(frames) < limit:
                    frames.append(chunk.frames[i].cpu())
            if len(frames) >= limit:
                break
    return frames


def clip_faces(fx: Path, detector: object, photos: Photos, gap: int, limit: int
               ) -> dict[str, tuple[torch.Tensor, np.ndarray, dict[str, torch.Tensor]]]:
    """Per clip: the original frames (one row per face), the faces' points, and each variant's frames."""
    rng = np.random.default_rng(27)
    out = {}
    for name, file in CLIPS.items():
        path = fx / "videos" / file
        if not path.is_file():
            continue
        strangers = [k for k, lab in enumerate(photos.labels) if lab not in CLIP_PEOPLE.get(name, ())]
        rows: list[torch.Tensor] = []
        pts: list[np.ndarray] = []
        variants: dict[str, list[torch.Tensor]] = {v: [] for v in VARIANTS}
        for frame in sample_frames(path, gap, limit):
            dets = detector.detect(frame[None])[0]  # type: ignore[attr-defined]
            if len(dets) == 0:
                continue
            regions = face_regions(torch.from_numpy(dets.boxes), torch.from_numpy(dets.points))
            for k in range(len(dets)):
                rows.append(frame)
                pts.append(dets.points[k])
                one = regions[k : k + 1]
                variants["flat"].append(redact_faces(frame, one, "flat"))
                variants["solid"].append(redact_faces(frame, one, "solid"))
                variants["blur"].append(redact_faces(frame, one, "blur"))
                variants["pixelate"].append(redact_faces(frame, one, "pixelate"))
                s = int(rng.choice(strangers))
                variants["stranger"].append(paste_stranger(frame, regions[k], dets.points[k], photos.images[s],
                                                           photos.points[s]))
        if rows:
            out[name] = (torch.stack(rows), np.stack(pts), {v: torch.stack(f) for v, f in variants.items()})
    return out


def clip_genuine(fx: Path, detector: object, gap: int) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Frames ``gap`` apart of the single-person clips and their face's points (genuine pairs)."""
    out = []
    for name in SINGLE_PERSON_CLIPS:
        path = fx / "videos" / CLIPS[name]
        if not path.is_file():
            continue
        frames, points = [], []
        for frame in sample_frames(path, gap, 10_000):
            dets = detector.detect(frame[None])[0]  # type: ignore[attr-defined]
            if len(dets):
                frames.append(frame)
                points.append(dets.points[largest_face(dets)])
        out.append((torch.stack(frames), np.stack(points)))
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _stats(x: np.ndarray) -> dict[str, float]:
    return {"median": round(float(np.median(x)), 4), "p90": round(float(np.quantile(x, 0.9)), 4),
            "max": round(float(x.max()), 4), "n": int(x.size)}


def operating_point(name: str, chip: str, enc: object, photos: Photos, fmr: float,
                    genuine_clips: list[tuple[torch.Tensor, np.ndarray]]) -> dict[str, object]:
    """Step 1 of the module docstring for one model and chip."""
    lab = np.asarray(photos.labels)
    same = lab[:, None] == lab[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    emb = photos.embeddings(enc, chip)
    sims = _cos(emb, emb)
    impostor = sims[~same & upper]
    genuine = [sims[same & upper]]
    for frames, points in genuine_clips:
        e = _embed(enc, frames, points, chip)
        s = _cos(e, e)
        genuine.append(s[np.triu(np.ones_like(s, dtype=bool), 1)])
    g = np.concatenate(genuine)
    at_fmr = float(np.quantile(impostor, 1.0 - fmr))
    row: dict[str, object] = {"impostor_pairs": int(impostor.size), "cos_at_fmr": round(at_fmr, 4)}
    op, source = at_fmr, f"{fmr:.0%} false matches on {impostor.size} different-person fixture photo pairs"
    if name == "dlib-resnet" and chip == "tight":
        assert isinstance(enc, DlibFaceEncoder)
        norms = np.concatenate([_dlib_norms(enc, img[None], p[None]) for img, p in
                                zip(photos.images, photos.points, strict=True)])
        n1, n2 = np.meshgrid(norms, norms, indexing="ij")
        pair_n1, pair_n2 = n1[~same & upper], n2[~same & upper]
        rule_cos = (pair_n1**2 + pair_n2**2 - DLIB_DISTANCE**2) / (2 * pair_n1 * pair_n2)
        dist = np.sqrt(np.maximum(pair_n1**2 + pair_n2**2 - 2 * pair_n1 * pair_n2 * impostor, 0.0))
        rule = float(np.median(rule_cos))
        row.update({"norm_median": round(float(np.median(norms)), 4), "rule_cos": round(rule, 4),
                    "rule_false_match_rate": float(np.mean(dist < DLIB_DISTANCE))})
        if rule < op:
            op, source = rule, (f"dlib's documented rule, descriptor distance < {DLIB_DISTANCE}, as a cosine at the "
                                f"median descriptor norm {np.median(norms):.3f} of the fixture photos")
    row.update({
        "operating_point": round(op, 4), "source": source,
        "false_match_rate": round(float(np.mean(impostor >= op)), 4),
        "genuine_pairs": int(g.size), "genuine_min": round(float(g.min()), 4),
        "genuine_q001": round(float(np.quantile(g, 0.001)), 4), "genuine_median": round(float(np.median(g)), 4),
        "genuine_at_or_above": round(float(np.mean(g >= op)), 4),
    })
    return row


def baseline(enc: object, chip: str, clips: dict[str, tuple[torch.Tensor, np.ndarray, dict[str, torch.Tensor]]],
             op: float, quantile: float = STRANGER_QUANTILE) -> dict[str, object]:
    """Step 2 of the module docstring for one model and chip."""
    per: dict[str, list[np.ndarray]] = {v: [] for v in VARIANTS}
    per_clip: dict[str, dict[str, float]] = {}
    for clip, (orig, points, variants) in clips.items():
        e0 = _embed(enc, orig, points, chip)
        sims = {v: np.sum(_embed(enc, f, points, chip) * e0, axis=1) for v, f in variants.items()}
        for v, x in sims.items():
            per[v].append(x)
        per_clip[clip] = {f"{v}_median": round(float(np.median(x)), 4) for v, x in sims.items()}
    s = {v: np.concatenate(x) for v, x in per.items()}
    diff = s["stranger"] - s["flat"]
    allowance = PT.BASELINE_ALLOWANCE
    limit = np.maximum(op, s["flat"] + allowance)
    row: dict[str, object] = {v: _stats(x) for v, x in s.items()}
    row["allowance"] = round(allowance, 4)
    row[f"stranger_minus_flat_q{int(quantile * 100):02d}"] = round(float(np.quantile(diff, quantile)), 4)
    row["stranger_minus_flat"] = {f"q{int(q * 100):02d}": round(float(np.quantile(diff, q)), 4)
                                  for q in (0.1, 0.5, 0.9)}
    for v in ("flat", "solid", "stranger"):
        row[f"{v}_at_or_above_op"] = round(float(np.mean(s[v] >= op)), 4)
    for v in ("stranger", "blur", "pixelate"):
        row[f"{v}_passes"] = round(float(np.mean(s[v] < limit)), 4)
        row[f"{v}_passes_op_only"] = round(float(np.mean(s[v] < op)), 4)
    row["per_clip"] = per_clip
    row["per_face"] = {v: [round(float(x), 4) for x in a] for v, a in s.items()}
    row["per_face"]["clip"] = [c for c, (orig, _p, _v) in clips.items() for _ in range(orig.shape[0])]
    return row


def markdown(table: dict[str, dict[str, dict[str, object]]], args: argparse.Namespace) -> str:
    lines = [
        "# Privacy calibration (bench/calibrate_privacy.py)", "",
        f"`python bench/calibrate_privacy.py --gap {args.gap} --frames {args.frames} --fmr {args.fmr}` "
        "(labelled fixture photos; baseline on every fixture clip, faces from the offline CenterFace).", "",
        "## Operating point (the attacker's), per recogniser and chip", "",
        "| model | chip | operating point | provenance | FMR at it | cos at 1 % FMR | dlib rule (cos) | "
        "rule FMR | genuine pairs | genuine min / 0.1 % / median | genuine >= op |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, chips in table.items():
        for chip, r in chips.items():
            o: dict = r["op"]  # type: ignore[assignment]
            lines.append(
                f"| {name} | {chip} | {o['operating_point']:.4f} | {o['source']} | {o['false_match_rate']:.2%} | "
                f"{o['cos_at_fmr']:.4f} | {o.get('rule_cos', '-')} | "
                f"{o.get('rule_false_match_rate', '-') if 'rule_false_match_rate' not in o else format(o['rule_false_match_rate'], '.2%')} | "
                f"{o['genuine_pairs']} | {o['genuine_min']:.4f} / {o['genuine_q001']:.4f} / {o['genuine_median']:.4f} | "
                f"{o['genuine_at_or_above']:.1%} |")
    lines += ["", "## Same-context baseline (original frame vs the same frame with the face replaced)", "",
              "Similarity of each sampled face to its original in the same frame, median / 90th percentile / max. "
              "`flat`: the face-shaped region filled with its mean colour (the run's baseline); `solid`: filled black; "
              "`stranger`: another fixture person's photo pasted there; `stranger - flat q90`: the 90 % quantile "
              "of their difference (for the record); `allowance`: the rule's (0: no more similar than the context "
              "alone). `passes`: share below max(op, flat + allowance) (in brackets: below op alone).", "",
              "| model | chip | faces | flat | solid | stranger | stranger - flat q90 | allowance | "
              "flat / solid / stranger >= op | stranger passes | blur | blur passes | pixelate | pixelate passes |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def st(d: dict) -> str:
        return f"{d['median']:.3f} / {d['p90']:.3f} / {d['max']:.3f}"

    for name, chips in table.items():
        for chip, r in chips.items():
            b: dict = r["baseline"]  # type: ignore[assignment]
            lines.append(
                f"| {name} | {chip} | {b['flat']['n']} | {st(b['flat'])} | {st(b['solid'])} | {st(b['stranger'])} | "
                f"{b['stranger_minus_flat_q90']:+.4f} | {b['allowance']:+.4f} | {b['flat_at_or_above_op']:.1%} / {b['solid_at_or_above_op']:.1%} / "
                f"{b['stranger_at_or_above_op']:.1%} | "
                f"{b['stranger_passes']:.1%} ({b['stranger_passes_op_only']:.1%}) | {st(b['blur'])} | "
                f"{b['blur_passes']:.1%} ({b['blur_passes_op_only']:.1%}) | {st(b['pixelate'])} | "
                f"{b['pixelate_passes']:.1%} ({b['pixelate_passes_op_only']:.1%}) |")
    lines += ["", "Per clip (median similarity: flat / solid / stranger / blur / pixelate):", ""]
    for name, chips in table.items():
        for chip, r in chips.items():
            pc: dict = r["baseline"]["per_clip"]  # type: ignore[index]
            parts = [f"{c} " + "/".join(f"{v[k + '_median']:.3f}" for k in VARIANTS) for c, v in pc.items()]
            lines.append(f"- {name}/{chip}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=int, default=10, help="frames between sampled clip frames")
    parser.add_argument("--frames", type=int, default=6, help="frames sampled per clip for the baseline")
    parser.add_argument("--fmr", type=float, default=0.01, help="the attacker's false-match rate")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("fixtures not found (REENACT_FIXTURES or ../shared/fixtures)", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    detector = make_detector("offline")
    encoders = _encoders(fx)
    photos = Photos(fx, detector)
    genuine_clips = clip_genuine(fx, detector, args.gap)
    clips = clip_faces(fx, detector, photos, args.gap, args.frames)
    table: dict[str, dict[str, dict[str, object]]] = {}
    for name, enc in encoders.items():
        table[name] = {}
        for chip in PT.CHIPS:
            op = operating_point(name, chip, enc, photos, args.fmr, genuine_clips)
            base = baseline(enc, chip, clips, float(op["operating_point"]))  # type: ignore[arg-type]
            table[name][chip] = {"op": op, "baseline": base}
            print(f"{name:12s} {chip:5s} op {op['operating_point']:.4f} ({op['source']}; FMR {op['false_match_rate']:.2%}, "
                  f"1 % FMR cos {op['cos_at_fmr']:.4f}, rule {op.get('rule_cos', '-')}) genuine min "
                  f"{op['genuine_min']:.4f} | baseline flat {base['flat']} stranger {base['stranger']} "
                  f"allowance {base['allowance']:+.4f} blur {base['blur']} passes {base['blur_passes']:.1%} "
                  f"pixelate passes {base['pixelate_passes']:.1%}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    text = markdown(table, args)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
