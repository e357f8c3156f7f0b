"""``reenact models list`` / ``verify``: one verdict line per pack and per component, in words;
a run with a pack that lacks files names every missing file at once, before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from reenact.cli import deidentify_main, main

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "samples" / "astronaut_clip.mp4"


@pytest.fixture()
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "reenact"))
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "insightface"))
    return tmp_path


def test_models_list_gives_a_verdict_per_pack_and_component(empty_caches: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "Error" not in out, "a class name instead of words"
    assert ("tiny: ready, untrained: every command runs offline, but its synthetic faces are blobs without eyes, "
            "nose or mouth (a smoke test); blur, pixelate and solid redaction are real") in lines
    assert ("full: not ready: 5 of 5 components missing (generator, detector, identity, landmarks, identity_model); "
            "how to get each is below and in the README \"Real faces\"") in lines
    full = out[out.index("full: not ready"):out.index("paper:")]
    for words in ("generator          missing: stylegan2-ffhq-256.safetensors: `reenact models pull full` downloads",
                  "detector           missing: det_10g.onnx of insightface's buffalo_l models",
                  "identity           missing: w600k_r50.onnx",
                  "landmarks          missing: 2d106det.onnx",
                  "identity_model     missing: made by training: `reenact-train fit"):
        assert f"  {words}" in full, words
    assert "  generator          built in (seeded, untrained)" in lines


def test_models_verify_says_ready_missing_or_built_in(empty_caches: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", "tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny: ready, untrained: ")
    assert lines[1:] == ["  tiny/generator: built in", "  tiny/detector: ready: sha256 ok, loads",
                         "  tiny/identity: ready: sha256 ok, loads", "  tiny/landmarks: ready: sha256 ok, loads",
                         "  tiny/identity_model: built in"]
    assert main(["models", "verify", "full"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("full: not ready: 5 of 5 components missing")
    assert len(lines) == 6 and all(": missing: " in line for line in lines[1:]), lines


@pytest.mark.parametrize(("command", "extra", "missing"), [
    ("reenact", ["--identity", str(ROOT / "samples" / "cameraman_identity.jpg")], 5),
    ("deidentify", ["--method", "blur"], 3),  # a redaction loads only the face models
])
def test_a_run_names_every_missing_file_at_once(command: str, extra: list[str], missing: int, empty_caches: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = empty_caches / "o.mp4"
    entry = main if command == "reenact" else deidentify_main
    assert entry([str(CLIP), "-o", str(out), "--pack", "full", *extra]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: the 'full' pack is missing {missing} files: "), error
    for name in ("insightface/models/buffalo_l/det_10g.onnx", "buffalo_l/w600k_r50.onnx", "buffalo_l/2d106det.onnx"):
        assert name in error[0]
    assert ("stylegan2-ffhq-256.safetensors" in error[0]) == (command == "reenact")
    assert not out.exists()
