"""Round trip of the real fixture videos: decode, pass through the engine unchanged,
encode at default quality; nothing the user gave may be lost or damaged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from io_media import audio_packets, tagged_copy

from reenact.io import FrameChunk, VideoWriter, open_video, passthrough, probe, run_stream

# default suite: the shortest clip and the one with the trickiest timing (29.97 fps, stream
# starting at pts 10214, BT.709 tags); the other four run with -m slow (about 2.5 min)
SMALL = ["liveportrait_d0.mp4", "face_recognition_short_hamilton_clip.mp4"]
LARGE = [
    "liveportrait_d12.mp4",
    "sadtalker_WDA_KatieHill_000.mp4",
    "facenet_pytorch_video.mp4",
    "mobileface_friends1.mp4",
]
WITH_AUDIO = [
    "liveportrait_d12.mp4",
    "sadtalker_WDA_KatieHill_000.mp4",
    "facenet_pytorch_video.mp4",
    "mobileface_friends1.mp4",
    "face_recognition_short_hamilton_clip.mp4",
]


def frames_and_times(path: Path) -> tuple[list[np.ndarray], list[object]]:
    frames: list[np.ndarray] = []
    times: list[object] = []
    with open_video(path, backend="av", chunk_size=32) as r:
        for c in r:
            frames.extend(c.frames.numpy())
            times.extend(p * r.info.time_base for p in c.pts.tolist())
    return frames, times


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name", SMALL + [pytest.param(n, marks=pytest.mark.slow) for n in LARGE]
)
def test_full_round_trip(fixtures: Path, tmp_path: Path, name: str) -> None:
    src = fixtures / "videos" / name
    out = tmp_path / f"rt {name}"
    with open_video(src) as r, VideoWriter(out, r.info, source=src) as w:
        stats = run_stream(r, passthrough, w)
    a, b = probe(src), probe(out)
    assert stats.frames == a.frame_count == b.frame_count
    assert b.duration == pytest.approx(a.duration, abs=1 / a.avg_fps)
    assert (b.width, b.height, b.rotation) == (a.width, a.height, a.rotation)
    src_frames, src_times = frames_and_times(src)
    out_frames, out_times = frames_and_times(out)
    assert out_times == src_times  # every frame's presentation time, exactly
    assert audio_packets(out) == audio_packets(src)  # bytes and times, packet for packet
    diff = [np.mean((x.astype(np.float64) - y) ** 2) for x, y in zip(src_frames, out_frames, strict=True)]
    clip_psnr = 10 * np.log10(255.0**2 / np.mean(diff))
    worst = 10 * np.log10(255.0**2 / max(diff))
    assert clip_psnr >= 40.0, f"clip PSNR {clip_psnr:.2f} dB (worst frame {worst:.2f} dB)"
    assert worst >= 38.0, f"worst frame {worst:.2f} dB"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", WITH_AUDIO)
def test_audio_is_copied_byte_for_byte(fixtures: Path, tmp_path: Path, name: str) -> None:
    """Short version for every clip with audio: 6 frames of video, all of the audio, and the
    container and video-stream tags (the fixtures have almost none, so a tagged copy is used)."""
    tags = {"title": f"clip {name} é", "artist": "reenact tests", "comment": "keep me",
            "creation_time": "2021-02-03T04:05:06.000000Z"}
    src = tagged_copy(fixtures / "videos" / name, tmp_path / f"tagged{Path(name).suffix}", tags,
                      {"language": "fra"})
    a_meta = probe(src).metadata
    assert {k: a_meta.get(k) for k in tags} == tags  # the copy carries the tags
    out = tmp_path / "short.mp4"

    def first_six(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            yield c
            return

    with open_video(src, chunk_size=6) as r, VideoWriter(out, r.info, source=src, preset="ultrafast") as w:
        run_stream(r, first_six, w)
    src_audio, out_audio = audio_packets(src), audio_packets(out)
    assert len(out_audio) == len(src_audio) >= 1
    assert out_audio == src_audio
    with open_video(out) as r:
        assert r.info.frame_count == 6
    b_meta = probe(out).metadata
    assert {k: b_meta.get(k) for k in tags} == tags
    with av.open(str(out)) as c:
        assert c.streams.video[0].metadata.get("language") == "fra"
