"""Folder runs: links out of the input folder, source fingerprints, printable names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reenact.batch import JobResult, plan_folder, source_fingerprint, summary_table
from reenact.errors import printable


def test_links_out_of_the_input_folder_are_ignored_unless_followed(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "secret"
    inside.mkdir()
    outside.mkdir()
    (outside / "private.mp4").write_bytes(b"x")
    (inside / "own.mp4").write_bytes(b"y")
    os.symlink(outside / "private.mp4", inside / "link.mp4")
    plan = plan_folder(inside, tmp_path / "out")
    assert [j.source.name for j in plan.jobs] == ["own.mp4"]
    ignored = [r for r in plan.known if r.source.name == "link.mp4"]
    assert ignored and ignored[0].status == "ignored" and "outside the input folder" in (ignored[0].error or "")
    followed = plan_folder(inside, tmp_path / "out", follow_symlinks=True)
    assert sorted(j.source.name for j in followed.jobs) == ["link.mp4", "own.mp4"]


def test_a_link_inside_the_folder_is_processed(tmp_path: Path) -> None:
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "a.mp4").write_bytes(b"y")
    os.symlink(inside / "a.mp4", inside / "b.mp4")
    assert sorted(j.source.name for j in plan_folder(inside, tmp_path / "out").jobs) == ["a.mp4", "b.mp4"]


@pytest.mark.parametrize("size", [10, 3 << 20])
def test_fingerprint_sees_a_replaced_file_of_the_same_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "clip.mp4"
    data = bytearray(os.urandom(size))
    path.write_bytes(bytes(data))
    first = source_fingerprint(path)
    assert source_fingerprint(path) == first
    data[-1] ^= 0xFF  # the tail changed (e.g. another clip's index): same size, same head
    path.write_bytes(bytes(data))
    assert source_fingerprint(path) != first
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    assert source_fingerprint(path) != first


def test_summary_escapes_control_characters_in_names(tmp_path: Path) -> None:
    hostile = tmp_path / "a\nfake line\x1b[2J.mp4"
    table = summary_table([JobResult(hostile, None, "failed", error="bad\rname")])
    assert "\x1b" not in table and "\r" not in table
    assert table.count("\n") == 2  # header, one row, counts: the newline in the name did not add a row
    assert "\\n" in table and "\\x1b[2J" in table


def test_printable_keeps_ordinary_text() -> None:
    assert printable("Zoë/clip 1.mp4") == "Zoë/clip 1.mp4"
    assert printable("a\tb") == "a\\tb"


def test_ray_local_starts_a_private_instance_whatever_ray_address_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testing.fixtures import require_extra

    require_extra("ray")
    from reenact.batch import Job, run_jobs

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # nothing listens there: joining it would fail
    jobs = [Job(tmp_path / "a.mp4", tmp_path / "out" / "a.mp4")]
    results = run_jobs(jobs, lambda job: {"name": job.source.name}, ray_address="local")
    assert [r.status for r in results] == ["done"], results[0].error
    assert results[0].details == {"name": "a.mp4"}
