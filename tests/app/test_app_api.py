"""The app's safety rules and error messages through its HTTP API (FastAPI's TestClient)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from testing.fixtures import require_extra  # noqa: E402

require_extra("fastapi", module_level=True)  # the app extra: a skip outside CI, a failure in it
require_extra("httpx", module_level=True)

from app_media import SAMPLE, count_frames, flat_clip, short_clip  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from reenact.app.server import AppSettings, create_app  # noqa: E402

H = {"x-reenact": "1"}


@pytest.fixture()
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "allowed"
    folder.mkdir()
    return folder


def client(allowed: Path, **kw: object) -> TestClient:
    settings = AppSettings(allow=(allowed.resolve(),), device="cpu", **kw)  # type: ignore[arg-type]
    return TestClient(create_app(settings))


def test_paths_outside_the_allowed_folders_are_refused(allowed: Path, tmp_path: Path) -> None:
    outside = short_clip(tmp_path / "outside.mp4")
    (allowed / "link.mp4").symlink_to(outside)
    inside = short_clip(allowed / "inside.mp4")
    with client(allowed) as c:
        for typed in (str(outside), "../outside.mp4", str(allowed / ".." / "outside.mp4"), "link.mp4", "/etc/passwd"):
            r = c.post("/api/path", json={"path": typed}, headers=H)
            assert r.status_code == 403, (typed, r.text)
            assert "outside the allowed folders" in r.json()["error"], r.text
        r = c.post("/api/path", json={"path": str(inside)}, headers=H)
        assert r.status_code == 200, r.text
        assert r.json()["frames"] == 3 and r.json()["audio"] == 1


def test_server_paths_are_off_without_allow(tmp_path: Path) -> None:
    with TestClient(create_app(AppSettings(device="cpu"))) as c:
        r = c.post("/api/path", json={"path": str(SAMPLE)}, headers=H)
    assert r.status_code == 403 and "--allow" in r.json()["error"]


def test_upload_limit_refuses_declared_and_streamed_uploads(allowed: Path) -> None:
    data = SAMPLE.read_bytes()
    with client(allowed, max_upload=10_000) as c:
        r = c.put("/api/upload/video?name=big.mp4", content=data, headers=H)
        assert r.status_code == 413 and "larger than the upload limit of 9.8 KiB" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is counted while the body arrives
            for i in range(0, len(data), 4096):
                yield data[i:i + 4096]

        r = c.put("/api/upload/video?name=big.mp4", content=chunks(), headers=H)
        assert r.status_code == 413, r.text
        workdir = c.app.state.reenact.workdir  # type: ignore[attr-defined]
        assert not list((workdir / "uploads").rglob("*.mp4")), "a refused upload was kept"


def test_non_video_upload_says_so_without_server_paths(allowed: Path) -> None:
    with client(allowed) as c:
        r = c.put("/api/upload/video?name=notes.mp4", content=b"these are notes, not a video\n" * 50, headers=H)
        body = r.json()
    assert r.status_code == 400 and "notes.mp4" in body["error"], body
    assert "reenact-app-" not in body["error"] and "Traceback" not in body["error"]


def test_state_changes_need_the_page_header_and_a_local_host(allowed: Path) -> None:
    with client(allowed) as c:
        r = c.put("/api/upload/video?name=a.mp4", content=SAMPLE.read_bytes())
        assert r.status_code == 403 and "x-reenact" in r.json()["error"]
        r = c.get("/api/options", headers={"host": "attacker.example"})
        assert r.status_code == 400


def test_advanced_settings_are_checked_like_set(allowed: Path, tmp_path: Path) -> None:
    with client(allowed) as c:
        video = c.post("/api/path", json={"path": str(short_clip(allowed / "c.mp4"))}, headers=H).json()
        r = c.post("/api/preview", json={"input": video["id"], "advanced": "blend.nonsense=1"}, headers=H)
        assert r.status_code == 400 and "unknown key blend.nonsense" in r.json()["error"]
        r = c.post("/api/preview", json={"input": video["id"], "advanced": f"models.detector_model={tmp_path}/x.onnx"},
                   headers=H)
        assert r.status_code == 403 and "outside the allowed folders" in r.json()["error"]
        r = c.post("/api/preview", json={"input": video["id"], "advanced": "faces=reference:/etc/hostname"}, headers=H)
        assert r.status_code == 403, r.text
        r = c.post("/api/preview", json={"input": video["id"], "mode": "reenact"}, headers=H)
        assert r.status_code == 400 and "identity photo" in r.json()["error"]
        r = c.post("/api/preview", json={"input": video["id"], "frame": 3}, headers=H)
        assert r.status_code == 400 and "frames 0..2" in r.json()["error"]


def _wait(c: TestClient, job: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = c.get(f"/api/jobs/{job}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"run {job} did not finish")


def test_run_writes_beside_nothing_the_user_owns_and_queues_a_second_run(allowed: Path) -> None:
    source = short_clip(allowed / "clip.mp4")
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    with client(allowed, max_waiting=1) as c:
        video = c.post("/api/path", json={"path": str(source)}, headers=H).json()
        first = c.post("/api/jobs", json={"input": video["id"]}, headers=H).json()
        # the queue's thread takes the first run off the waiting list (bounded: a loaded machine
        # may start it late, and with max_waiting=1 a second run sent before then is refused)
        deadline = time.time() + 30
        while c.get(f"/api/jobs/{first['id']}").json()["state"] == "queued" and time.time() < deadline:
            time.sleep(0.05)
        second = c.post("/api/jobs", json={"input": video["id"]}, headers=H).json()
        assert second["ahead"] >= 1, second
        third = c.post("/api/jobs", json={"input": video["id"]}, headers=H)
        if c.get(f"/api/jobs/{second['id']}").json()["state"] == "queued":
            assert third.status_code == 429 and "already waiting" in third.json()["error"]
        cancelled = c.post(f"/api/jobs/{second['id']}/cancel", headers=H).json()
        assert cancelled["state"] in ("cancelled", "running")
        done = _wait(c, first["id"])
        assert done["state"] == "done", done
        assert set(done["files"]) == {"video", "report", "preview", "config"}
        r = c.get(done["files"]["video"])
        out = allowed.parent / "downloaded.mp4"
        out.write_bytes(r.content)
        assert count_frames(out) == 3
        assert c.get(done["files"]["report"]).json()["frames"] == 3
        workdir = c.app.state.reenact.workdir  # type: ignore[attr-defined]
        assert workdir.is_dir()
    assert sorted(p.name for p in allowed.iterdir()) == ["clip.mp4"], "the app wrote into an allowed folder"
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    assert not workdir.exists(), "the private folder outlived the app"


def test_no_faces_preview_says_so(allowed: Path) -> None:
    with client(allowed) as c:
        video = c.put("/api/upload/video?name=grey.mp4", content=flat_clip(allowed / "g.mp4").read_bytes(),
                      headers=H).json()
        r = c.post("/api/preview", json={"input": video["id"], "frame": 2}, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["faces"] == 0 and body["tracks"] == []
    assert body["warnings"][0] == "no faces found in frame 2: the output is unchanged there"


def test_private_folder_mode(allowed: Path) -> None:
    with client(allowed) as c:
        workdir = c.app.state.reenact.workdir  # type: ignore[attr-defined]
        assert os.stat(workdir).st_mode & 0o077 == 0


def test_no_response_may_be_framed_and_the_icon_is_served(allowed: Path) -> None:
    with client(allowed) as c:
        for url in ("/", "/api/options", "/api/packs", "/api/health", "/favicon.ico", "/api/jobs/nope"):
            r = c.get(url)
            assert r.headers["x-frame-options"] == "DENY", url
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], url
        icon = c.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
        assert icon.content[:4] == b"\x00\x00\x01\x00", "not an ICO file"
        states = c.get("/api/packs").json()
        assert states["tiny"]["untrained"] and states["tiny"]["ready"]
        assert "--" not in states["full"]["verdict"] and "below" not in states["full"]["verdict"]
        assert states["full"]["verdict"].startswith("The 'full' pack is not ready: ") and not states["full"]["ready"]


def test_a_photo_without_a_face_is_named_by_its_upload_name_only(allowed: Path, tmp_path: Path) -> None:
    from PIL import Image

    black = tmp_path / "black.png"
    Image.new("RGB", (120, 120)).save(black)
    with client(allowed) as c:
        workdir = str(c.app.state.reenact.workdir)  # type: ignore[attr-defined]
        video = c.post("/api/path", json={"path": str(short_clip(allowed / "c.mp4"))}, headers=H).json()
        photo = c.put("/api/upload/photo?name=black.png", content=black.read_bytes(), headers=H).json()
        settings = {"input": video["id"], "mode": "reenact", "identity": photo["id"]}
        preview = c.post("/api/preview", json=settings, headers=H).json()["error"]
        run = _wait(c, c.post("/api/jobs", json=settings, headers=H).json()["id"])
    assert run["state"] == "failed"
    for text in (preview, run["error"]):
        assert text.startswith("identity photo: no face found in black.png"), text
        assert workdir not in text and "reenact-app-" not in text and "/tmp" not in text and "--" not in text, text


def test_a_run_gives_the_summary_of_the_command_line_in_page_words(allowed: Path) -> None:
    with client(allowed) as c:
        video = c.post("/api/path", json={"path": str(short_clip(allowed / "clip.mp4"))}, headers=H).json()
        job = c.post("/api/jobs", json={"input": video["id"], "method": "pixelate"}, headers=H).json()
        done = _wait(c, job["id"])
    assert done["state"] == "done", done
    lines = done["result"]["summary"]["lines"]
    assert lines[0].startswith("wrote clip_deidentified.mp4: 3 frames, 1 face track, "), lines
    assert lines[1].startswith("beside it: clip_deidentified.mp4.report.json (report), "), lines
    assert lines[2] == "faces: 3 pixelated; per rung: face pixelated 3"
    assert "warning: the audio (1:audio (aac)) was kept as it is: a voice can identify the person; choose " \
        "Audio: drop to leave it out" in lines
    assert lines[-1] == "next: watch the video and look at the preview sheet"
    assert not [line for line in lines if "--" in line or "blur" in line], lines
    row = done["result"]["tracks"][0]
    assert row["face"] == 1 and row["rung"] == "face pixelated 3" and row["similarity"] is not None
