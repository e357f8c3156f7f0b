"""The table of bad invocations: command -> exit status -> the error line on stderr.

``tests/cli/test_bad_invocations.py`` runs every row and checks the status, the message and
that ``docs/exit-statuses.md`` is what :func:`render` makes of it. Regenerate the doc with
``python tests/cli/exit_table.py`` (needs the fixture clips, see testing/fixtures.py).

Each row runs in one scratch folder made by :func:`make_scratch` (relative paths), so the
messages are the same on every machine: the folder's path prints as ``.``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "exit-statuses.md"


class Case(NamedTuple):
    command: str  # how a user types it (shell words, relative to the scratch folder)
    status: int
    says: str  # a fragment the error line must hold


# the scratch folder: clip.mp4 (a real clip), text.mp4 (text), empty.mp4, face.jpg (a photo),
# text.jpg (text), afile (a file), photos/ (a folder of photos), videos/ (a folder), existing.mp4/.png
CASES: list[Case] = [
    Case("reenact", 2, "required: input"),
    Case("reenact clip.mp4", 2, "--identity"),
    Case("reenact missing.mp4 --identity face.jpg", 2, "no such file or folder"),
    Case("reenact text.mp4 --identity face.jpg", 2, "cannot be opened as a video"),
    Case("reenact empty.mp4 --identity face.jpg", 2, "is empty"),
    Case("reenact clip.mp4 --identity nofile.jpg", 2, "not found"),
    Case("reenact clip.mp4 --identity photos", 2, "is a folder"),
    Case("reenact clip.mp4 --identity face.jpg -o afile/x.mp4", 2, "afile is a file, not a folder"),
    Case("reenact clip.mp4 --identity face.jpg -o nodir/x.mp4", 2, "does not exist"),
    Case("reenact clip.mp4 --identity face.jpg -o out", 2, "has no file extension"),
    Case("reenact clip.mp4 --identity face.jpg -o existing.mp4", 2, "already exists"),
    Case("reenact clip.mp4 --identity face.jpg -o clip.mp4", 2, "is the input"),
    Case("reenact clip.mp4 --identity face.jpg -o videos", 2, "is a folder"),
    Case("reenact clip.mp4 --identity face.jpg --set encode.crf=-5", 2, "encode.crf"),
    Case("reenact clip.mp4 --identity face.jpg --set encode.crf=100", 2, "encode.crf"),
    Case("reenact clip.mp4 --identity face.jpg --set encode.preset=bogus", 2, "preset"),
    Case("reenact clip.mp4 --identity face.jpg --set encode.pix_fmt=bogus", 2, "encode.pix_fmt"),
    Case("reenact clip.mp4 --identity face.jpg --set encode.tune=bogus", 2, "tune"),
    Case("reenact clip.mp4 --identity face.jpg --set nosuch.key=1", 2, "nosuch"),
    Case("reenact clip.mp4 --identity face.jpg --set blend.feather", 2, "KEY=VALUE"),
    Case("reenact clip.mp4 --identity face.jpg --smooth gaussian --no-smooth", 2, "contradict"),
    Case("reenact clip.mp4 --identity face.jpg --pack nosuch", 2, "nosuch"),
    Case("reenact clip.mp4 --identity face.jpg --workers 0", 2, "--workers"),
    Case("reenact clip.mp4 --identity face.jpg --no-such-flag", 2, "unrecognized arguments"),
    Case("reenact clip.mp4 --identity face.jpg --mapper nope", 2, "invalid choice"),
    Case("reenact clip.mp4 --identity face.jpg --config missing.yaml", 2, "missing.yaml"),
    Case("reenact clip.mp4 --identity text.jpg", 2, "text.jpg"),
    Case("reenact clip.mp4 --ident face.jpg", 2, "required: --identity"),
    Case("deidentify", 2, "required: input"),
    Case("deidentify text.mp4", 2, "cannot be opened as a video"),
    Case("deidentify clip.mp4 --identity face.jpg", 2, "deidentify takes no --identity"),
    Case("deidentify videos -o afile", 2, "is a file"),
    Case("deidentify clip.mp4 --seed abc", 2, "invalid int value"),
    Case("deidentify clip.mp4 --detector-threshold 2", 2, "score_threshold"),
    Case("deidentify clip.mp4 -o x.mp4 --device tpu", 2, "tpu"),
    Case("reenact eval", 2, "required"),
    Case("reenact eval missing.mp4 clip.mp4", 2, "no such file"),
    Case("reenact eval clip.mp4 text.mp4", 2, "cannot be opened as a video"),
    Case("reenact eval clip.mp4 videos", 2, "is a folder"),
    Case("reenact eval clip.mp4 clip.mp4 --mode reenact", 2, "needs --identity"),
    Case("reenact eval clip.mp4 clip.mp4 --identity photos", 2, "is a folder"),
    Case("reenact eval clip.mp4 clip.mp4 --max-frames 0", 2, "--max-frames"),
    Case("reenact models", 2, "required"),
    Case("reenact models pull --no-such-flag", 2, "required: pack"),
    Case("reenact grid --id-dir photos --attr-dir photos -o grid.mp4", 2, "cannot write .mp4"),
    Case("reenact grid --id-dir photos --attr-dir photos -o grid", 2, "has no file extension"),
    Case("reenact grid --id-dir photos --attr-dir photos -o existing.png", 2, "already exists"),
    Case("reenact grid --id-dir missing --attr-dir photos -o g.png", 2, "no such folder"),
    Case("reenact grid --id-dir photos --attr-dir photos", 2, "give --output"),
    Case("reenact grid --attr-dir photos -o g.png", 2, "required"),
    Case("reenact interpolate --identity face.jpg --attr face.jpg --attr face.jpg -o x.mp4", 2,
         "cannot write .mp4"),
    Case("reenact interpolate --identity face.jpg --attr face.jpg -o x.gif", 2, "two or more"),
    Case("reenact interpolate --attr face.jpg --attr face.jpg -o x.gif", 2, "give --identity"),
    Case("reenact interpolate --identity face.jpg --attr face.jpg --attr face.jpg --steps 0 -o x.gif", 2,
         "--steps"),
    Case("reenact app --port notanumber", 2, "invalid int value"),
    Case("reenact app --no-such-flag", 2, "unrecognized arguments"),
    Case("reenact-train fit --config missing.yaml", 2, "missing.yaml"),
    Case("reenact-train fit --set optim.nope=1", 2, "optim.nope"),
    Case("reenact-train export --checkpoint none.safetensors --out o", 1, "does not exist"),
    Case("reenact-train", 2, "required: command"),
]


def make_scratch(where: Path, clip: Path, photo: Path) -> Path:
    """The files the rows name, in ``where``. ``clip``/``photo``: a real video and face photo."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, where / "clip.mp4")
    shutil.copy(clip, where / "existing.mp4")
    (where / "text.mp4").write_text("this is not a video\n")
    (where / "empty.mp4").write_bytes(b"")
    shutil.copy(photo, where / "face.jpg")
    (where / "text.jpg").write_text("this is not a photo\n")
    (where / "afile").write_text("a file\n")
    (where / "photos").mkdir(exist_ok=True)
    shutil.copy(photo, where / "photos" / "a.jpg")
    (where / "videos").mkdir(exist_ok=True)
    (where / "existing.png").write_bytes(b"keep")
    return where


def error_line(stderr: str) -> str:
    """The line that says what went wrong (argparse prints its usage first)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error:") or ": error: " in line:
            return line
    return lines[0] if lines else ""


def run_case(words: Sequence[str], scratch: Path) -> tuple[int, str]:
    """Run one command in this process in ``scratch``: (exit status, the error line or a traceback)."""
    from reenact.cli import deidentify_main, main, train_main

    entry = {"deidentify": deidentify_main, "reenact-train": train_main}.get(words[0], main)
    stderr = io.StringIO()
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = entry(list(words[1:]))
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                return -1, "Traceback: " + traceback.format_exc()
    finally:
        os.chdir(cwd)
    line = error_line(stderr.getvalue())
    for path in {str(scratch.resolve()), str(scratch)}:
        line = line.replace(path + os.sep, "").replace(path, ".")
    line = line.replace(str(ROOT) + os.sep, "")
    return status, line


def render(rows: Sequence[tuple[Case, int, str]]) -> str:
    """``docs/exit-statuses.md`` from the measured rows."""
    out = [
        "# Exit statuses and messages",
        "",
        "<!-- generated by `python tests/cli/exit_table.py`; tests/cli/test_bad_invocations.py "
        "checks it is up to date -->",
        "",
        "Every command ends in one of these ways; a refusal is one line on stderr (argparse "
        "prints its usage line first), never a traceback.",
        "",
        "| status | meaning |",
        "|---|---|",
        "| 0 | done (a folder run: every file done or skipped) |",
        "| 1 | the work failed (a model, the encoder, a stage; a folder run with a failed file; an "
        "internal error, named in one line) |",
        "| 2 | refused before any work: bad flag, setting, input, identity photo or output path |",
        "| 130 | stopped by Ctrl-C (SIGINT); nothing partial is left |",
        "| 143 | stopped by SIGTERM (`timeout`, `docker stop`, schedulers); nothing partial is left |",
        "| 129 | stopped by SIGHUP (the terminal closed); nothing partial is left |",
        "",
        "## Bad invocations",
        "",
        "Run in a folder holding `clip.mp4` (a video), `text.mp4` (text), `empty.mp4`, `face.jpg`, "
        "`text.jpg` (text), `afile` (a file), `photos/`, `videos/`, `existing.mp4`, `existing.png`.",
        "",
        "| command | status | error line |",
        "|---|---|---|",
    ]
    for case, status, line in rows:
        cell = line.replace("|", "\\|")
        out.append(f"| `{case.command}` | {status} | {cell} |")
    return "\n".join(out) + "\n"


def measure(scratch: Path) -> list[tuple[Case, int, str]]:
    """Run every row."""
    return [(case, *run_case(case.command.split(), scratch)) for case in CASES]


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))
    from testing.fixtures import fixtures_dir

    fixtures = fixtures_dir()
    if fixtures is None:
        sys.exit("the fixture clips are needed: see testing/fixtures.py")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = make_scratch(Path(tmp) / "scratch", fixtures / "videos" / "liveportrait_d0.mp4",
                               fixtures / "images" / "face_recognition" / "biden.jpg")
        DOC.write_text(render(measure(scratch)), encoding="utf-8")
    print(f"wrote {DOC}")
