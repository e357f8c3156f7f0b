"""The README's main command runs on the bundled samples, offline, as written."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from reenact.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_readme_main_command_runs_on_the_samples(tmp_path: Path) -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("reenact samples/")]
    assert lines, "the README shows the main command on samples/"
    argv = shlex.split(lines[0])[1:]
    out = argv[argv.index("-o") + 1]
    argv = [str(ROOT / a) if a.startswith("samples/") else a for a in argv]
    argv[argv.index("-o") + 1] = str(tmp_path / out)
    assert main([*argv, "--quiet"]) == 0
    report = json.loads((tmp_path / f"{out}.report.json").read_text())
    assert report["frames"] == 50 and len(report["tracks"]) == 1
    assert report["counts"]["faces_replaced"] == 50
    assert (tmp_path / f"{out}.preview.png").is_file()
