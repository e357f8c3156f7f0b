"""Privacy of deidentify judged by models the run did not use, over the fixture clips.

For each fixture clip (cut to its first ``--frames`` frames) and each method, ``deidentify``
runs as a user runs it (the CLI, default pack), then the output is judged by:

* an **independent detector**, the fixture SCRFD-500M through the project's insightface
  backend, run on the input: the share of its faces whose pixels the output left unchanged
  (mean absolute difference inside the box below ``--unchanged`` levels);
* an **independent recogniser**, one the run did not use in its checks: with the run's
  identity model dlib (the offline default), the fixture MobileFace V2 (input mean 0, std 1)
  at its 0.1 %-false-match threshold, calibrated here on the impostor pairs of the fixture
  photos (``identities.tsv``); with any other identity model, dlib's own pipeline (HOG
  detector, 5-point chip, descriptor distance below 0.6). The share of output face-frames
  (the faces SCRFD found in the input, embedded at the same place in the output) that it
  links back to the input face.

Methods: ``synthetic`` (the default) and ``blur`` (``--method blur`` when the CLI has it,
else SKIPPED). Prints one table row per clip and method, the fps of each method, and goal
lines ``goal reid_independent_<method>_<clip>`` and ``goal untouched_faces_<method>_<clip>``
(target <= 0.0).

Run:  python bench/privacy.py [--frames 40] [--clips d0 friends ...]
Needs the fixtures (REENACT_FIXTURES or ../shared/fixtures). Takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reenact.faces.detect import DetectorSettings, largest_face, make_detector  # noqa: E402
from reenact.faces.identity import OnnxArcFaceEncoder  # noqa: E402
from reenact.io.images import read_image  # noqa: E402
from reenact.io.reader import open_video  # noqa: E402
from testing.fixtures import fixtures_dir  # noqa: E402

CLIPS = {
    "d0": "liveportrait_d0.mp4",
    "d12": "liveportrait_d12.mp4",
    "katie": "sadtalker_WDA_KatieHill_000.mp4",
    "hamilton": "face_recognition_short_hamilton_clip.mp4",
    "friends": "mobileface_friends1.mp4",
    "crowd": "facenet_pytorch_video.mp4",
}
FALSE_MATCH_RATE = 0.001
DLIB_DISTANCE = 0.6


def trim(src: Path, dst: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``src`` (video only, near-lossless) as ``dst``."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate or Fraction(25))
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = {"crf": "12"}
        for i, frame in enumerate(inp.decode(vin)):
            if i >= frames:
                break
            for packet in vout.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return dst


def read_frames(path: Path) -> torch.Tensor:
    """All frames of a (short) clip, uint8 [T,H,W,3]."""
    with open_video(path, chunk_size=16) as reader:
        return torch.cat([c.frames.cpu() for c in reader])


def mobileface_threshold(fx: Path, detector: object, encoder: OnnxArcFaceEncoder) -> tuple[float, int]:
    """MobileFace's cosine similarity at a 0.1 % false-match rate on the fixture photos'
    impostor pairs, and the number of impostor pairs."""
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
            code = encoder.embed(image[None], torch.zeros(1, dtype=torch.long), torch.from_numpy(dets.points[k : k + 1]))
            labels.append(row["identity"])
            codes.append(code[0])
    emb = torch.stack(codes)
    sims = (emb @ emb.T).numpy()
    lab = np.asarray(labels)
    iu = np.triu_indices(len(lab), 1)
    impostor = sims[iu][lab[iu[0]] != lab[iu[1]]]
    return float(np.quantile(impostor, 1.0 - FALSE_MATCH_RATE)), int(impostor.size)


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


def has_method_option() -> bool:
    out = subprocess.run([sys.executable, "-c", "from reenact.cli import deidentify_main; deidentify_main()",
                          "--help"], capture_output=True, text=True, cwd=REPO, env=_env())
    return "--method" in out.stdout


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


def judge(before: torch.Tensor, after: torch.Tensor, detector: object, recogniser: str,
          mobileface: OnnxArcFaceEncoder, threshold: float, dlib_pipe: DlibPipeline | None,
          unchanged: float) -> tuple[int, int, int, int]:
    """(faces, untouched, face-frames judged by the recogniser, linked back)."""
    faces = untouched = judged = linked = 0
    for t in range(before.shape[0]):
        dets = detector.detect(before[t : t + 1])[0]  # type: ignore[attr-defined]
        for k in range(len(dets)):
            x1, y1, x2, y2 = (int(round(v)) for v in dets.boxes[k])
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            faces += 1
            diff = (before[t, y1:y2, x1:x2].float() - after[t, y1:y2, x1:x2].float()).abs().mean()
            untouched += int(float(diff) < unchanged)
            if recogniser == "mobileface":
                pts = torch.from_numpy(dets.points[k : k + 1])
                both = torch.stack([before[t], after[t]])
                codes = mobileface.embed(both, torch.tensor([0, 1]), torch.cat([pts, pts]))
                judged += 1
                linked += int(float(codes[0] @ codes[1]) >= threshold)
            else:
                assert dlib_pipe is not None
                box = dets.boxes[k]
                d_in = dlib_pipe.descriptor(before[t].numpy(), box)
                if d_in is None:
                    continue  # dlib's pipeline cannot see this face in the input: nothing to link
                judged += 1
                d_out = dlib_pipe.descriptor(after[t].numpy(), box)
                linked += int(d_out is not None and float(np.linalg.norm(d_in - d_out)) < DLIB_DISTANCE)
    return faces, untouched, judged, linked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--unchanged", type=float, default=1.0, help="mean abs diff below which a face is untouched")
    parser.add_argument("--recogniser", choices=["auto", "mobileface", "dlib"], default="auto",
                        help="auto: MobileFace when the run used dlib (the offline default), else dlib")
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("SKIPPED: no fixtures (set REENACT_FIXTURES)")
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    scrfd = make_detector("insightface", fx / "models/scrfd/scrfd_500m_kps.onnx",
                          DetectorSettings(score_threshold=0.5, min_face_size=0))
    mobileface = OnnxArcFaceEncoder(fx / "models/mobileface_recognition_onnx/mobileface_V2.onnx",
                                    input_mean=0.0, input_std=1.0)
    # the default (offline) pack checks with dlib, so MobileFace is the independent recogniser
    recogniser = "mobileface" if args.recogniser == "auto" else args.recogniser
    threshold, impostors = mobileface_threshold(fx, scrfd, mobileface)
    dlib_pipe = DlibPipeline() if recogniser == "dlib" else None
    print(f"independent detector: SCRFD-500M (fixture); independent recogniser: {recogniser}")
    print(f"MobileFace V2 threshold at {FALSE_MATCH_RATE:.1%} false matches: cosine {threshold:.4f} "
          f"({impostors} impostor pairs of the fixture photos)")
    methods = ["synthetic", "blur"] if has_method_option() else ["synthetic"]
    if "blur" not in methods:
        print("blur: SKIPPED (deidentify --help has no --method yet)")
    goals: list[str] = []
    fps: dict[str, list[float]] = {m: [] for m in methods}
    print(f"{'clip':10s} {'method':10s} {'frames':>6s} {'faces':>6s} {'untouched':>9s} {'judged':>7s} "
          f"{'linked':>7s} {'fps':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips:
            src = fx / "videos" / CLIPS[name]
            if not src.is_file():
                print(f"{name}: SKIPPED (missing {src.name})")
                continue
            clip = trim(src, Path(tmp) / f"{name}.mp4", args.frames)
            before = read_frames(clip)
            for method in methods:
                out = Path(tmp) / f"{name}.{method}.mp4"
                wall = run_deidentify(clip, out, method)
                after = read_frames(out)
                if after.shape != before.shape:
                    raise RuntimeError(f"{name} {method}: output {tuple(after.shape)} != input {tuple(before.shape)}")
                faces, untouched, judged, linked = judge(before, after, scrfd, recogniser, mobileface, threshold,
                                                         dlib_pipe, args.unchanged)
                rate = before.shape[0] / wall
                fps[method].append(rate)
                reid = linked / judged if judged else 0.0
                share = untouched / faces if faces else 0.0
                print(f"{name:10s} {method:10s} {before.shape[0]:6d} {faces:6d} {untouched:9d} {judged:7d} "
                      f"{linked:7d} {rate:6.2f}", flush=True)
                goals.append(f"goal reid_independent_{method}_{name}: {reid:.4f} (target <= 0.0) "
                             f"{'PASS' if reid <= 0.0 else 'FAIL'}")
                goals.append(f"goal untouched_faces_{method}_{name}: {share:.4f} (target <= 0.0) "
                             f"{'PASS' if share <= 0.0 else 'FAIL'}")
    for method, rates in fps.items():
        if rates:
            print(f"fps {method}: median {float(np.median(rates)):.2f} (whole process, model loading included)")
    for line in goals:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
