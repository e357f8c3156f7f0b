"""Pipeline benchmark (tiny pack, fixture detector and identity models), ratios taken in one run.

1. On the 720p fixture clip: per-stage time and fps, and end-to-end wall time against the sum
   of decode alone + compute alone (on frames already decoded) + encode alone.
   goal: e2e / sum <= 1.0 (reading and writing overlap compute).
2. Frame-to-frame W jitter on a real single-face clip with One-Euro smoothing against without.
   goal: <= 0.5.
3. Peak RSS processing a generated 60 s clip against a 10 s one, each in its own process.
   goal: <= 1.1 (memory does not grow with video length).

Run: ``python bench/pipeline.py [--frames 40] [--fixtures DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reenact.config import replace  # noqa: E402
from reenact.io import FrameChunk, VideoWriter, open_video, probe  # noqa: E402
from reenact.packs import PackSettings  # noqa: E402
from reenact.pipeline import FaceReplacer, PipelineConfig, cached_pack, process_video  # noqa: E402
from testing.fixtures import fixtures_dir  # noqa: E402


def goal(name: str, measured: float, op: str, target: float) -> str:
    ok = measured <= target if op == "<=" else measured >= target
    return f"goal {name}: {measured:.3f} (target {op} {target}) {'PASS' if ok else 'FAIL'}"


def fixture_config(fixtures: Path) -> PipelineConfig:
    models = fixtures / "models"
    return PipelineConfig(
        models=PackSettings(
            detector_model=str(models / "scrfd" / "scrfd_500m_kps.onnx"),
            identity_model=str(models / "mobileface_recognition_onnx" / "mobileface_V2.onnx"),
            identity_model_mean=0.0, identity_model_std=1.0,
        ),
        device="cpu",
    )


def cut(src: Path, dst: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``src`` (with its audio) through our own reader and writer."""
    info = probe(src)
    with open_video(src, chunk_size=16) as reader, VideoWriter(dst, info, source=src, overwrite=True) as writer:
        done = 0
        for chunk in reader:
            take = min(len(chunk), frames - done)
            writer.write(FrameChunk(chunk.frames[:take], chunk.pts[:take], chunk.start_index))
            done += take
            if done >= frames:
                break
    return dst


def stage_ratio(config: PipelineConfig, clip: Path, tmp: Path) -> list[str]:
    identity = fixtures_dir() / "images" / "deepface" / "img1.jpg"  # type: ignore[operator]
    cached_pack(config, torch.device("cpu"))  # load models outside every timing
    info = probe(clip)
    t = time.perf_counter()
    with open_video(clip, chunk_size=config.read.chunk_size) as reader:
        chunks = list(reader)
    decode_s = time.perf_counter() - t
    from reenact.faces import identity_from_photo

    pack = cached_pack(config, torch.device("cpu"))
    target = identity_from_photo(identity, pack.detector, pack.identity).embedding
    replacer = FaceReplacer(pack, config, "reenact", info.avg_fps, target=target)
    t = time.perf_counter()
    outputs = list(replacer(iter(chunks)))
    compute_s = time.perf_counter() - t
    t = time.perf_counter()
    with VideoWriter(tmp / "alone.mp4", info, source=clip, overwrite=True) as writer:
        for chunk in outputs:
            writer.write(chunk)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    report = process_video(clip, tmp / "e2e.mp4", "reenact", config, identity=identity, overwrite=True)
    e2e_s = time.perf_counter() - t
    frames = report["frames"]
    lines = [f"720p clip {clip.name}, {frames} frames, tiny pack"]
    for stage, seconds in report["stage_seconds"].items():
        lines.append(f"  stage {stage:<11} {seconds:8.2f} s  {1000 * seconds / frames:8.1f} ms/frame")
    total = decode_s + compute_s + encode_s
    lines.append(f"  alone: decode {decode_s:.2f} s, compute {compute_s:.2f} s, encode {encode_s:.2f} s; "
                 f"end to end {e2e_s:.2f} s = {frames / e2e_s:.2f} fps")
    lines.append(goal("pipeline_overlap_e2e_over_sum_of_stages", e2e_s / total, "<=", 1.0))
    return lines


def jitter_ratio(config: PipelineConfig, clip: Path, tmp: Path) -> list[str]:
    identity = fixtures_dir() / "images" / "deepface" / "img1.jpg"  # type: ignore[operator]
    jitters = {}
    for method in ("none", "one_euro"):
        cfg = replace(config, {"smoothing.method": method})
        report = process_video(clip, tmp / f"jitter_{method}.mp4", "reenact", cfg, identity=identity, overwrite=True)
        values = [t["w_jitter"] for t in report["tracks"].values() if t["w_jitter"] is not None]
        jitters[method] = sum(values) / len(values)
    ratio = jitters["one_euro"] / jitters["none"]
    return [
        f"W jitter on {clip.name}: none {jitters['none']:.5f}, one_euro {jitters['one_euro']:.5f}",
        goal("w_jitter_smoothed_over_unsmoothed", ratio, "<=", 0.5),
    ]


def _make_long_clip(path: Path, seconds: int, fps: int = 10, size: int = 192) -> Path:
    """A clip of the astronaut sample's face moved by a synthetic camera, ``seconds`` long."""
    import av
    import numpy as np

    with av.open(str(ROOT / "samples" / "astronaut_clip.mp4")) as c:
        base = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    base_t = torch.from_numpy(np.stack(base)).permute(0, 3, 1, 2).float()
    small = torch.nn.functional.interpolate(base_t, size=(size, size), mode="area").round().byte()
    small = small.permute(0, 2, 3, 1).numpy()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * fps):
            k = i % (2 * len(small))
            frame = small[k if k < len(small) else 2 * len(small) - 1 - k]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM): unlike ru_maxrss, which Linux carries over
    from the parent through fork and exec, it starts afresh in a new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_child(clip: str, out: str, config_json: str) -> None:
    from reenact.config import from_dict

    config = from_dict(PipelineConfig, json.loads(config_json))
    process_video(clip, out, "deidentify", config, overwrite=True)
    print(json.dumps({"maxrss_kb": _peak_rss_kib()}))


def rss_ratio(config: PipelineConfig, tmp: Path) -> list[str]:
    from reenact.config import to_dict

    cfg = replace(config, {"detector.working_size": 192})
    peaks = {}
    for seconds in (10, 60):
        clip = _make_long_clip(tmp / f"long_{seconds}.mp4", seconds)
        result = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(clip), str(tmp / f"long_{seconds}_out.mp4"),
             json.dumps(to_dict(cfg))],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        peaks[seconds] = json.loads(result.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024
    return [
        f"peak RSS deidentify 192px 10 fps: 10 s clip {peaks[10]:.0f} MiB, 60 s clip {peaks[60]:.0f} MiB",
        goal("peak_rss_60s_over_10s", peaks[60] / peaks[10], "<=", 1.1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="frames of the 720p clip to time")
    parser.add_argument("--fixtures", type=Path, default=None)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(*args.rss_child)
        return
    fixtures = args.fixtures or fixtures_dir()
    if fixtures is None:
        sys.exit("fixtures not found: set REENACT_FIXTURES")
    os.environ["REENACT_FIXTURES"] = str(fixtures)
    config = fixture_config(fixtures)
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        clip720 = cut(fixtures / "videos" / "mobileface_friends1.mp4", tmp / "friends720.mp4", args.frames)
        lines += stage_ratio(config, clip720, tmp)
        clip = cut(fixtures / "videos" / "liveportrait_d12.mp4", tmp / "d12.mp4", args.frames)
        lines += jitter_ratio(config, clip, tmp)
        if not args.skip_rss:
            lines += rss_ratio(config, tmp)
    print("\n".join(lines))




if __name__ == "__main__":
    main()
