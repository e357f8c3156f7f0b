"""Pipeline benchmark (tiny pack, fixture detector and identity models), ratios taken in one run.

1. On the 720p fixture clip: per-stage time and fps, and end-to-end wall time against the sum
   of decode alone + compute alone (on frames already decoded) + encode alone.
   goal: e2e / sum <= 1.0 (reading and writing overlap compute).
2. Frame-to-frame W jitter on a real single-face clip with One-Euro smoothing against without.
   goal: <= 0.5.
3. Peak RSS processing a generated 60 s clip against a 10 s one (640x480, 10 fps), each in its
   own process. goal: <= 1.1 (memory does not grow with video length). The size is chosen so the
   goal can see a leak: keeping every decoded frame of the 60 s clip would add 600 x 640 x 480 x 3
   bytes = 527 MiB, and the bench prints that leak as a share of the 10 s peak (it must exceed
   25 %). ``REENACT_BENCH_LEAK=1`` injects that leak into the measured child processes (they keep
   every decoded frame), and the goal must then FAIL: the bench's own check.

Stage timings are taken warm: the isolated stages and the end-to-end run each run once untimed
before the timed runs (models, codecs, thread pools and allocator all warmed alike).

Run: ``python bench/pipeline.py [--frames 40] [--fixtures DIR] [--only stages|jitter|rss]``;
leak check: ``REENACT_BENCH_LEAK=1 python bench/pipeline.py --only rss``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reenact.config import replace  # noqa: E402
from reenact.io import FrameChunk, VideoWriter, open_video, probe  # noqa: E402
from reenact.packs import PackSettings  # noqa: E402
from reenact.pipeline import FaceReplacer, PipelineConfig, cached_pack, plan_run, process_video  # noqa: E402
from reenact.pipeline.run import photo_codes  # noqa: E402
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402


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


def _stages(config: PipelineConfig, clip: Path, tmp: Path, identity: Path) -> dict[str, Any]:
    """One pass of each stage alone (decode, compute on decoded frames, encode of computed
    frames) and then the end-to-end run, each timed; returns the seconds and the e2e report."""

    info = probe(clip)
    plan = plan_run("reenact", config, identity=identity)  # as the CLI plans a run
    pack = cached_pack(plan)
    plan = plan.bind(pack)
    target = photo_codes(plan, pack).target
    t = time.perf_counter()
    with open_video(clip, chunk_size=config.read.chunk_size, backend=config.read.backend) as reader:
        chunks = list(reader)
    decode_s = time.perf_counter() - t
    replacer = FaceReplacer(plan, pack, info.avg_fps, target=target)
    t = time.perf_counter()
    outputs = list(replacer(iter(chunks)))
    compute_s = time.perf_counter() - t
    t = time.perf_counter()
    with VideoWriter(tmp / f"{clip.stem}_alone.mp4", info, source=clip, overwrite=True) as writer:
        for chunk in outputs:
            writer.write(chunk)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    report = process_video(clip, tmp / f"{clip.stem}_e2e.mp4", "reenact", config, identity=identity,
                           overwrite=True)
    e2e_s = time.perf_counter() - t
    return {"decode": decode_s, "compute": compute_s, "encode": encode_s, "e2e": e2e_s, "report": report}


def stage_ratio(config: PipelineConfig, clip: Path, warmup: Path, tmp: Path) -> list[str]:
    identity = fixtures_dir() / "images" / "deepface" / "img1.jpg"  # type: ignore[operator]
    # warm-up of every timed path alike (models, codecs, thread pools, allocator), untimed
    _stages(config, warmup, tmp, identity)
    timed = _stages(config, clip, tmp, identity)
    report = timed["report"]
    frames = report["frames"]
    lines = [f"720p clip {clip.name}, {frames} frames, tiny pack (after an untimed warm-up of all "
             f"four runs on {probe(warmup).frame_count} frames)"]
    for stage, seconds in report["stage_seconds"].items():
        lines.append(f"  stage {stage:<11} {seconds:8.2f} s  {1000 * seconds / frames:8.1f} ms/frame")
    total = timed["decode"] + timed["compute"] + timed["encode"]
    e2e_s = timed["e2e"]
    lines.append(f"  alone: decode {timed['decode']:.2f} s, compute {timed['compute']:.2f} s, encode "
                 f"{timed['encode']:.2f} s; end to end {e2e_s:.2f} s = {frames / e2e_s:.2f} fps")
    lines.append(goal("pipeline_overlap_e2e_over_sum_of_stages", e2e_s / total, "<=", 1.0))
    return lines


def jitter_ratio(config: PipelineConfig, clip: Path, tmp: Path) -> list[str]:
    identity = fixtures_dir() / "images" / "deepface" / "img1.jpg"  # type: ignore[operator]
    jitters = {}
    for method in ("none", "one_euro"):  # the W filter only; boxes and alignment filtered alike
        cfg = replace(config, {"smoothing.latent.method": method})
        report = process_video(clip, tmp / f"jitter_{method}.mp4", "reenact", cfg, identity=identity, overwrite=True)
        values = [t["w_jitter"] for t in report["tracks"].values() if t["w_jitter"] is not None]
        jitters[method] = sum(values) / len(values)
    ratio = jitters["one_euro"] / jitters["none"]
    return [
        f"W jitter on {clip.name}: none {jitters['none']:.5f}, one_euro {jitters['one_euro']:.5f}",
        goal("w_jitter_smoothed_over_unsmoothed", ratio, "<=", 0.5),
    ]


RSS_FPS, RSS_WIDTH, RSS_HEIGHT = 10, 640, 480
RSS_SECONDS = (10, 60)
RSS_GOAL = 1.1
LEAK_ENV = "REENACT_BENCH_LEAK"


def _make_long_clip(path: Path, seconds: int, fps: int = RSS_FPS, width: int = RSS_WIDTH,
                    height: int = RSS_HEIGHT) -> Path:
    """A clip of the astronaut sample's face played forwards and backwards, ``seconds`` long."""
    import av
    import numpy as np

    with av.open(str(ROOT / "samples" / "astronaut_clip.mp4")) as c:
        base = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    base_t = torch.from_numpy(np.stack(base)).permute(0, 3, 1, 2).float()
    small = torch.nn.functional.interpolate(base_t, size=(height, width), mode="bilinear", antialias=True)
    small = small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
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


class _LeakyReader:
    """The bench's injected defect: a reader that keeps a copy of every decoded frame."""

    def __init__(self, reader: Any, kept: list[torch.Tensor]) -> None:
        self._reader, self._kept = reader, kept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def __iter__(self) -> Iterator[FrameChunk]:
        for chunk in self._reader:
            self._kept.append(chunk.frames.clone())
            yield chunk


def _inject_leak() -> list[torch.Tensor]:
    """Make the pipeline's reader keep every decoded frame (only in the bench's child)."""
    import reenact.pipeline.run as run_module

    kept: list[torch.Tensor] = []
    real_open = run_module.open_video

    @contextlib.contextmanager
    def leaky_open(*args: Any, **kwargs: Any) -> Iterator[_LeakyReader]:
        with real_open(*args, **kwargs) as reader:
            yield _LeakyReader(reader, kept)

    run_module.open_video = leaky_open  # type: ignore[assignment]
    return kept


def _rss_child(clip: str, out: str, config_json: str) -> None:
    from reenact.config import from_dict

    kept = _inject_leak() if os.environ.get(LEAK_ENV) == "1" else []
    config = from_dict(PipelineConfig, json.loads(config_json))
    report = process_video(clip, out, "deidentify", config, overwrite=True)
    print(json.dumps({"maxrss_kb": _peak_rss_kib(), "frames": report["frames"],
                      "kept_frames": sum(len(k) for k in kept)}))


def rss_ratio(config: PipelineConfig, tmp: Path) -> list[str]:
    from reenact.config import to_dict

    cfg = replace(config, {"detector.working_size": 192})
    peaks, kept = {}, {}
    for seconds in RSS_SECONDS:
        clip = _make_long_clip(tmp / f"long_{seconds}.mp4", seconds)
        result = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(clip), str(tmp / f"long_{seconds}_out.mp4"),
             json.dumps(to_dict(cfg))],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        child = json.loads(result.stdout.strip().splitlines()[-1])
        peaks[seconds] = child["maxrss_kb"] / 1024
        kept[seconds] = child["kept_frames"]
    short, long = RSS_SECONDS
    frame_mib = RSS_WIDTH * RSS_HEIGHT * 3 / 2**20
    leak_mib = long * RSS_FPS * frame_mib
    slack_mib = (RSS_GOAL - 1) * peaks[short]
    lines = [
        f"peak RSS deidentify {RSS_WIDTH}x{RSS_HEIGHT} {RSS_FPS} fps: {short} s clip {peaks[short]:.0f} MiB, "
        f"{long} s clip {peaks[long]:.0f} MiB",
        f"  sensitivity: keeping all {long * RSS_FPS} frames would add {leak_mib:.0f} MiB = "
        f"{leak_mib / peaks[short]:.0%} of the {short} s peak (goal slack {slack_mib:.0f} MiB; "
        f"must be > 25 %: {'yes' if leak_mib > 0.25 * peaks[short] else 'NO'})",
    ]
    if os.environ.get(LEAK_ENV) == "1":
        lines.append(f"  {LEAK_ENV}=1: frames kept by the injected leak: {short} s {kept[short]}, "
                     f"{long} s {kept[long]} (the goal below must FAIL)")
    lines.append(goal(f"peak_rss_{long}s_over_{short}s", peaks[long] / peaks[short], "<=", RSS_GOAL))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="frames of the 720p clip to time")
    parser.add_argument("--warmup-frames", type=int, default=8, help="frames of the untimed warm-up")
    parser.add_argument("--fixtures", type=Path, default=None)
    parser.add_argument("--only", choices=("stages", "jitter", "rss"), help="run one part")
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
    parts = {args.only} if args.only else {"stages", "jitter"} | (set() if args.skip_rss else {"rss"})
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if "stages" in parts:
            friends = fixtures / "videos" / "mobileface_friends1.mp4"
            clip720 = cut(friends, tmp / "friends720.mp4", args.frames)
            warmup = cut(friends, tmp / "friends720_warmup.mp4", args.warmup_frames)
            lines += stage_ratio(config, clip720, warmup, tmp)
        if "jitter" in parts:
            clip = cut(fixtures / "videos" / "liveportrait_d12.mp4", tmp / "d12.mp4", args.frames)
            lines += jitter_ratio(config, clip, tmp)
        if "rss" in parts:
            lines += rss_ratio(config, tmp)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
