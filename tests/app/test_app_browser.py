"""The web app driven in a real headless Chromium (Debian's ``chromium`` via Playwright's client).

Skipped with the reason when Playwright's Python client or a Chromium binary is missing,
except under ``REENACT_REQUIRE_FIXTURES=1`` (CI), where that is a failure. Screenshots of
the page after a preview and after a run go to ``$REENACT_SCREENSHOTS`` (default: tmp_path).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_media import (
    REPO,
    SAMPLE,
    SAMPLE_PHOTO,
    audio_packets,
    count_frames,
    flat_clip,
    flat_photo,
    short_clip,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def _need(message: str) -> None:
    if os.environ.get("REENACT_REQUIRE_FIXTURES") == "1":
        pytest.fail(message + " (REENACT_REQUIRE_FIXTURES=1, so this is a failure)")
    pytest.skip(message)


def _chromium() -> str:
    for candidate in (os.environ.get("REENACT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    _need("no Chromium found: apt-get install chromium (or set REENACT_CHROMIUM)")
    raise AssertionError


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("Playwright's Python client is missing: pip install playwright")
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        yield b
        b.close()


class Server:
    def __init__(self, root: Path, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = root / "server_tmp"
        self.tmp.mkdir()
        self.allowed = root / "allowed"
        self.allowed.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reenact.app", "--port", str(self.port), "--device", "cpu",
             "--allow", str(self.allowed), *extra], env=env, cwd=root)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "api/health", timeout=2).read()
                return
            except OSError:
                assert self.proc.poll() is None, "the app exited at start-up"
                time.sleep(0.3)
        raise AssertionError("the app did not start")

    def workdir(self) -> Path:
        (found,) = self.tmp.glob("reenact-app-*")
        return found

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.stop()


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("REENACT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def message(page: object, contains: str, timeout: float = 120_000) -> str:
    loc = page.locator("#message")  # type: ignore[attr-defined]
    loc.filter(has_text=contains).wait_for(timeout=timeout)
    return loc.inner_text()


def failed_responses(page: object) -> list[str]:
    """Every response of ``page`` with a status of 400 or more (a favicon 404 among them)."""
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)  # type: ignore[attr-defined]
    return failed


def test_upload_preview_run_download(browser: object, server: Server, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)  # type: ignore[attr-defined]
    failed = failed_responses(page)
    response = page.goto(server.url)
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    # the untrained pack says what its faces are before anything runs
    page.locator("#pack-notice").filter(has_text="untrained").wait_for(timeout=30_000)
    assert "blurs each face's shape by default" in page.inner_text("#pack-notice")
    page.select_option("#method", "synthetic")  # the untrained pack's synthetic faces, asked for
    assert "its synthetic faces are blobs without eyes, nose or mouth" in page.inner_text("#pack-notice")
    page.set_input_files("#video-file", str(SAMPLE))
    page.locator("#video-info").filter(has_text="50 frames").wait_for(timeout=60_000)
    page.locator("#frame").fill("25")
    page.click("#preview-btn")
    page.locator("#preview-status").filter(has_text="face(s) found").wait_for(timeout=300_000)
    for img in ("#preview-before", "#preview-after"):
        assert page.eval_on_selector(img, "e => e.complete && e.naturalWidth") == 384
    assert "frame 25: 1 face(s) found" in page.inner_text("#preview-status")
    rows = page.locator("#preview-tracks tbody tr")
    assert rows.count() == 1
    cells = rows.first.locator("td").all_inner_texts()
    assert cells[0] == "1", "the table numbers faces like the picture (face 1)"
    assert cells[1] == "first synthetic identity" and cells[3] != "-", cells
    assert "blobs without eyes, nose or mouth" in page.inner_text("#preview-faces")
    page.screenshot(path=str(screenshots(tmp_path) / "app_after_preview.png"), full_page=True)

    page.click("#run-btn")
    page.locator("#progress-text").filter(has_text="done: 50 frames").wait_for(timeout=600_000)
    page.wait_for_function("document.getElementById('result-sheet').naturalWidth > 0", timeout=30_000)
    summary = page.locator("#result-summary p").all_inner_texts()
    assert summary[0].startswith("wrote astronaut_clip_deidentified.mp4: 50 frames, 1 face track, "), summary
    assert summary[2].startswith("faces: 50 blobs without eyes, nose or mouth"), summary
    assert [line for line in summary if "choose Audio: drop" in line], summary
    assert not [line for line in summary if "--" in line or "/" in line.split(":")[0]], summary
    assert page.locator("#result-tracks tbody tr td").first.inner_text() == "1"
    page.screenshot(path=str(screenshots(tmp_path) / "app_after_run.png"), full_page=True)
    assert failed == [], f"requests failed: {failed}"
    assert page.evaluate("fetch('/favicon.ico').then(r => r.status + ' ' + r.headers.get('content-type'))") == \
        "200 image/x-icon"
    with page.expect_download() as info:
        page.click("#dl-video")
    got = tmp_path / "downloaded.mp4"
    info.value.save_as(got)
    assert count_frames(got) == 50
    assert audio_packets(got) == audio_packets(SAMPLE), "the audio was not copied untouched"
    assert "\"frames\": 50" in page.inner_text("#result-report")
    workdir = server.workdir()
    assert server.stop() == 0
    assert not workdir.exists(), "uploads outlived the app"


def test_bad_inputs_each_show_their_message(browser: object, server: Server, tmp_path: Path) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server.url)
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 100)
    page.set_input_files("#video-file", str(notes))
    assert "notes.mp4" in message(page, "notes.mp4")

    page.set_input_files("#video-file", str(flat_clip(tmp_path / "grey.mp4")))
    page.locator("#video-info").filter(has_text="6 frames").wait_for()
    page.click("#preview-btn")
    message(page, "no faces found in frame 2", timeout=300_000)

    page.fill("#video-path", str(tmp_path / "grey.mp4"))
    page.click("#use-path")
    assert "outside the allowed folders" in message(page, "outside the allowed folders")
    page.fill("#video-path", "../grey.mp4")
    page.click("#use-path")
    message(page, "'../grey.mp4' is outside the allowed folders")

    short_clip(server.allowed / "clip.mp4")
    page.fill("#video-path", "clip.mp4")
    page.click("#use-path")
    page.locator("#video-info").filter(has_text="3 frames").wait_for()
    page.select_option("#mode", "reenact")
    page.click("#preview-btn")
    message(page, "reenact needs an identity photo")
    page.set_input_files("#identity-file", str(flat_photo(tmp_path / "sky.jpg")))
    page.locator("#identity-info").filter(has_text="sky.jpg").wait_for()
    page.click("#preview-btn")
    text = message(page, "face", timeout=300_000)
    assert "sky.jpg" in text and "Traceback" not in text, text
    page.set_input_files("#identity-file", str(SAMPLE_PHOTO))
    page.locator("#identity-info").filter(has_text="astronaut_identity.jpg").wait_for()
    page.click("#preview-btn")
    page.locator("#preview-status").filter(has_text="face(s) found").wait_for(timeout=300_000)


def test_upload_beyond_the_limit(browser: object, tmp_path: Path) -> None:
    server = Server(tmp_path, "--max-upload", "20K")
    try:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(server.url)
        page.set_input_files("#video-file", str(SAMPLE))
        text = message(page, "upload limit")
        assert "astronaut_clip.mp4 is larger than the upload limit of 20.0 KiB" in text
        assert not list(server.workdir().rglob("*.mp4"))
    finally:
        server.stop()


def test_two_tabs_queue_and_cancel_leaves_nothing(browser: object, server: Server) -> None:
    tabs = [browser.new_page() for _ in range(2)]  # type: ignore[attr-defined]
    for tab in tabs:
        tab.goto(server.url)
        tab.set_input_files("#video-file", str(SAMPLE))
        tab.locator("#video-info").filter(has_text="50 frames").wait_for(timeout=60_000)
    first, second = tabs
    first.click("#run-btn")
    second.click("#run-btn")
    second.locator("#progress-text").filter(has_text="queued: 1 run(s) ahead").wait_for()
    assert "queued" in message(second, "queued")
    first.locator("#progress-text").filter(has_text="running: ").wait_for(timeout=300_000)
    first.click("#cancel-btn")
    first.locator("#progress-text").filter(has_text="cancelled").wait_for(timeout=300_000)
    second.locator("#progress-text").filter(has_text="running").wait_for(timeout=300_000)
    second.click("#cancel-btn")
    second.locator("#progress-text").filter(has_text="cancelled").wait_for(timeout=300_000)
    runs = server.workdir() / "runs"
    leftovers = [p for p in runs.rglob("*") if p.is_file()]
    assert leftovers == [], f"cancelled runs left files: {leftovers}"


def test_method_selector_and_notice_follow_the_settings(browser: object, server: Server) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server.url)
    notice = page.locator("#pack-notice")
    notice.filter(has_text="untrained").wait_for(timeout=30_000)
    assert page.locator("#method option").all_inner_texts() == [
        "pack default", "synthetic faces", "blur", "pixelate", "solid fill"]
    page.select_option("#method", "pixelate")
    assert notice.is_hidden(), "a classic redaction is real: no untrained notice"
    page.select_option("#method", "synthetic")
    assert notice.is_visible()
    page.select_option("#mode", "reenact")
    assert page.locator("#method-row").is_hidden() and notice.is_visible()
    page.select_option("#pack", "full")
    assert notice.inner_text().startswith("The 'full' pack is not ready: 5 of 5 model files are missing")

    # the method reaches the run: a pixelate preview says pixelated, never blurred
    short_clip(server.allowed / "clip.mp4")
    page.select_option("#mode", "deidentify")
    page.select_option("#pack", "tiny")
    page.select_option("#method", "pixelate")
    page.fill("#video-path", "clip.mp4")
    page.click("#use-path")
    page.locator("#video-info").filter(has_text="3 frames").wait_for()
    page.click("#preview-btn")
    page.locator("#preview-status").filter(has_text="face(s) found").wait_for(timeout=300_000)
    cells = page.locator("#preview-tracks tbody tr td").all_inner_texts()
    assert cells[:2] == ["1", "face pixelated"], cells
    assert page.inner_text("#preview-faces") == "faces: 3 pixelated; per rung: face pixelated 3"


def test_errors_and_cancel_leave_no_stale_state_and_no_server_paths(browser: object, server: Server,
                                                                     tmp_path: Path) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server.url)
    page.set_input_files("#video-file", str(SAMPLE))
    page.locator("#video-info").filter(has_text="50 frames").wait_for(timeout=60_000)
    page.locator("#frame").fill("1")
    page.click("#preview-btn")
    page.locator("#preview-status").filter(has_text="face(s) found").wait_for(timeout=300_000)
    assert page.locator("#preview-images").is_visible()
    # a failed preview removes the old one; its message names the upload, not where the server keeps it
    page.select_option("#mode", "reenact")
    page.set_input_files("#identity-file", str(flat_photo(tmp_path / "sky.jpg")))
    page.locator("#identity-info").filter(has_text="sky.jpg").wait_for()
    page.click("#preview-btn")
    text = message(page, "no face found", timeout=300_000)
    assert text.startswith("identity photo: no face found in sky.jpg"), text
    assert "reenact-app-" not in text and str(server.tmp) not in text and "--" not in text, text
    assert page.locator("#preview-images").is_hidden() and page.locator("#preview-tracks").is_hidden()
    assert page.get_attribute("#preview-after", "src") is None
    # Cancel resets the progress bar and leaves no result
    page.select_option("#mode", "deidentify")
    page.click("#run-btn")
    page.locator("#progress-text").filter(has_text=re.compile(r"running: [1-9]")).wait_for(timeout=300_000)
    page.click("#cancel-btn")
    page.locator("#progress-text").filter(has_text="cancelled").wait_for(timeout=300_000)
    assert page.eval_on_selector("#progress", "e => e.value") == 0
    assert page.locator("#result").is_hidden()


def test_another_site_cannot_frame_the_page(browser: object, server: Server) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.set_content(f'<iframe id="f" src="{server.url}" width="600" height="400"></iframe>')
    page.wait_for_timeout(3000)
    framed = [f for f in page.frames if f != page.main_frame]
    assert framed, "the iframe was not created"
    # a refused frame never runs the app's page: no settings form inside it
    assert all(f.url != server.url or f.locator("#settings").count() == 0 for f in framed)
