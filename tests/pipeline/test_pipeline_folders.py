"""Folder runs: mirrored outputs, one bad file never stops the rest, re-runs resume; locally and on Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from reenact.batch import plan_folder
from reenact.cli import deidentify_main
from reenact.errors import InputError
from testing.media import cut_clip
from testing.models import MOBILEFACE, SCRFD


@pytest.fixture()
def folder(fixtures: Path, tmp_path: Path) -> Path:
    root = tmp_path / "in put"
    (root / "sub").mkdir(parents=True)
    cut_clip(fixtures / "videos" / "liveportrait_d0.mp4", root / "a.mp4", 4)
    cut_clip(fixtures / "videos" / "sadtalker_WDA_KatieHill_000.mp4", root / "sub" / "b.mp4", 4)
    (root / "broken.mp4").write_text("this is not a video")
    (root / "empty.mov").write_bytes(b"")
    (root / "notes.txt").write_text("not a video either")
    return root


def _args(fixtures: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(src), "-o", str(out), "--quiet", "--device", "cpu",
        "--detector-model", str(SCRFD.file(fixtures)),
        "--identity-model", str(MOBILEFACE.file(fixtures)),
        "--identity-mean", "0", "--identity-std", "1", *extra,
    ]


def _check_run(fixtures: Path, folder: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> None:
    status = deidentify_main(_args(fixtures, folder, out, *extra))
    assert status == 1, "a failed file makes the exit status 1"
    assert (out / "a.mp4").is_file() and (out / "sub" / "b.mp4").is_file()
    assert (out / "a.mp4.report.json").is_file()
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
    assert deidentify_main(args) == 1  # the two broken files fail again; the stale outputs do not
    table = capsys.readouterr().out
    assert table.count("stale: it was made with other settings; --overwrite remakes it") == 2, table
    assert "0 done, 2 skipped, 2 failed" in table
    assert "2 existing outputs were made differently (stale) and left as they are: add --overwrite" in table


def test_a_folder_of_stale_outputs_is_not_a_failure(fixtures: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cut_clip(fixtures / "videos" / "liveportrait_d0.mp4", src / "a.mp4", 3)
    assert deidentify_main(_args(fixtures, src, out)) == 0
    mtime = (out / "a.mp4").stat().st_mtime_ns
    assert deidentify_main([a for a in _args(fixtures, src, out, "--seed", "5") if a != "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "skipped" in said and "1 existing output was made differently (stale) and left as it is: add " \
        "--overwrite to remake it" in said, said
    assert (out / "a.mp4").stat().st_mtime_ns == mtime, "a stale output was touched"
    assert deidentify_main(_args(fixtures, src, out, "--seed", "5", "--overwrite")) == 0
    assert (out / "a.mp4").stat().st_mtime_ns != mtime


def test_summary_names_the_failures(fixtures: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = [a for a in _args(fixtures, folder, out) if a != "--quiet"]
    assert deidentify_main(args) == 1
    table = capsys.readouterr().out
    assert "broken.mp4" in table and "failed" in table and "notes.txt" in table and "ignored" in table
    assert "2 done" in table and "2 failed" in table
    # each done file says what its faces became (the clips have one face per frame, 4 frames)
    done = [line for line in table.splitlines() if "  done  " in line]
    assert len(done) == 2 and all(line.rstrip().endswith(("4 blurred", "4 synthetic")) for line in done), table


@pytest.mark.timeout(600)
def test_ray_folder_run_gathers_results_and_failures(
    fixtures: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from testing.fixtures import require_extra

    require_extra("ray")
    _check_run(fixtures, folder, tmp_path / "out", capsys, "--ray", "local")


def test_output_folder_inside_input_is_refused(folder: Path) -> None:
    with pytest.raises(InputError, match="inside the input folder"):
        plan_folder(folder, folder / "out")


def _fake_done(output: Path, source: Path, config: object, mode: str = "deidentify") -> None:
    """An output with the report a finished run writes beside it."""
    import json

    from reenact.batch import source_fingerprint
    from reenact.config import to_dict
    from reenact.pipeline.run import report_paths

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(b"video")
    report_paths(output)["report"].write_text(json.dumps({
        "mode": mode, "config": to_dict(config), "identity_photo": None,
        "source_fingerprint": source_fingerprint(source)}))


def test_a_replaced_source_is_stale_not_skipped(fixtures: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from reenact.pipeline import PipelineConfig, plan_run
    from reenact.pipeline.run import stale_reason

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cut_clip(fixtures / "videos" / "liveportrait_d0.mp4", src / "a.mp4", 4)
    _fake_done(out / "a.mp4", src / "a.mp4", PipelineConfig())
    plan = plan_run("deidentify", PipelineConfig())
    assert stale_reason(out / "a.mp4", plan, src / "a.mp4") is None
    cut_clip(fixtures / "videos" / "sadtalker_WDA_KatieHill_000.mp4", src / "a.mp4", 4)  # another clip, same name
    assert "source file changed" in (stale_reason(out / "a.mp4", plan, src / "a.mp4") or "")
    # --dry-run says what the run would do: the stale output is listed as stale, not done, not failed
    assert deidentify_main([str(src), "-o", str(out), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["skipped"] == [] and plan["failed"] == [] and "source file changed" in plan["stale"][0][1]


def test_sidecars_are_named_per_output_and_refused_when_they_exist(tmp_path: Path) -> None:
    from reenact.errors import OutputExistsError
    from reenact.pipeline.run import check_sidecars, report_paths

    names = {p.name for out in ("o.mkv", "o.mov", "o.avi", "o.mp4") for p in report_paths(tmp_path / out).values()}
    assert len(names) == 4 * len(report_paths(tmp_path / "o.mp4")), "two outputs share a sidecar"
    (tmp_path / "x.mp4.report.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="x.mp4.report.json"):
        check_sidecars(tmp_path / "x.mp4", overwrite=False)
    check_sidecars(tmp_path / "x.mp4", overwrite=True)
    check_sidecars(tmp_path / "y.mp4", overwrite=False)


def test_dry_run_lists_a_broken_file_as_the_run_would(folder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert deidentify_main([str(folder), "-o", str(tmp_path / "o"), "--dry-run", "--device", "cpu"]) == 0
    plan = json.loads(capsys.readouterr().out)
    failed = {Path(name).name for name, _error in plan["failed"]}
    assert failed == {"broken.mp4", "empty.mov"}
    assert {Path(j[0]).name for j in plan["jobs"]} == {"a.mp4", "b.mp4"}
