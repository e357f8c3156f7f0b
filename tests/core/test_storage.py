"""URLs as folder-run inputs and outputs, without a cluster: names, and a worker that cannot reach the bucket."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from reenact.batch import UrlJob, run_jobs
from reenact.cli import deidentify_main
from reenact.storage import is_url, public_url, run_url_job


def test_urls_are_told_from_paths_and_printed_without_credentials() -> None:
    assert is_url("s3://bucket/in/") and is_url("gs://b/x") and not is_url("file:///tmp/x")
    assert not is_url("/tmp/s3:/x") and not is_url("clips/a.mp4")
    assert public_url("s3://AKIA:secret@bucket/in/?token=abc") == "s3://bucket/in/"


def _never_called(job: object) -> dict[str, object]:
    raise AssertionError("the task ran although the source could not be fetched")


def test_a_worker_that_cannot_reach_the_bucket_fails_its_files_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("REENACT_SCRATCH", str(tmp_path / "scratch"))
    jobs = [UrlJob(f"s3://bucket/in/{n}.mp4", f"s3://bucket/out/{n}.mp4", 10, "etag") for n in ("a", "b")]
    task = functools.partial(run_url_job, task=_never_called)
    results = run_jobs(jobs, task)
    assert [r.status for r in results] == ["failed", "failed"]
    for job, r in zip(jobs, results, strict=True):
        assert r.error is not None and "\n" not in r.error and "secret-value" not in r.error
        assert r.error.startswith(f"{job.source}: cannot reach the storage"), r.error
    assert not list((tmp_path / "scratch").iterdir()), "the scratch folders are removed"


def test_a_url_input_needs_an_output_and_refuses_audit(capsys: pytest.CaptureFixture[str]) -> None:
    assert deidentify_main(["s3://bucket/in/"]) == 2
    assert "needs -o/--output" in capsys.readouterr().err
    assert deidentify_main(["s3://bucket/in/", "-o", "s3://bucket/out/", "--audit"]) == 2
    assert "--audit" in capsys.readouterr().err
