"""The closing summary of a run, as a user sees it in a real process: exact first lines, the
files named, what the faces are, each warning once and never inside the progress bar."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reenact.summary import for_page, summarize
from testing.media import cut_clip

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "astronaut_clip.mp4"
OTHER_PERSON = ROOT / "samples" / "cameraman_identity.jpg"
AUDIO_WARNING = ("warning: the audio (1:audio (aac)) was kept as it is: a voice can identify the person; "
                 "pass --audio drop to leave it out")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("summary")
    return cut_clip(SAMPLE, folder / "clip.mp4", 4)  # 4 frames of the sample, with its audio


def run(command: str, clip: Path, *args: str) -> subprocess.CompletedProcess[str]:
    entry = "deidentify_main" if command == "deidentify" else "main"
    return subprocess.run(
        [sys.executable, "-c", f"from reenact.cli import {entry} as m; raise SystemExit(m())", str(clip), *args],
        cwd=clip.parent, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(Path.home())})


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.strip().splitlines()


def test_untrained_synthetic_faces_are_called_blobs_and_each_warning_prints_once(clip: Path) -> None:
    result = run("deidentify", clip, "-o", "s.mp4", "--method", "synthetic", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert re.fullmatch(r"wrote s\.mp4: 4 frames, 1 face track, \d+\.\d\d fps", out[0]), out
    assert out[1] == "beside it: s.mp4.report.json (report), s.mp4.config.yaml (settings)"
    assert out[2].startswith("faces: 4 blobs without eyes, nose or mouth, from the untrained 'tiny' pack"), out
    assert result.stdout.count("the audio (") == 1 and AUDIO_WARNING in out
    assert out[-1].startswith("next: real faces need trained weights: `reenact models list`")
    assert "--method blur" in out[-1]
    # nothing but the bar on stderr: no warning inside it, the untrained-pack log folded into the faces line
    assert "WARNING" not in result.stderr and "audio" not in result.stderr and "untrained" not in result.stderr


def test_pixelate_is_not_called_blurred_and_names_the_preview_and_audit(clip: Path) -> None:
    result = run("deidentify", clip, "-o", "p.mp4", "--method", "pixelate", "--preview", "--audit", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert re.fullmatch(r"wrote p\.mp4: 4 frames, 1 face track, \d+\.\d\d fps", out[0]), out
    assert out[1] == ("beside it: p.mp4.report.json (report), p.mp4.config.yaml (settings), p.mp4.preview.png "
                      "(preview sheet), p.mp4.audit.json (audit file, mode 0600: per-frame similarities and paths)")
    assert out[2] == "faces: 4 pixelated; per rung: face pixelated 4"
    assert "blur" not in result.stdout
    assert out[-1] == "next: watch p.mp4 and look at p.mp4.preview.png (frame numbers, face boxes, rung per face)"
    for name in ("p.mp4", "p.mp4.report.json", "p.mp4.config.yaml", "p.mp4.preview.png", "p.mp4.audit.json"):
        assert (clip.parent / name).is_file(), name


def test_reenact_warns_when_its_faces_are_below_its_identity_threshold(clip: Path) -> None:
    result = run("reenact", clip, "--identity", str(OTHER_PERSON), "-o", "r.mp4", "--preview", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert re.fullmatch(r"wrote r\.mp4: 4 frames, 1 face track, \d+\.\d\d fps", out[0]), out
    assert "r.mp4.preview.png (preview sheet)" in out[1]
    warning = [line for line in out if "identity threshold" in line]
    assert len(warning) == 1 and re.fullmatch(
        r"warning: the faces' mean similarity to the identity photo is 0\.\d{3}, below the pack's identity "
        r"threshold 0\.920: they do not look like the photo \(an untrained pack cannot make a face look like "
        r"anyone\)", warning[0]), out
    assert "audio" not in result.stdout  # reenact keeps the audio without a privacy warning
    assert "WARNING" not in result.stderr


def test_the_page_summary_has_no_flags() -> None:
    report = {"mode": "deidentify", "output": "o.mp4", "frames": 3, "tracks": {"0": {}}, "fps_processed": 1.0,
              "models": {"pack": "tiny", "trained": False, "generator": "StyleGAN2 64px"},
              "privacy": {"rungs": {"synthetic": 3}}, "counts": {},
              "warnings": ["the audio (1:audio (aac)) was kept as it is: a voice can identify the person; pass "
                           "--audio drop to leave it out"]}
    page = summarize(report, {"video": Path("o.mp4")}, audience="page")
    assert not [line for line in page.lines() if "--" in line or "`" in line], page.lines()
    assert "choose Audio: drop" in page.warnings[0]
    assert for_page("identity photo (--identity): no face found in x.png") == "identity photo: no face found in x.png"
