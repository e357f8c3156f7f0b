"""Folder runs: mirrored outputs, one bad file never stops the rest, re-runs resume; locally and on Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_media import trim_clip

from reenact.batch import plan_folder
from reenact.cli import deidentify_main
from reenact.errors import InputError


@pytest.fixture()
def folder(fixtures: Path, tmp_path: Path) -> Path:
    root = tmp_path / "in put"
    (root / "sub").mkdir(parents=True)
    trim_clip(fixtures / "videos" / "liveportrait_d0.mp4", root / "a.mp4", 4)
    trim_clip(fixtures / "videos" / "sadtalker_WDA_KatieHill_000.mp4", root / "sub" / "b.mp4", 4)
    (root / "broken.mp4").write_text("this is not a video")
    (root / "empty.mov").write_bytes(b"")
    (root / "notes.txt").write_text("not a video either")
    return root


def _args(fixtures: Path, src: Path, out: Path, *extra: str) -> list[str]:
    models = fixtures / "models"
    return [
        str(src), "-o", str(out), "--quiet", "--device", "cpu",
        "--detector-model", str(models / "scrfd" / "scrfd_500m_kps.onnx"),
        "--identity-model", str(models / "mobileface_recognition_onnx" / "mobileface_V2.onnx"),
        "--identity-mean", "0", "--identity-std", "1", *extra,
    ]


def _check_run(fixtures: Path, folder: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> None:
    status = deidentify_main(_args(fixtures, folder, out, *extra))
    assert status == 1, "a failed file makes the exit status 1"
    assert (out / "a.mp4").is_file() and (out / "sub" / "b.mp4").is_file()
    assert (out / "a.report.json").is_file()
    assert not (out / "broken.mp4").exists() and not (out / "empty.mp4").exists()
    assert not [p for p in out.rglob("*") if "partial" in p.name], "no partial files left behind"
    # re-run: finished files are skipped, the broken ones fail again
    mtime = (out / "a.mp4").stat().st_mtime_ns
    assert deidentify_main(_args(fixtures, folder, out, *extra)) == 1
    assert (out / "a.mp4").stat().st_mtime_ns == mtime
    plan = plan_folder(folder, out)
    assert sorted(j.source.name for j in plan.jobs) == ["broken.mp4", "empty.mov"]


def test_local_folder_run_reports_failures_and_resumes(
    fixtures: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check_run(fixtures, folder, tmp_path / "out", capsys)


def test_rerun_with_other_settings_flags_stale_outputs(
    fixtures: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert deidentify_main(_args(fixtures, folder, out)) == 1
    capsys.readouterr()
    args = [a for a in _args(fixtures, folder, out, "--seed", "5") if a != "--quiet"]
    assert deidentify_main(args) == 1
    table = capsys.readouterr().out
    assert table.count("stale") == 2 and "0 done" in table


def test_summary_names_the_failures(fixtures: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = [a for a in _args(fixtures, folder, out) if a != "--quiet"]
    assert deidentify_main(args) == 1
    table = capsys.readouterr().out
    assert "broken.mp4" in table and "failed" in table and "notes.txt" in table and "ignored" in table
    assert "2 done" in table and "2 failed" in table


@pytest.mark.timeout(600)
def test_ray_folder_run_gathers_results_and_failures(
    fixtures: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    _check_run(fixtures, folder, tmp_path / "out", capsys, "--ray", "local")


def test_output_folder_inside_input_is_refused(folder: Path) -> None:
    with pytest.raises(InputError, match="inside the input folder"):
        plan_folder(folder, folder / "out")
