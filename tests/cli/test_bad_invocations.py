"""Bad invocations of every command: the documented exit status, one error line, no traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from exit_table import CASES, DOC, ROOT, make_scratch, measure, render


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, fixtures: Path) -> Path:
    return make_scratch(tmp_path_factory.mktemp("cli") / "scratch", fixtures / "videos" / "liveportrait_d0.mp4",
                        fixtures / "images" / "face_recognition" / "biden.jpg")


def test_every_bad_invocation_exits_as_documented(scratch: Path) -> None:
    assert len(CASES) >= 40
    rows = measure(scratch)
    wrong = [(case.command, status, line) for case, status, line in rows
             if status != case.status or case.says not in line or "Traceback" in line]
    assert not wrong, wrong
    assert {case.command.split()[0] if case.command.split()[0] != "reenact" or len(case.command.split()) < 2
            or case.command.split()[1] not in ("eval", "models", "grid", "interpolate", "app")
            else case.command.split()[1] for case in CASES} == {
        "reenact", "deidentify", "eval", "models", "grid", "interpolate", "app", "reenact-train"}
    assert DOC.read_text(encoding="utf-8") == render(rows), "run `python tests/cli/exit_table.py`"
    assert not list(scratch.glob("x.*")) and not list(scratch.glob("grid*")), "a refusal wrote a file"


@pytest.mark.parametrize("argv", [
    ["-m", "reenact.cli", "text.mp4", "--identity", "face.jpg"],
    ["-c", "from reenact.cli import deidentify_main as m; raise SystemExit(m())", "clip.mp4", "--identity", "x"],
    ["-m", "reenact.cli", "eval", "clip.mp4", "text.mp4"],
    ["-m", "reenact.cli", "models", "verify"],
    ["-m", "reenact.cli", "grid", "--id-dir", "photos", "--attr-dir", "photos", "-o", "grid.mp4"],
    ["-m", "reenact.cli", "interpolate", "--identity", "face.jpg", "--attr", "face.jpg", "--attr", "face.jpg",
     "-o", "x.mp4"],
    ["-m", "reenact.cli", "app", "--port", "x"],
    ["-c", "from reenact.cli import train_script; train_script()", "fit", "--no-such-flag"],
    ["-m", "reenact.app", "--port", "x"],
])
def test_each_command_refuses_in_a_process_without_traceback_and_fast(argv: list[str], scratch: Path) -> None:
    """A real process per command: exit 2, no traceback, and no torch import on the way (fast)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], cwd=scratch, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()
    assert time.perf_counter() - started < 5, "a refusal took long: did it import torch?"


def test_refusing_a_text_file_does_not_import_torch(scratch: Path) -> None:
    code = ("import sys\nfrom reenact.cli import main\n"
            "assert main(['text.mp4', '--identity', 'face.jpg']) == 2\n"
            "assert main(['grid', '--id-dir', 'photos', '--attr-dir', 'photos', '-o', 'g.mp4']) == 2\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=scratch, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "False"


def test_image_tool_suffixes_match_the_library() -> None:
    from reenact.cli.image_tools import GRID_SUFFIXES, INTERPOLATE_SUFFIXES
    from reenact.image_tools import FRAMES_OUTPUT_FORMATS, IMAGE_OUTPUT_FORMATS

    assert set(GRID_SUFFIXES) == set(IMAGE_OUTPUT_FORMATS)
    assert set(INTERPOLATE_SUFFIXES) == set(FRAMES_OUTPUT_FORMATS)
