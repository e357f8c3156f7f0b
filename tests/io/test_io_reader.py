"""Probing and chunked reading: shapes, timestamps, backends agree, odd inputs."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from io_media import decode_all, pattern, psnr

from reenact.errors import ConfigError, ShapeError, VideoReadError
from reenact.io import FrameChunk, open_video, probe
from reenact.io import reader as reader_mod


def read_all(path: Path, **kw: object) -> tuple[torch.Tensor, torch.Tensor, list[FrameChunk], str]:
    with open_video(path, **kw) as r:  # type: ignore[arg-type]
        chunks = list(r)
        backend = r.backend
    return torch.cat([c.frames for c in chunks]), torch.cat([c.pts for c in chunks]), chunks, backend


@pytest.mark.parametrize("backend", ["av", "decord"])
def test_chunks_have_frames_pts_and_indices(make_video, backend: str) -> None:
    path = make_video("clip.mp4", frames=11, width=64, height=48)
    frames, pts, chunks, used = read_all(path, chunk_size=4, backend=backend)
    assert used == backend
    assert [len(c) for c in chunks] == [4, 4, 3]
    assert [c.start_index for c in chunks] == [0, 4, 8]
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (11, 48, 64, 3)
    assert pts.dtype == torch.int64
    assert pts.tolist() == [i * 512 for i in range(11)]
    # the decoded picture is the pattern that was encoded (crf 12: close, not equal)
    assert psnr(frames[5].numpy(), pattern(5, 48, 64)) > 30


def test_backends_give_identical_pixels_and_pts_on_real_clip(fixtures: Path) -> None:
    # hamilton: BT.709-tagged, 29.97 fps, stream starts at pts 10214 (not 0)
    path = fixtures / "videos" / "face_recognition_short_hamilton_clip.mp4"
    a_frames, a_pts, _, _ = read_all(path, chunk_size=32, backend="av")
    d_frames, d_pts, _, _ = read_all(path, chunk_size=32, backend="decord")
    ref_frames, ref_times, _ = decode_all(path)
    info = probe(path)
    assert a_pts.tolist() == d_pts.tolist()
    assert [p * info.time_base for p in a_pts.tolist()] == ref_times
    assert torch.equal(a_frames, d_frames)
    assert np.array_equal(a_frames[100].numpy(), ref_frames[100])


def test_probe_matches_fixture_readme(fixtures: Path) -> None:
    expected = {
        "liveportrait_d0.mp4": (512, 512, 78, 0),
        "liveportrait_d12.mp4": (512, 512, 183, 1),
        "sadtalker_WDA_KatieHill_000.mp4": (512, 512, 200, 1),
        "facenet_pytorch_video.mp4": (1920, 1080, 105, 1),
        "mobileface_friends1.mp4": (1280, 720, 141, 1),
        "face_recognition_short_hamilton_clip.mp4": (640, 360, 275, 1),
    }
    for name, (w, h, n, n_audio) in expected.items():
        info = probe(fixtures / "videos" / name)
        assert (info.width, info.height, info.frame_count, len(info.audio_streams)) == (w, h, n, n_audio), name
        assert not info.is_vfr and info.rotation == 0
        assert info.duration == pytest.approx(n / info.avg_fps, abs=1 / info.avg_fps)
    hamilton = probe(fixtures / "videos" / "face_recognition_short_hamilton_clip.mp4")
    assert hamilton.avg_fps == pytest.approx(29.97, abs=0.01)
    assert hamilton.audio_streams[0].codec == "aac"


def test_odd_size_yuv444_rotation_and_audio_are_probed(make_video) -> None:
    path = make_video("odd.mp4", width=641, height=359, pix_fmt="yuv444p", rotation=90, audio=True)
    info = probe(path)
    assert (info.width, info.height, info.pix_fmt, info.rotation) == (641, 359, "yuv444p", 90)
    assert [(a.codec, a.sample_rate, a.channels) for a in info.audio_streams] == [("aac", 16000, 1)]
    frames, _, _, _ = read_all(path, backend="auto")
    assert tuple(frames.shape) == (6, 359, 641, 3)  # no crop, no pad, not rotated


def test_ten_bit_input_is_read_by_pyav_with_one_log_line(make_video, caplog, monkeypatch) -> None:
    """decord cannot decode 10-bit input: with decord as the default, ``auto`` falls back to
    PyAV and says so once per file, however often the file is opened."""
    path = make_video("ten.mp4", pix_fmt="yuv420p10le", frames=5)
    monkeypatch.setattr(reader_mod, "_warned", set(reader_mod._warned))
    reader_mod._warned.clear()
    monkeypatch.setattr(reader_mod, "DEFAULT_BACKEND", "decord")  # force the fallback path
    with caplog.at_level(logging.WARNING, logger="reenact.io.reader"):
        with open_video(path, backend="auto") as r:
            assert r.info.pix_fmt == "yuv420p10le"
            assert r.backend == "av"
            frames = torch.cat([c.frames for c in r])
        with open_video(path, backend="auto") as r2:
            assert r2.backend == "av"
    assert frames.shape[0] == 5 and psnr(frames[2].numpy(), pattern(2, 48, 64)) > 30
    fallback = [m for m in caplog.messages if "decoding with PyAV" in m]
    assert len(fallback) == 1 and "ten.mp4" in fallback[0], caplog.messages


def test_variable_frame_rate_falls_back_to_pyav_and_keeps_pts(make_video, caplog, monkeypatch) -> None:
    stamps = [0, 512, 1536, 2048, 3584, 3600, 5000]
    path = make_video("vfr.mp4", pts=stamps)
    info = probe(path)
    assert info.is_vfr
    with pytest.raises(VideoReadError, match="variable frame rate"):
        open_video(path, backend="decord")
    reader_mod._warned.clear()
    monkeypatch.setattr(reader_mod, "DEFAULT_BACKEND", "decord")
    with caplog.at_level(logging.WARNING, logger="reenact.io.reader"):
        _, pts, _, used = read_all(path, backend="auto")
        read_all(path, backend="auto")
    assert used == "av"
    assert pts.tolist() == stamps
    assert sum("variable frame rate" in m for m in caplog.messages) == 1


def test_constant_rate_is_not_vfr_with_1000_tick_rounding(make_video) -> None:
    # 29.97 fps in a 1/1000 time base alternates 33/34 ms steps: still constant rate
    stamps = [round(i * 1001 / 30) for i in range(10)]
    path = make_video("cfr.mp4", pts=stamps, time_base=Fraction(1, 1000), fps=30)
    assert not probe(path).is_vfr


def test_path_with_spaces_and_non_latin_characters(make_video) -> None:
    path = make_video("папка с видео 视频/clip ñ 1.mp4", frames=3)
    frames, _, _, _ = read_all(path, backend="decord")
    assert frames.shape[0] == 3
    frames_av, _, _, _ = read_all(path, backend="av")
    assert torch.equal(frames, frames_av)


def test_frame_chunk_checks_its_tensors() -> None:
    with pytest.raises(ShapeError, match="uint8"):
        FrameChunk(torch.zeros(2, 4, 4, 3), torch.zeros(2, dtype=torch.int64), 0)
    with pytest.raises(ShapeError, match="2 frames but 3"):
        FrameChunk(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), 0)
    with pytest.raises(ShapeError, match="int64"):
        FrameChunk(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(2), 0)


def test_bad_arguments_are_config_errors(make_video) -> None:
    path = make_video("c.mp4", frames=2)
    with pytest.raises(ConfigError, match="chunk_size"):
        open_video(path, chunk_size=0)
    with pytest.raises(ConfigError, match="backend"):
        open_video(path, backend="opencv")  # type: ignore[arg-type]


def test_auto_falls_back_when_decord_refuses_the_file(make_video, monkeypatch, caplog) -> None:
    import decord

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[decord] Error: codec not supported")

    path = make_video("refused.mp4", frames=5)
    monkeypatch.setattr(reader_mod, "DEFAULT_BACKEND", "decord")
    monkeypatch.setattr(decord, "VideoReader", refuse)
    reader_mod._warned.clear()
    with caplog.at_level(logging.WARNING, logger="reenact.io.reader"):
        frames, pts, _, used = read_all(path, backend="auto")
        read_all(path, backend="auto")
    assert used == "av" and frames.shape[0] == 5 and pts.tolist() == [i * 512 for i in range(5)]
    assert sum("decord refused the file" in m for m in caplog.messages) == 1
    with pytest.raises(VideoReadError, match="decord cannot read .*codec not supported"):
        open_video(path, backend="decord")


def test_chunks_of_large_frames_are_bounded_in_bytes() -> None:
    from reenact.io.reader import ReadSettings

    settings = ReadSettings()  # 16 frames, 8 MiB
    assert settings.frames_per_chunk(320, 240) == 16  # small frames: the frame count bounds
    assert settings.frames_per_chunk(512, 512) == 10
    for width, height in ((512, 512), (1280, 720), (1920, 1080), (3840, 2160)):
        frames = settings.frames_per_chunk(width, height)
        assert 1 <= frames < 16
        assert frames * width * height * 3 <= settings.chunk_bytes or frames == 1
    assert settings.frames_per_chunk(1280, 720) == 3
    assert settings.frames_per_chunk(7680, 4320) == 1  # one frame always fits
    assert ReadSettings(chunk_bytes=1 << 40).frames_per_chunk(1920, 1080) == 16
    with pytest.raises(ConfigError, match="chunk_bytes"):
        ReadSettings(chunk_bytes=0)
