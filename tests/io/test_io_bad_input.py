"""Every bad input of issue 2: processed correctly, or refused with a typed error that
names the file and the problem; never a traceback from deep inside, a hang or a partial
output."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from io_media import (
    audio_packets,
    decode_all,
    pattern,
    psnr,
    write_audio_only,
    write_video,
    write_zero_frame,
)
from PIL import Image

from reenact.errors import InputError, OutputExistsError, VideoReadError, VideoWriteError
from reenact.io import (
    FrameChunk,
    VideoWriter,
    check_output_path,
    open_video,
    passthrough,
    probe,
    read_image,
    run_stream,
)

pytestmark = pytest.mark.timeout(60)


def refuse(path: Path, match: str) -> VideoReadError:
    """Both probe and open_video (every backend) refuse ``path`` with a VideoReadError."""
    with pytest.raises(VideoReadError, match=match) as info:
        probe(path)
    assert str(path) in str(info.value)
    for backend in ("auto", "av", "decord"):
        with pytest.raises(VideoReadError, match=match):
            with open_video(path, backend=backend) as r:
                list(r)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    refuse(tmp_path / "nope.mp4", "not found")


def test_folder_given_as_video(tmp_path: Path) -> None:
    refuse(tmp_path, "is a folder")


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    refuse(path, "cannot be opened as a video")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    refuse(path, "empty")


def test_mp4_truncated_at_half(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mp4", frames=30, width=96, height=64)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    refuse(cut, "cannot be opened|truncated")  # index (moov) at the end: lost


def test_faststart_mp4_truncated_at_half_is_refused_not_shortened(tmp_path: Path) -> None:
    # index at the front survives the cut, but half the frames are gone
    full = write_video(tmp_path / "full.mp4", frames=30, width=96, height=64, faststart=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    for backend in ("av", "auto"):
        with pytest.raises(VideoReadError, match="truncated") as info:
            with open_video(cut, backend=backend) as r:
                list(r)
        assert str(cut) in str(info.value)
    # and through the engine: refused, and no output file (not even a partial one)
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoReadError, match="truncated"):
        with open_video(cut, backend="av") as r, VideoWriter(out, r.info, source=cut) as w:
            run_stream(r, passthrough, w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "full.mp4"]


def test_zero_frame_video(tmp_path: Path) -> None:
    refuse(write_zero_frame(tmp_path / "zero.mkv"), "no frames")


def test_audio_only_file(tmp_path: Path) -> None:
    refuse(write_audio_only(tmp_path / "voice.m4a"), "no video stream")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".mp4"])
def test_still_image_given_as_video(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(path, format="PNG" if suffix != ".jpg" else "JPEG")
    refuse(path, "still image")


def test_odd_dimensions_round_trip_without_crop(tmp_path: Path) -> None:
    # x264 cannot store odd sizes in 4:2:0, so the source is 4:4:4 (as odd-sized H.264 is)
    src = write_video(tmp_path / "odd.mp4", frames=4, width=641, height=359, pix_fmt="yuv444p")
    out = tmp_path / "odd out.mp4"
    with open_video(src) as r, VideoWriter(out, r.info, source=src, crf=0, preset="ultrafast") as w:
        run_stream(r, passthrough, w)
    info = probe(out)
    assert (info.width, info.height, info.frame_count) == (641, 359, 4)
    a, _, _ = decode_all(src)
    b, _, _ = decode_all(out)
    # lossless settings give back every pixel: nothing cropped, padded or shifted
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_odd_size_frames_from_compute_are_written_whole(tmp_path: Path) -> None:
    # an even-sized 4:2:0 source whose frames compute turns into 641x359: written as 4:4:4
    src = write_video(tmp_path / "even.mp4", frames=3, width=64, height=48)
    info = dataclasses.replace(probe(src), width=641, height=359)
    frames = torch.from_numpy(np.stack([pattern(i, 359, 641) for i in range(3)]))
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, info, source=src, crf=0, preset="ultrafast") as w:
        w.write(FrameChunk(frames, torch.tensor([0, 512, 1024]), 0))
    assert probe(out).pix_fmt == "yuv444p"
    b, _, _ = decode_all(out)
    assert b[1].shape == (359, 641, 3)
    # only RGB<->YUV rounding remains, up to the last column and row
    assert psnr(b[1], frames[1].numpy()) > 45
    assert np.abs(b[1][:, -1].astype(int) - frames[1, :, -1].numpy()).max() <= 3
    assert np.abs(b[1][-1].astype(int) - frames[1, -1].numpy()).max() <= 3


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv420p", "yuv420p10le"])
def test_pixel_formats_round_trip(tmp_path: Path, pix_fmt: str) -> None:
    src = write_video(tmp_path / f"in_{pix_fmt}.mp4", frames=4, pix_fmt=pix_fmt)
    a, ta, _ = decode_all(src)
    # lossless encode: colour matrix, range and chroma handling are consistent
    lossless = {"yuv444p": 99.0, "yuv420p": 44.0, "yuv420p10le": 38.0}[pix_fmt]
    out = tmp_path / "lossless.mp4"
    with open_video(src) as r, VideoWriter(out, r.info, source=src, crf=0, preset="ultrafast") as w:
        run_stream(r, passthrough, w)
    b, tb, _ = decode_all(out)
    assert ta == tb and probe(out).pix_fmt == pix_fmt  # chroma layout and bit depth kept
    assert min(psnr(x, y) for x, y in zip(a, b, strict=True)) >= lossless
    # default quality on this tiny, colour-saturated pattern (real clips: >= 40 dB,
    # see test_io_roundtrip)
    out = tmp_path / "default.mp4"
    with open_video(src) as r, VideoWriter(out, r.info, source=src) as w:
        run_stream(r, passthrough, w)
    b, tb, _ = decode_all(out)
    assert ta == tb
    assert min(psnr(x, y) for x, y in zip(a, b, strict=True)) > 33


def test_variable_frame_rate_is_preserved(tmp_path: Path) -> None:
    stamps = [0, 512, 1536, 2048, 3584, 3600, 5000]
    src = write_video(tmp_path / "vfr.mp4", pts=stamps, audio=True)
    out = tmp_path / "vfr_out.mp4"
    with open_video(src) as r, VideoWriter(out, r.info, source=src) as w:
        run_stream(r, passthrough, w)
    _, t_src, _ = decode_all(src)
    _, t_out, _ = decode_all(out)
    assert t_out == t_src
    assert probe(out).is_vfr
    assert audio_packets(out) == audio_packets(src)


def test_rotation_metadata_is_kept(tmp_path: Path) -> None:
    src = write_video(tmp_path / "rot.mp4", frames=3, width=64, height=48, rotation=90)
    out = tmp_path / "rot_out.mp4"
    with open_video(src) as r, VideoWriter(out, r.info, source=src) as w:
        run_stream(r, passthrough, w)
    frames, _, rotation = decode_all(out)
    assert rotation == 90 and probe(out).rotation == 90
    assert frames[0].shape == (48, 64, 3)  # stored as decoded; players rotate on display


def test_paths_with_spaces_and_non_latin_characters(tmp_path: Path) -> None:
    folder = tmp_path / "мои видео 我的 vidéos"
    folder.mkdir()
    src = write_video(folder / "клип один.mp4", frames=3, audio=True)
    out = folder / "résultat 结果.mp4"
    with open_video(src) as r, VideoWriter(out, r.info, source=src) as w:
        stats = run_stream(r, passthrough, w)
    assert stats.frames == 3 and probe(out).frame_count == 3
    assert audio_packets(out) == audio_packets(src)


def test_output_folder_does_not_exist(tmp_path: Path) -> None:
    src = write_video(tmp_path / "a.mp4", frames=2)
    dst = tmp_path / "missing" / "out.mp4"
    with pytest.raises(VideoWriteError, match="does not exist") as info:
        check_output_path(src, dst)
    assert str(dst) in str(info.value)
    with pytest.raises(VideoWriteError, match="does not exist"):
        VideoWriter(dst, probe(src), source=src)
    assert not dst.parent.exists()


def test_no_write_permission(tmp_path: Path) -> None:
    src = write_video(tmp_path / "a.mp4", frames=2)
    if os.geteuid() == 0:
        folder = Path("/sys")  # root may write anywhere else; sysfs refuses new files
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
    with pytest.raises(VideoWriteError, match="cannot write") as info:
        check_output_path(src, folder / "out.mp4")
    assert "out.mp4" in str(info.value)


def test_refuses_to_overwrite_input_or_existing_output(tmp_path: Path) -> None:
    src = write_video(tmp_path / "a.mp4", frames=2)
    with pytest.raises(OutputExistsError, match="is the input"):
        check_output_path(src, src, overwrite=True)
    with pytest.raises(OutputExistsError, match="is the input"):
        check_output_path(src, tmp_path / "." / "a.mp4", overwrite=True)
    existing = tmp_path / "b.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_path(src, existing)
    assert check_output_path(src, existing, overwrite=True) == existing
    assert existing.read_bytes() == b"keep me"


def test_read_image_errors_and_exif_orientation(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "none.jpg")
    text = tmp_path / "face.jpg"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        read_image(text)
    # a 40x20 picture stored sideways with EXIF orientation 6 (rotate 90 CW to view)
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red as stored
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    img.save(path, exif=exif, quality=95)
    upright = read_image(path)
    assert upright.dtype == torch.uint8 and tuple(upright.shape) == (40, 20, 3)
    # rotating 90 CW brings the stored left half to the top
    assert upright[:20, :, 0].float().mean() > 200 and upright[20:, :, 0].float().mean() < 50
