"""Folders in object storage on a real multi-node Ray cluster: an S3 server (moto, with
authentication) on 127.0.0.1 and a Ray head plus two worker nodes, each a separate set of
processes with its own raylet, scratch folder and model cache. No node sees another's disk:
the driver sends URLs, each worker fetches, runs, uploads and cleans its scratch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reenact.cli import deidentify_main
from testing.fixtures import require_extra
from testing.media import cut_clip, read_frames

require_extra("ray")
pytest.importorskip("s3fs", reason="the s3 tests need s3fs (pip install 'reenact[dev]')")
pytest.importorskip("moto.server", reason="the s3 tests need moto[server] (pip install 'reenact[dev]')")

from testing.cluster import RayCluster, S3Server, environment, ray_cluster, s3_server  # noqa: E402

BUCKET = "reenact-test"
SETTINGS = ["--method", "blur", "--pack", "tiny", "--device", "cpu", "--quiet"]
CLIPS = {"a.mp4": ("liveportrait_d0.mp4", 4), "sub/b.mp4": ("sadtalker_WDA_KatieHill_000.mp4", 4),
         "c.mp4": ("liveportrait_d12.mp4", 4)}


@pytest.fixture(scope="module")
def clips(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips") / "in"
    for name, (video, frames) in CLIPS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cut_clip(fixtures / "videos" / video, root / name, frames)
    return root


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server((BUCKET,)) as server, environment(server.env):
        yield server


@pytest.fixture(scope="module")
def cluster(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    with ray_cluster(tmp_path_factory.mktemp("nodes"), s3.env, workers=2) as made:
        yield made


def _fs():  # type: ignore[no-untyped-def]
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def _upload(folder: Path, prefix: str) -> None:
    _fs().put(str(folder) + "/", f"{BUCKET}/{prefix}/", recursive=True)


def _summary(prefix: str) -> dict:  # type: ignore[type-arg]
    return json.loads(_fs().cat_file(f"{BUCKET}/{prefix}/reenact-summary.json"))


def _videos(prefix: str) -> dict[str, dict]:  # type: ignore[type-arg]
    found = _fs().find(f"{BUCKET}/{prefix}", detail=True)
    return {k.split(f"{prefix}/", 1)[1]: v for k, v in found.items() if k.endswith(".mp4")}


def test_s3_folder_on_a_three_node_cluster_matches_a_local_run(
    clips: Path, s3: S3Server, cluster: RayCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "local"
    assert deidentify_main([str(clips), "-o", str(local), *SETTINGS]) == 0
    _upload(clips, "in")
    before = {p for s in cluster.scratch for p in s.iterdir()}  # a killed node's leftovers, if that test ran first
    args = [f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/out/", "--ray", cluster.address, *SETTINGS]
    assert deidentify_main(args) == 0, capsys.readouterr().err

    # 1. the same outputs as the local run, each with its sidecars
    fs, got = _fs(), tmp_path / "got"
    assert sorted(_videos("out")) == sorted(CLIPS)
    for name in CLIPS:
        assert fs.exists(f"{BUCKET}/out/{name}.report.json") and fs.exists(f"{BUCKET}/out/{name}.config.yaml")
        (got / name).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{BUCKET}/out/{name}", str(got / name))
        np.testing.assert_array_equal(read_frames(got / name), read_frames(local / name), err_msg=name)
    # 2. the summary: every file once, done on both worker nodes, no local path, no secret
    summary = _summary("out")
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 0, "ignored": 0}
    assert sorted(f["source"] for f in summary["files"]) == sorted(CLIPS)
    assert len(summary["nodes"]) == 2, summary["nodes"]
    text = json.dumps(summary) + fs.cat_file(f"{BUCKET}/out/a.mp4.report.json").decode()
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in text and s3.env["AWS_ACCESS_KEY_ID"] not in text
    assert str(tmp_path.parents[1]) not in text and "scratch" not in text.replace("<scratch>", "")
    # 3. each node's scratch folder is empty again
    assert {p for s in cluster.scratch for p in s.iterdir()} <= before, "each job removed its scratch folder"

    # 4. the re-run skips everything (no object rewritten); a replaced input is reported stale
    stamps = {k: v["LastModified"] for k, v in _videos("out").items()}
    assert deidentify_main(args) == 0
    assert _summary("out")["counts"] == {"done": 0, "skipped": 3, "failed": 0, "ignored": 0}
    assert {k: v["LastModified"] for k, v in _videos("out").items()} == stamps
    fs.put_file(str(clips / "sub" / "b.mp4"), f"{BUCKET}/in/c.mp4")  # another clip under c.mp4's name
    assert deidentify_main(args) == 0  # a stale output is skipped (with the way to redo it), not a failed file
    stale = {f["source"]: f for f in _summary("out")["files"]}["c.mp4"]
    assert stale["status"] == "skipped" and "source file changed" in stale["error"] and "--overwrite" in stale["error"]


def test_a_node_killed_mid_file_is_retried_elsewhere_without_a_partial_object(
    clips: Path, cluster: RayCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload(clips, "kill-in")
    killed: list[str] = []

    def kill_when_busy() -> None:  # node 0 fetched a file and is working on it: kill the node
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [p for p in cluster.scratch[0].glob("job-*/in/*") if p.stat().st_size > 0]
            if busy:
                killed.append(busy[0].name)
                cluster.kill(0)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        args = [f"s3://{BUCKET}/kill-in/", "-o", f"s3://{BUCKET}/kill-out/", "--ray", cluster.address, *SETTINGS]
        assert deidentify_main(args) == 0, capsys.readouterr().err
    finally:
        killer.join()
        cluster.replace(0)
    assert killed, "node 0 never started a file"
    summary = _summary("kill-out")
    assert summary["counts"]["done"] == 3 and len(summary["files"]) == 3, summary
    survivors = {f["node"] for f in summary["files"]}
    assert len(survivors) == 1, "every file (the interrupted one too) finished on the node still alive"
    videos = _videos("kill-out")
    assert sorted(videos) == sorted(CLIPS), "no partial or extra object"
    for name in CLIPS:
        assert len(read_frames_from_s3(f"kill-out/{name}")) == CLIPS[name][1]


def read_frames_from_s3(key: str) -> np.ndarray:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(key).name
        _fs().get_file(f"{BUCKET}/{key}", str(local))
        return read_frames(local)


@pytest.mark.parametrize("change", ["wrong secret", "no credentials"])
def test_bad_credentials_fail_in_one_line_before_any_work(
    change: str, s3: S3Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if change == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    status = deidentify_main([f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/bad-out/",
                              "--ray", "127.0.0.1:9", *SETTINGS])  # nothing listens there: Ray is never reached
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0, err
    assert err.startswith(f"error: s3://{BUCKET}/in/: ")
    assert ("access denied (SignatureDoesNotMatch)" if change == "wrong secret" else "no credentials") in err
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in err and "not-the-secret" not in err
    monkeypatch.undo()
    assert not _fs().exists(f"{BUCKET}/bad-out"), "nothing was written"
