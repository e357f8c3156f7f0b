"""Video and image input/output: probe, chunked reading, atomic writing, streaming engine."""

from reenact.io.engine import StreamStats, passthrough, run_stream
from reenact.io.images import read_image
from reenact.io.probe import AudioStreamInfo, SubtitleStreamInfo, VideoInfo, probe
from reenact.io.reader import FrameChunk, ReadSettings, VideoReader, open_video
from reenact.io.writer import EncodeSettings, VideoWriter, check_output_path

__all__ = [
    "AudioStreamInfo",
    "EncodeSettings",
    "FrameChunk",
    "ReadSettings",
    "StreamStats",
    "SubtitleStreamInfo",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "check_output_path",
    "open_video",
    "passthrough",
    "probe",
    "read_image",
    "run_stream",
]
