"""How much of a face the face-shaped redaction leaves to a recogniser, as a function of the face's width.

Scale invariance is what :data:`reenact.blend.redact.BLUR_SIGMA` relies on (sigma a share of
the face's width), but a recogniser is not scale invariant: its chip is 112-150 px, so a
small face is enlarged into it and the original it compares with is itself soft; a blur of
0.2 of the face's width removes little of what it still uses. This bench measures where
that starts (:data:`reenact.blend.redact.SMALL_FACE` comes from it):

* **photos**: each labelled fixture photo (largest SCRFD face; every ``--photo-step``-th)
  downscaled so that its face region (:func:`reenact.blend.redact.face_regions` from
  SCRFD's box and points) is ``--widths`` px wide (never enlarged);
* **clips**: the SCRFD faces of the first ``--frames`` frames of ``--clips``, at their size,
  binned by region width (``--clip-bins``).

Variants (``--variants``): ``control`` (the judge's head box filled black: the floor);
``blur_<F>`` / ``pix_<F>``: the face-shaped blur / pixelation with the strength of a face at
least ``F`` px wide (``_0``: its own width); ``_g12`` / ``_g14``: regions under 144 px grown
1.2 / 1.4 times; ``run_blur`` / ``run_pixelate``: :func:`reenact.blend.redact.redact_faces`
as it is now. Each redacted face is judged against the same (downscaled) original as
``bench/privacy.py`` judges: the fixture MobileFace V2 at its 0.1 %-false-match threshold on
the head box alone (linked: at or above it and closer to the original than to any other
fixture photo or face of the frame) and dlib's descriptor (this project's port, tight chip)
at its operating point.

Run:  python bench/redact_size.py [--photo-step 4] [--no-photos] [--clips friends crowd hamilton]
      [--variants control blur_0 blur_144 ...]   (slow on a busy machine: minutes per clip)
Prints one table per source: width bin, faces, and per variant the share MobileFace links,
its median similarity, and the share dlib sees at or above its operating point.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from privacy import HEAD_MARGIN, embed_heads, head_box, photo_codes, photo_impostors, read_frames  # noqa: E402

from reenact.blend import redact  # noqa: E402
from reenact.faces.detect import largest_face  # noqa: E402
from reenact.faces.identity import DlibFaceEncoder  # noqa: E402
from reenact.faces.privacy_thresholds import operating_point  # noqa: E402
from reenact.io.images import read_image  # noqa: E402
from testing.fixtures import CLIPS, fixtures_dir  # noqa: E402
from testing.media import cut_clip  # noqa: E402
from testing.models import independent_judges  # noqa: E402

Variant = Callable[[torch.Tensor, np.ndarray, np.ndarray], torch.Tensor]


def _regions(boxes: np.ndarray, points: np.ndarray) -> torch.Tensor:
    return redact.face_regions(torch.from_numpy(np.asarray(boxes, np.float32)),
                               torch.from_numpy(np.asarray(points, np.float32)))


def control(frame: torch.Tensor, boxes: np.ndarray, points: np.ndarray) -> torch.Tensor:
    out = frame.clone()
    for box in boxes:
        left, top, right, bottom = head_box(box, HEAD_MARGIN, frame.shape[1], frame.shape[0])
        out[top:bottom, left:right] = 0
    return out


def variants() -> dict[str, Variant]:
    """The redactions compared: each with the strength of a face ``floor`` px wide at least
    (``blur_112``: sigma BLUR_SIGMA x max(width, 112); ``pix_112``: blocks of max(width, 112) /
    PIXELATE_CELLS; ``_0``: strength from the face's own width), and the run's own
    (``run_blur``, ``run_pixelate``: whatever :mod:`reenact.blend.redact`'s rule is now);
    ``_g12``/``_g14``: regions under 144 px grown 1.2/1.4 times (to the hair)."""
    def fixed(method: str, floor: float, grow: float = 1.0) -> Variant:
        def apply(frame: torch.Tensor, boxes: np.ndarray, points: np.ndarray) -> torch.Tensor:
            out = frame.clone()
            height, width = frame.shape[:2]
            for r in _regions(boxes, points):
                if 2.0 * float(r[2]) < floor:
                    r[2:4] *= grow
                g = r.clone()
                g[2:4] *= 1.0 + redact.FEATHER
                left, top, right, bottom = redact.head_boxes(g[None], width, height)[0].tolist()
                if right <= left or bottom <= top:
                    continue
                view = out[top:bottom, left:right]
                patch = view.permute(2, 0, 1).float()
                mask = redact.region_mask(r, left, top, bottom - top, right - left)
                w = max(2.0 * float(r[2]), floor)
                done = (redact.blur_patch(patch, redact.BLUR_SIGMA * w) if method == "blur"
                        else redact.pixelate_patch(patch, w / redact.PIXELATE_CELLS))
                view.copy_((patch + (done - patch) * mask[None]).round().clamp(0, 255).permute(1, 2, 0))
            return out
        return apply

    def run_rule(method: str) -> Variant:
        return lambda frame, boxes, points: redact.redact_faces(frame, _regions(boxes, points), method)

    out: dict[str, Variant] = {"control": control}
    for method in ("blur", "pix"):
        for floor in (0, 112, 144, 176, 192, 224, 256):
            out[f"{method}_{floor}"] = fixed("blur" if method == "blur" else "pixelate", floor)
    for grow in (1.2, 1.4):
        out[f"blur_144_g{round(grow * 10)}"] = fixed("blur", 144, grow)
        out[f"pix_144_g{round(grow * 10)}"] = fixed("pixelate", 144, grow)
    out["run_blur"] = run_rule("blur")
    out["run_pixelate"] = run_rule("pixelate")
    return out


class Judges:
    def __init__(self, fx: Path) -> None:
        self.scrfd, self.mf = independent_judges(fx)
        self.photos, self.labels = photo_codes(fx, self.scrfd, self.mf)
        self.mf_threshold = float(np.quantile(photo_impostors(self.photos, self.labels), 0.999))
        self.dlib = DlibFaceEncoder()
        self.dlib_op = operating_point(self.dlib.name, "tight").threshold

    def originals(self, before: torch.Tensor, boxes: np.ndarray, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(MobileFace head-box codes, dlib codes) of the original faces."""
        pts = torch.from_numpy(np.asarray(points, np.float32))
        idx = torch.zeros(len(boxes), dtype=torch.long)
        return embed_heads(self.mf, before, boxes, points), F.normalize(self.dlib.embed(before[None], idx, pts), dim=1)

    def judge(self, ref: tuple[torch.Tensor, torch.Tensor], after: torch.Tensor, boxes: np.ndarray, points: np.ndarray,
              others: torch.Tensor) -> list[tuple[bool, float, bool]]:
        """Per face: (MobileFace links it, its MobileFace similarity, dlib at or above its operating point)."""
        pts = torch.from_numpy(np.asarray(points, np.float32))
        a, da = ref
        b = embed_heads(self.mf, after, boxes, points)
        sims = (b @ a.T).numpy()
        rest = (b @ others.T).numpy().max(axis=1) if len(others) else np.full(len(boxes), -1.0)
        idx = torch.zeros(len(boxes), dtype=torch.long)
        db = F.normalize(self.dlib.embed(after[None], idx, pts), dim=1)
        dsim = (da * db).sum(dim=1).numpy()
        out = []
        for i in range(len(boxes)):
            g = float(sims[i, i])
            imp = max(float(np.delete(sims[i], i).max(initial=-1.0)), float(rest[i]))
            out.append((g >= self.mf_threshold and g > imp, g, bool(dsim[i] >= self.dlib_op)))
        return out


def _table(title: str, rows: dict[tuple[int, str], list[tuple[bool, float, bool]]], bins: list[int],
           names: list[str]) -> None:
    print(f"\n== {title}: per variant  MobileFace linked share / median similarity / dlib >= op share")
    print(f"{'width':>7s} {'n':>4s} " + " ".join(f"{n:>20s}" for n in names))
    for w in bins:
        cells = []
        n = 0
        for name in names:
            r = rows.get((w, name), [])
            n = len(r)
            if not r:
                cells.append(f"{'-':>20s}")
                continue
            link = np.mean([x[0] for x in r])
            med = np.median([x[1] for x in r])
            dl = np.mean([x[2] for x in r])
            cells.append(f"{link:6.2f}/{med:6.3f}/{dl:5.2f}")
        print(f"{w:7d} {n:4d} " + " ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="*", default=[48, 80, 112, 160])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--clip-bins", type=int, nargs="*", default=[0, 48, 80, 112, 144, 200])
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--no-photos", action="store_true")
    parser.add_argument("--photo-step", type=int, default=1, help="use every Nth labelled photo")
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("SKIPPED: no fixtures (set REENACT_FIXTURES)")
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    judges = Judges(fx)
    all_variants = variants()
    names = args.variants or list(all_variants)
    print(f"MobileFace threshold {judges.mf_threshold:.4f} (0.1% false matches); dlib tight operating point "
          f"{judges.dlib_op:.4f}; redact.BLUR_SIGMA {redact.BLUR_SIGMA}")
    # 1. photos, downscaled to each face width
    rows: dict[tuple[int, str], list[tuple[bool, float, bool]]] = {}
    if not args.no_photos:
        with open(fx / "identities.tsv", newline="") as fh:
            entries = list(csv.DictReader(fh, delimiter="\t"))[:: args.photo_step]
        for k, row in enumerate(entries):
            image = torch.as_tensor(np.asarray(read_image(fx / row["image"])))
            dets = judges.scrfd.detect(image[None])[0]  # type: ignore[attr-defined]
            if not len(dets):
                continue
            i = largest_face(dets)
            bw = 2.0 * float(_regions(dets.boxes[i : i + 1], dets.points[i : i + 1])[0, 2])
            others = judges.photos[torch.from_numpy(judges.labels != row["identity"])]
            for w in args.widths:
                scale = w / bw
                if scale > 1.0:
                    continue
                small = F.interpolate(image.permute(2, 0, 1)[None].float(), scale_factor=scale, mode="area",
                                      recompute_scale_factor=False)
                small = small[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
                boxes, points = dets.boxes[i : i + 1] * scale, dets.points[i : i + 1] * scale
                ref = judges.originals(small, boxes, points)
                for name in names:
                    after = all_variants[name](small, boxes, points)
                    rows.setdefault((w, name), []).extend(judges.judge(ref, after, boxes, points, others))
            print(f"photo {k + 1}/{len(entries)}", end="\r", file=sys.stderr)
        _table("fixture photos downscaled (face region width px)", rows, args.widths, names)
    # 2. clip faces at their own size, binned by face box width
    crow: dict[tuple[int, str], list[tuple[bool, float, bool]]] = {}
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "redact_size"
    tmp.mkdir(exist_ok=True)
    bins = sorted(args.clip_bins)
    for name, file in CLIPS.items():
        if name not in args.clips:
            continue
        clip = cut_clip(fx / "videos" / file, tmp / f"{name}.mp4", args.frames)
        frames = read_frames(clip)
        for t in range(frames.shape[0]):
            dets = judges.scrfd.detect(frames[t : t + 1])[0]  # type: ignore[attr-defined]
            if not len(dets):
                continue
            widths = 2.0 * _regions(dets.boxes, dets.points)[:, 2].numpy()
            ref = judges.originals(frames[t], dets.boxes, dets.points)
            for vname in names:
                after = all_variants[vname](frames[t], dets.boxes, dets.points)
                res = judges.judge(ref, after, dets.boxes, dets.points, judges.photos)
                for wv, r in zip(widths, res, strict=True):
                    b = max(x for x in bins if x <= wv)
                    crow.setdefault((b, vname), []).append(r)
    _table("fixture clip faces (bin: face region width >= px)", crow, bins, names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
