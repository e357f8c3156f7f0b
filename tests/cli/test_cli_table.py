"""The command table, the one place that maps errors to exit codes, and a parse that stays light."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from reenact import __version__
from reenact.cli import COMMANDS, SUBCOMMANDS, deidentify_main, main, run_guarded
from reenact.errors import ConfigError, InputError, ModelError, OutputExistsError, PipelineError

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--help"])
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert SUBCOMMANDS == ["eval", "models", "grid", "interpolate", "app"]
    assert all(name in out for name in SUBCOMMANDS)
    assert set(COMMANDS) == {"reenact", "deidentify", "reenact-train", *SUBCOMMANDS}


@pytest.mark.parametrize("entry", [main, deidentify_main])
def test_version(entry: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        entry(["--version"])  # type: ignore[operator]
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize(("error", "status"), [
    (ConfigError("bad key x"), 2), (InputError("no file y"), 2), (OutputExistsError("z exists"), 2),
    (ModelError("weights missing"), 1), (PipelineError("stage failed"), 1), (KeyboardInterrupt(), 130),
])
def test_errors_become_one_line_and_their_exit_code(error: BaseException, status: int,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def run(_args: argparse.Namespace) -> int:
        raise error

    assert run_guarded(run, argparse.Namespace()) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and (str(error) in err[0] or status == 130)


def test_every_console_script_and_the_app_share_the_guard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """reenact-train and ``python -m reenact.app`` print errors like the others: one line, control
    characters in a file name escaped (a name cannot clear the terminal), the error's status."""
    from reenact.app.__main__ import main as app_main
    from reenact.cli import train_main

    hostile = str(tmp_path / "a\x1b[2Jb.safetensors")
    assert train_main(["export", "--checkpoint", hostile, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "\x1b" not in err[0] and "\\x1b[2Jb" in err[0]
    assert app_main(["--allow", str(tmp_path / "no\x1b[2Jdir"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "\x1b" not in err[0] and "no\\x1b[2Jdir: not a folder" in err[0]

    def interrupted(_args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    left = COMMANDS["reenact-train"].left
    assert run_guarded(interrupted, argparse.Namespace(), left) == 130
    assert capsys.readouterr().err.strip() == "interrupted: the last checkpoint is kept"


def test_bad_flags_exit_2_like_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        deidentify_main(["clip.mp4", "--no-such-flag"])
    assert exit_info.value.code == 2 and "--no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["clip.mp4"])  # reenact needs --identity
    assert exit_info.value.code == 2 and "--identity" in capsys.readouterr().err


def test_quiet_subcommand_prints_nothing_but_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.png"
    out.write_bytes(b"keep")
    assert main(["grid", "--id-dir", str(tmp_path), "--attr-dir", str(tmp_path), "-o", str(out), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--overwrite" in captured.err and out.read_bytes() == b"keep"


def test_parsing_every_command_leaves_torch_unloaded() -> None:
    """Refusing bad flags or a missing input must not wait for torch: the CLI imports it only in ``run``."""
    code = (
        "import sys\n"
        "from reenact.cli import COMMANDS, build_parser\n"
        "for name in COMMANDS: build_parser(name)\n"
        "build_parser('reenact').parse_args(['a.mp4', '--identity', 'b.jpg', '--smooth', 'gaussian'])\n"
        "build_parser('eval').parse_args(['eval', 'a.mp4', 'b.mp4', '--landmarks', 'l.onnx'])\n"
        "from reenact.cli import main\n"
        "assert main(['no/such/clip.mp4', '--identity', 'b.jpg']) == 2\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'cv2', 'onnxruntime', 'av') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "", f"parsing imported {result.stdout.strip()}"
