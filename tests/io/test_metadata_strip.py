"""Deidentify leaves out what names the person beside the pixels (issue #17, finding 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from io_media import write_video

from reenact.io import VideoWriter, open_video, probe

GPS = "+48.8584+002.2945+035.000/"
CONTAINER_TAGS = {
    "location": GPS,
    "com.apple.quicktime.location.ISO6709": GPS,
    "creation_time": "2024-05-01T10:11:12.000000Z",
    "title": "Jane Doe",
    "comment": "Jane Doe at home, 12 Rue Example",
    "encoder": "JanesPhone 1.0",
}
STREAM_TAGS = {"handler_name": "Jane's camera", "language": "fra"}


def tagged_input(tmp_path: Path) -> Path:
    """A short clip with audio, rotated 90 degrees, carrying identifying tags."""
    plain = write_video(tmp_path / "plain.mp4", frames=8, audio=True, rotation=90)
    out_path = tmp_path / "tagged.mp4"
    with av.open(str(plain)) as src, av.open(
        str(out_path), "w", options={"movflags": "use_metadata_tags"}
    ) as out:
        out.metadata.update(CONTAINER_TAGS)
        streams: dict[int, Any] = {}
        for s in src.streams:
            o = out.add_stream_from_template(s)
            o.metadata.update(STREAM_TAGS)
            streams[s.index] = o
        for packet in src.demux():
            if packet.size == 0:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return out_path


def tags(path: Path) -> dict[str, dict[str, str]]:
    """Every tag of the file: ``container`` and one entry per stream."""
    with av.open(str(path)) as c:
        out = {"container": dict(c.metadata)}
        for s in c.streams:
            out[f"{s.index}:{s.type}"] = dict(s.metadata)
        return out


def copy_through(src: Path, dst: Path, **kwargs: Any) -> VideoWriter:
    info = probe(src)
    with open_video(src) as reader, VideoWriter(dst, info, source=src, **kwargs) as writer:
        for chunk in reader:
            writer.write(chunk)
    return writer


def _values(t: dict[str, dict[str, str]]) -> str:
    return " ".join(f"{k}={v}" for d in t.values() for k, v in d.items())


def test_the_tagged_input_carries_the_tags(tmp_path: Path) -> None:
    before = tags(tagged_input(tmp_path))
    text = _values(before)
    for value in ("Jane Doe", GPS, "2024-05-01", "Jane's camera"):
        assert value in text, (value, before)


def test_strip_removes_identifying_tags_and_keeps_playback(tmp_path: Path) -> None:
    src = tagged_input(tmp_path)
    writer = copy_through(src, tmp_path / "out.mp4", metadata="strip")
    after = tags(tmp_path / "out.mp4")
    text = _values(after)
    for value in ("Jane", GPS, "2024-05-01", "JanesPhone", "48.8584"):
        assert value not in text, (value, after)
    assert not any("creation_time" in d or "location" in d for d in after.values()), after
    assert "encoder" not in after["container"], after  # not even the muxer's own
    assert probe(tmp_path / "out.mp4").rotation == 90
    assert [s.type for s in av.open(str(tmp_path / "out.mp4")).streams] == ["video", "audio"]
    assert after["1:audio"].get("language") == "fra"  # playback needs the track language
    assert {"title", "comment", "location", "creation_time"} <= set(writer.stripped["container_tags"])
    assert "handler_name" in writer.stripped["stream_tags"]["0:video"]
    assert writer.audio_kept and "audio" in writer.audio_kept[0]


def test_keep_metadata_keeps_the_tags(tmp_path: Path) -> None:
    src = tagged_input(tmp_path)
    writer = copy_through(src, tmp_path / "out.mp4", metadata="keep")
    text = _values(tags(tmp_path / "out.mp4"))
    # (the mp4 muxer stores the GPS key only with movflags=use_metadata_tags; as before)
    for value in ("Jane Doe", "2024-05-01", "Jane's camera", "12 Rue Example"):
        assert value in text
    assert writer.stripped == {"container_tags": [], "stream_tags": {}, "streams": []}


def test_audio_drop_writes_no_audio_stream(tmp_path: Path) -> None:
    src = tagged_input(tmp_path)
    writer = copy_through(src, tmp_path / "out.mp4", metadata="strip", audio="drop")
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert [s.type for s in c.streams] == ["video"]
    assert any("audio" in s for s in writer.stripped["streams"])


def test_bad_choices_are_config_errors(tmp_path: Path) -> None:
    from reenact.errors import ConfigError
    from reenact.io import EncodeSettings

    with pytest.raises(ConfigError, match="metadata"):
        EncodeSettings(metadata="some")
    with pytest.raises(ConfigError, match="audio"):
        EncodeSettings(audio="mute")


def test_cli_flags_set_the_settings() -> None:
    import argparse

    from reenact.cli.settings import resolve_settings
    from reenact.cli.video import add_args

    p = argparse.ArgumentParser()
    add_args(p, "deidentify")
    assert resolve_settings(p.parse_args(["x.mp4"])).encode.metadata == "auto"
    config = resolve_settings(p.parse_args(["x.mp4", "--keep-metadata", "--audio", "drop"]))
    assert (config.encode.metadata, config.encode.audio) == ("keep", "drop")
