"""Privacy of deidentify judged by models the run did not use, over the fixture clips.

For each fixture clip (cut to its first ``--frames`` frames) and each method, ``deidentify``
runs as a user runs it (the CLI, default pack); deface (blur, its defaults) runs on the same
cut as the reference every user compares with. Each output is judged by:

* an **independent detector**, the fixture SCRFD-500M through the project's insightface
  backend, run on the input: the share of its faces whose pixels the output left unchanged
  (mean absolute difference inside the box below ``--unchanged`` levels);
* an **independent recogniser**, one the run did not use in its checks. With the run's
  identity model dlib (the offline default) it is the fixture MobileFace V2 (input mean 0,
  std 1); each face SCRFD found in the input is embedded at the same place in the output and
  compared with its original. With any other identity model it is dlib's own pipeline (HOG
  detector, 5-point chip, descriptor distance below 0.6).

What "linked back" means for MobileFace. Its threshold at a 0.1 % false-match rate on the
sharp fixture photos (0.45) does not transfer to small, dim faces: on the 720p ``friends``
clip a head box filled solid black scores above it against 41 % of the originals (dark faces
embed close to a black image), and different people of one frame reach 0.63. So:

* the judge looks only at the head box (everything outside it set black, in the input and
  the output alike: the background around a face is the same pixels in both and would link
  them by itself);
* a face is **linked** when its similarity to its original is at or above the photo
  threshold AND higher than its similarity to anyone else: the other people of its frame and
  the fixture photos (the recogniser picks the right person); ``raw`` counts the threshold
  alone;
* ``control_solid`` (SCRFD's head boxes filled black, no run) is the judge's floor on the
  clip: what it "links" when nothing of the face is left. The goal is the linked share
  **above that floor**: ``reid_independent`` = linked share - control's linked share.

Each row also gives the median and 95th percentile of MobileFace's similarity between the
output faces and their originals (``med``, ``p95``): the margin under the threshold, which is
what has to hold for a recogniser and clips this bench does not have.

Prints one row per clip and output, the fps of each method, and goal lines
``goal reid_independent_<method>_<clip>`` and ``goal untouched_faces_<method>_<clip>``
(target <= 0.0).

Run:  python bench/privacy.py [--frames 40] [--clips d0 friends ...] [--methods synthetic blur]
Needs the fixtures (REENACT_FIXTURES or ../shared/fixtures). Takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
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

from reenact.faces.detect import DetectorSettings, largest_face, make_detector  # noqa: E402
from reenact.faces.identity import OnnxArcFaceEncoder  # noqa: E402
from reenact.io.images import read_image  # noqa: E402
from reenact.io.reader import open_video  # noqa: E402
from reenact.pipeline.privacy import head_box, redact_region  # noqa: E402
from testing.fixtures import CLIPS, fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402
from testing.media import cut_clip  # noqa: E402
from testing.models import MOBILEFACE, SCRFD  # noqa: E402

FALSE_MATCH_RATE = 0.001
METHODS = ("synthetic", "blur", "pixelate", "solid")
#: fixture photo identities that appear in a clip (never counted as other people for it)
CLIP_PEOPLE = {"hamilton": ("lin_manuel_miranda", "alex_lacamoire")}
DLIB_DISTANCE = 0.6
#: the head box (face box grown by this share, twice above) the judge looks at, as the pipeline's default
HEAD_MARGIN = 0.3


def read_frames(path: Path) -> torch.Tensor:
    """All frames of a (short) clip, uint8 [T,H,W,3]."""
    with open_video(path, chunk_size=16) as reader:
        return torch.cat([c.frames.cpu() for c in reader])


def embed_heads(mobileface: OnnxArcFaceEncoder, frame: torch.Tensor, boxes: np.ndarray,
                points: np.ndarray) -> torch.Tensor:
    """MobileFace codes [N,D] of each face of ``frame`` with everything outside its head box
    (the region a redaction may change, :func:`head_box` at ``HEAD_MARGIN``) set black.

    Without the mask the chip's corners carry the same background pixels in the input and the
    output, and the judge links a face to its original even where the head is filled solid.
    """
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
            try:
                image = torch.as_tensor(np.asarray(read_image(fx / row["image"])))
            except Exception:  # noqa: BLE001 - a photo the reader refuses is left out
                continue
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
        """Output faces at or above ``threshold`` to their original and, with ``identified``,
        closer to it than to anyone else (the frame's other people and the fixture photos)."""
        gen = np.asarray(self.genuine)
        hit = gen >= threshold
        return int((hit & (gen > np.asarray(self.impostor))).sum() if identified else hit.sum())


def count_untouched(before: torch.Tensor, after: torch.Tensor, dets: list[object], unchanged: float) -> tuple[int, int]:
    """(faces SCRFD found in ``before``, those whose box ``after`` left within ``unchanged``
    levels on average)."""
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
    """Each input face (SCRFD's ``dets`` per frame, MobileFace ``codes_in`` per frame) against
    the same place in ``after``."""
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
            out[t] = redact_region(out[t], head_box(box, HEAD_MARGIN, frames.shape[2], frames.shape[1]), "solid")
    return out


class DlibPipeline:
    """dlib's own recognition pipeline: HOG detector, 5-point chip, ResNet descriptor."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def descriptor(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The descriptor of the HOG face overlapping ``box`` most, or None when HOG finds none."""
        x1, y1, x2, y2 = box
        rects = self.hog(frame, 1)
        best, best_iou = None, 0.1
        for r in rects:
            ix = max(0, min(x2, r.right()) - max(x1, r.left()))
            iy = max(0, min(y2, r.bottom()) - max(y1, r.top()))
            inter = ix * iy
            union = (x2 - x1) * (y2 - y1) + r.width() * r.height() - inter
            if inter / max(union, 1e-6) > best_iou:
                best, best_iou = r, inter / union
        if best is None:
            return None
        chip = self.dlib.get_face_chip(frame, self.shape(frame, best), size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def run_deidentify(clip: Path, out: Path, method: str) -> float:
    """Run the CLI; return its wall time in seconds."""
    args = [str(clip), "-o", str(out), "--overwrite", "--quiet", "--device", "cpu"]
    if method != "synthetic":
        args += ["--method", method]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys; from reenact.cli import deidentify_main; "
                           "sys.exit(deidentify_main())", *args], capture_output=True, text=True, cwd=REPO,
                          env=_env())
    if done.returncode != 0:
        raise RuntimeError(f"deidentify {method} on {clip.name} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - started


def judge_dlib(before: torch.Tensor, after: torch.Tensor, dets: list[object],
               dlib_pipe: DlibPipeline) -> tuple[int, int]:
    """(face-frames dlib's pipeline sees in the input, those linked back at 0.6)."""
    judged = linked = 0
    for t in range(before.shape[0]):
        for box in dets[t].boxes:  # type: ignore[attr-defined]
            d_in = dlib_pipe.descriptor(before[t].numpy(), box)
            if d_in is None:
                continue  # dlib's pipeline cannot see this face in the input: nothing to link
            judged += 1
            d_out = dlib_pipe.descriptor(after[t].numpy(), box)
            linked += int(d_out is not None and float(np.linalg.norm(d_in - d_out)) < DLIB_DISTANCE)
    return judged, linked


def run_deface(clip: Path, out: Path) -> float:
    """deface's blur (its defaults) on ``clip``; its wall time in seconds."""
    exe = shutil.which("deface") or str(Path(sys.executable).parent / "deface")
    started = time.perf_counter()
    done = subprocess.run([exe, str(clip), "-o", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"deface on {clip.name} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--methods", nargs="*", default=["synthetic", "blur"], choices=METHODS)
    parser.add_argument("--unchanged", type=float, default=1.0, help="mean abs diff below which a face is untouched")
    parser.add_argument("--recogniser", choices=["auto", "mobileface", "dlib"], default="auto",
                        help="auto: MobileFace when the run used dlib (the offline default), else dlib")
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("SKIPPED: no fixtures (set REENACT_FIXTURES)")
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    scrfd = make_detector("insightface", SCRFD.file(fx), DetectorSettings(score_threshold=0.5, min_face_size=0))
    mobileface = OnnxArcFaceEncoder(MOBILEFACE.file(fx), input_mean=MOBILEFACE.mean, input_std=MOBILEFACE.std)
    # the default (offline) pack checks with dlib, so MobileFace is the independent recogniser
    recogniser = "mobileface" if args.recogniser == "auto" else args.recogniser
    photos, labels = photo_codes(fx, scrfd, mobileface)
    photo_pairs = photo_impostors(photos, labels)
    photo_threshold = float(np.quantile(photo_pairs, 1.0 - FALSE_MATCH_RATE))
    dlib_pipe = DlibPipeline() if recogniser == "dlib" else None
    print(f"independent detector: SCRFD-500M (fixture); independent recogniser: {recogniser}")
    print(f"MobileFace V2 at {FALSE_MATCH_RATE:.1%} false matches on the fixture photos: cosine {photo_threshold:.4f} "
          f"({photo_pairs.size} different-person pairs). linked: at or above it AND closer to the original than "
          f"to anyone else (the frame's other faces, {len(labels)} fixture photos); raw: at or above it")
    goals: list[str] = []
    fps: dict[str, list[float]] = {m: [] for m in args.methods}
    print(f"{'clip':9s} {'output':13s} {'frames':>6s} {'faces':>6s} {'untouched':>9s} {'judged':>7s} "
          f"{'linked':>7s} {'raw':>5s} {'thresh':>7s} {'med':>6s} {'p95':>6s} {'fps':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips:
            src = fx / "videos" / CLIPS[name]
            if not src.is_file():
                print(f"{name}: SKIPPED (missing {src.name})")
                continue
            clip = cut_clip(src, Path(tmp) / f"{name}.mp4", args.frames)
            before = read_frames(clip)
            dets = [scrfd.detect(before[t : t + 1])[0] for t in range(before.shape[0])]  # type: ignore[attr-defined]
            codes_in = [embed_heads(mobileface, before[t], d.boxes, d.points) for t, d in enumerate(dets)]
            keep = ~np.isin(labels, list(CLIP_PEOPLE.get(name, ())))
            outputs: list[tuple[str, torch.Tensor, float | None]] = [("control_solid", solid_control(before, dets), None)]
            wall = run_deface(clip, Path(tmp) / f"{name}.deface.mp4")
            # deface's encoder pads odd sizes to a multiple of 16 (360 -> 368): judged on the picture
            deface = read_frames(Path(tmp) / f"{name}.deface.mp4")[:, : before.shape[1], : before.shape[2]]
            outputs.append(("deface_blur", deface, wall))
            for method in args.methods:
                out = Path(tmp) / f"{name}.{method}.mp4"
                wall = run_deidentify(clip, out, method)
                outputs.append((method, read_frames(out), wall))
            floor = 0.0
            for tool, after, wall in outputs:
                if after.shape != before.shape:
                    raise RuntimeError(f"{name} {tool}: output {tuple(after.shape)} != input {tuple(before.shape)}")
                rate = f"{before.shape[0] / wall:6.2f}" if wall else f"{'-':>6s}"
                faces, untouched = count_untouched(before, after, dets, args.unchanged)
                if recogniser == "mobileface":
                    j = judge_mobileface(after, dets, codes_in, mobileface, photos[keep])
                    thr, judged = photo_threshold, len(j.genuine)
                    linked, raw = j.linked(thr), j.linked(thr, identified=False)
                    sims = np.asarray(j.genuine) if j.genuine else np.full(1, np.nan)
                    margin = f"{np.median(sims):6.3f} {np.quantile(sims, 0.95):6.3f}"
                else:
                    assert dlib_pipe is not None
                    judged, linked = judge_dlib(before, after, dets, dlib_pipe)
                    thr, raw = DLIB_DISTANCE, linked
                    margin = f"{'-':>6s} {'-':>6s}"
                if tool == "control_solid":
                    floor = linked / judged if judged else 0.0
                print(f"{name:9s} {tool:13s} {before.shape[0]:6d} {faces:6d} {untouched:9d} {judged:7d} {linked:7d} "
                      f"{raw:5d} {thr:7.4f} {margin} {rate}", flush=True)
                if tool in args.methods:
                    assert wall is not None
                    fps[tool].append(before.shape[0] / wall)
                    reid = (linked / judged if judged else 0.0) - floor
                    share = untouched / faces if faces else 0.0
                    goals.append(goal(f"reid_independent_{tool}_{name}", reid, "<=", 0.0, "+.4f"))
                    goals.append(goal(f"untouched_faces_{tool}_{name}", share, "<=", 0.0, ".4f"))
    for method, rates in fps.items():
        if rates:
            print(f"fps {method}: median {float(np.median(rates)):.2f} (whole process, model loading included)")
    for line in goals:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
