"""Bad invocations of every command: the documented exit status, one error line, no traceback."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from exit_table import CASES, DOC, ROOT, make_scratch, measure, render


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, fixtures: Path) -> Path:
    return make_scratch(tmp_path_factory.mktemp("cli") / "scratch", fixtures / "videos" / "liveportrait_d0.mp4",
                        fixtures / "images" / "face_recognition" / "biden.jpg")


def test_every_bad_invocation_exits_as_documented(scratch: Path) -> None:
    assert len(CASES) >= 40
    rows = measure(scratch)
    wrong = [(case.command, status, line) for case, status, line in rows
             if status != case.status or case.says not in line or "Traceback" in line]
    assert not wrong, wrong
    assert {case.command.split()[0] if case.command.split()[0] != "reenact" or len(case.command.split()) < 2
            or case.command.split()[1] not in ("eval", "models", "grid", "interpolate", "app")
            else case.command.split()[1] for case in CASES} == {
        "reenact", "deidentify", "eval", "models", "grid", "interpolate", "app", "reenact-train"}
    assert DOC.read_text(encoding="utf-8") == render(rows), "run `python tests/cli/exit_table.py`"
    assert not list(scratch.glob("x.*")) and not list(scratch.glob("grid*")), "a refusal wrote a file"


@pytest.mark.parametrize("argv", [
    ["-m", "reenact.cli", "text.mp4", "--identity", "face.jpg"],
    ["-c", "from reenact.cli import deidentify_main as m; raise SystemExit(m())", "clip.mp4", "--identity", "x"],
    ["-m", "reenact.cli", "eval", "clip.mp4", "text.mp4"],
    ["-m", "reenact.cli", "models", "verify"],
    ["-m", "reenact.cli", "grid", "--id-dir", "photos", "--attr-dir", "photos", "-o", "grid.mp4"],
    ["-m", "reenact.cli", "interpolate", "--identity", "face.jpg", "--attr", "face.jpg", "--attr", "face.jpg",
     "-o", "x.mp4"],
    ["-m", "reenact.cli", "app", "--port", "x"],
    ["-c", "from reenact.cli import train_script; train_script()", "fit", "--no-such-flag"],
    ["-m", "reenact.app", "--port", "x"],
])
def test_each_command_refuses_in_a_process_without_traceback_and_fast(argv: list[str], scratch: Path) -> None:
    """A real process per command: exit 2, no traceback, and no torch import on the way (fast)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], cwd=scratch, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()
    assert time.perf_counter() - started < 5, "a refusal took long: did it import torch?"


def test_refusing_a_text_file_does_not_import_torch(scratch: Path) -> None:
    code = ("import sys\nfrom reenact.cli import main\n"
            "assert main(['text.mp4', '--identity', 'face.jpg']) == 2\n"
            "assert main(['grid', '--id-dir', 'photos', '--attr-dir', 'photos', '-o', 'g.mp4']) == 2\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=scratch, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "False"


def test_image_tool_suffixes_match_the_library() -> None:
    from reenact.cli.image_tools import GRID_SUFFIXES, INTERPOLATE_SUFFIXES
    from reenact.image_tools import FRAMES_OUTPUT_FORMATS, IMAGE_OUTPUT_FORMATS

    assert set(GRID_SUFFIXES) == set(IMAGE_OUTPUT_FORMATS)
    assert set(INTERPOLATE_SUFFIXES) == set(FRAMES_OUTPUT_FORMATS)


def test_deidentify_preview_without_audit_is_refused_before_any_work(scratch: Path) -> None:
    """The preview shows original faces: refused in one line before torch loads, nothing written."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", "from reenact.cli import deidentify_main as m; raise SystemExit(m())",
                             "clip.mp4", "-o", "x.mp4", "--preview"], cwd=scratch, capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --preview shows the original faces, so deidentify writes it only with --audit (a private file, "
        "mode 0600): add --audit, or leave out --preview"]
    assert result.stdout == "" and not list(scratch.glob("x.*"))
    assert time.perf_counter() - started < 5, "refused after work started (torch was imported?)"


# --- issue #29: long names, model paths in the report, audit files, a broken pack ---------------

SAMPLE_CLIP = ROOT / "samples" / "astronaut_clip.mp4"


def test_long_default_output_name_is_written_with_its_sidecars(tmp_path: Path, fixtures: Path) -> None:
    """A 215-byte stem: the default output is 232 bytes, its report 244, the report's temporary
    name used to pass 255 bytes after the video was written. Model paths given as settings are
    named, not shown with their folders, in the report and config (the audit file keeps them)."""
    from reenact.cli import deidentify_main

    clip = tmp_path / ("é" * 100 + "s" * 15 + ".mp4")  # 215 bytes of stem, 115 characters
    clip.write_bytes(SAMPLE_CLIP.read_bytes())
    landmarks = fixtures / "models" / "landmarks_pfld68" / "pfld.onnx"
    assert deidentify_main([str(clip), "--method", "blur", "--quiet", "--audit",
                            "--set", f"optimize.landmark_model.path={landmarks}"]) == 0
    out = clip.with_name(f"{clip.stem}_deidentified.mp4")
    assert len(out.name.encode()) == 232 and out.is_file()
    report = out.with_name(out.name + ".report.json")
    config = out.with_name(out.name + ".config.yaml")
    audit = out.with_name(out.name + ".audit.json")
    assert report.is_file() and config.is_file() and audit.is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"
    for text in (report.read_text(), config.read_text()):
        assert str(landmarks.parent) not in text and "pfld.onnx" in text
    assert str(landmarks) in audit.read_text()


def test_public_config_names_every_model_file_without_its_folder() -> None:
    from reenact.config import replace
    from reenact.pipeline.report import public_config
    from reenact.pipeline.settings import PipelineConfig

    config = replace(PipelineConfig(), {"models.detector_model": "/secret/dir/det.onnx",
                                        "models.identity_model": "/secret/dir/id.onnx",
                                        "optimize.landmark_model.path": "/secret/dir/lm.onnx",
                                        "faces": "reference:/secret/dir/me.jpg"})
    data = public_config(config)
    assert "/secret" not in repr(data)
    assert (data["models"]["detector_model"], data["models"]["identity_model"],
            data["optimize"]["landmark_model"]["path"], data["faces"]) == (
        "det.onnx", "id.onnx", "lm.onnx", "reference:me.jpg")


def test_an_old_audit_file_blocks_only_a_run_that_writes_one(scratch: Path) -> None:
    from exit_table import run_case

    audit = scratch / "audited.mp4.audit.json"
    audit.write_text("{}")
    try:
        assert run_case(["deidentify", "clip.mp4", "-o", "audited.mp4", "--dry-run"], scratch)[0] == 0
        status, line = run_case(["deidentify", "clip.mp4", "-o", "audited.mp4", "--audit", "--dry-run"], scratch)
        assert status == 2 and "audited.mp4.audit.json: already exists" in line, line
    finally:
        audit.unlink()
    assert not (scratch / "audited.mp4").exists()


def test_models_list_refuses_one_broken_pack_and_lists_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reenact.cli import main

    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "tiny.yaml").write_text((ROOT / "reenact" / "packs" / "tiny.yaml").read_text())
    (packs / "nolicence.yaml").write_text(
        "name: nolicence\ncomponents:\n  detector:\n    kind: onnx\n    source: import:x\n    file: n/d.onnx\n")
    monkeypatch.setenv("REENACT_PACKS", str(packs))
    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "home"))
    assert main(["models", "list"]) == 2
    out, err = capsys.readouterr()
    assert "tiny: " in out and "detector" in out and "nolicence" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "nolicence" in lines[0] and "missing required key(s) licence" in lines[0], err
    assert "__init__" not in err and "Traceback" not in err


# --- issue #29 item 6: signals in folder runs, SIGKILL leftovers -------------------------------

DEIDENTIFY = "from reenact.cli import deidentify_script as m; m()"


def _wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*partial*")) if folder.is_dir() else []


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.mp4") if not p.name.startswith(".")) if folder.is_dir() else []


def test_sigterm_to_a_folder_run_stops_every_worker_and_finishes_no_output(tmp_path: Path, fixtures: Path) -> None:
    """SIGTERM to the parent alone (as a service manager's `kill PID` does): both workers abort
    their video within a chunk, no temporary file stays, no output is renamed into place after
    the signal, one line, exit 143 (before the fix both went on and finished their videos)."""
    clips = tmp_path / "in"
    clips.mkdir()
    for name in ("a", "b"):  # 78 frames each: a few seconds of work per worker
        shutil.copy(fixtures / "videos" / "liveportrait_d0.mp4", clips / f"{name}.mp4")
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-c", DEIDENTIFY, str(clips), "-o", str(out), "--method", "blur",
                            "--workers", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        both_writing = _wait_for(lambda: len(_partials(out)) == 2, 60)
        finished = _outputs(out)
        run.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert both_writing, "the two workers never wrote at once"
    assert run.returncode == 143, stderr
    assert stderr.splitlines() == ["stopped by SIGTERM: nothing partial was written"], stderr
    assert time.monotonic() - signalled < 20, "the workers went on after the signal"
    assert _partials(out) == [], "a temporary file was left"
    assert _outputs(out) == finished == [], "an output was finished after the signal"


def test_a_killed_runs_leftover_is_removed_by_the_next_run_and_never_taken_for_a_video(
    tmp_path: Path, fixtures: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`kill -9` leaves `.o.partial-XXXXXXXX.mp4`: a folder run over that folder reports it
    ignored (not a failed video); the next run on the same output removes it and says so."""
    from reenact.cli import deidentify_main

    clip = tmp_path / "clip.mp4"
    shutil.copy(fixtures / "videos" / "liveportrait_d0.mp4", clip)
    out = tmp_path / "out"
    out.mkdir()
    other = out / ".other.partial-0123abcd.mp4"  # another output's leftover: never touched
    other.write_bytes(b"x")
    run = subprocess.Popen([sys.executable, "-c", DEIDENTIFY, str(clip), "-o", str(out / "o.mp4"), "--method", "blur",
                            "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        writing = _wait_for(lambda: len(_partials(out)) == 2, 60)
    finally:
        run.kill()  # SIGKILL: no clean-up runs
        run.wait(timeout=30)
    assert writing, "the run never started writing"
    (leftover,) = [p for p in _partials(out) if p != other]
    assert leftover.name.startswith(".o.partial-") and not (out / "o.mp4").exists()

    plan_out = io.StringIO()
    with contextlib.redirect_stdout(plan_out):
        assert deidentify_main([str(out), "-o", str(tmp_path / "again"), "--method", "blur", "--dry-run"]) == 0
    plan = json.loads(plan_out.getvalue())
    assert plan["jobs"] == [] and plan["failed"] == []
    assert sorted(Path(p).name for p, _ in plan["ignored"]) == sorted([leftover.name, other.name])
    assert all(why == "a temporary file left by an interrupted run" for _, why in plan["ignored"])

    with caplog.at_level(logging.WARNING, logger="reenact"):
        assert deidentify_main([str(clip), "-o", str(out / "o.mp4"), "--method", "blur", "--quiet"]) == 0
    said = [r.getMessage() for r in caplog.records if "temporary file" in r.getMessage()]
    assert said == [f"removed 1 temporary file left by an interrupted run (killed before it could clean up): "
                    f"{leftover.name}"], said
    assert not leftover.exists() and other.exists() and (out / "o.mp4").is_file()


def test_leftover_removal_spares_a_live_writers_file_and_other_names(tmp_path: Path) -> None:
    from reenact.io import VideoWriter, probe
    from reenact.io.writer import remove_leftovers

    long = "é" * 117  # 234 bytes: the writer cuts the name in its temporary name
    dead = [".o.partial-0123abcd.mp4", ".p.partial-89abcdef.mp4"]
    kept = [".o.partial-0123abcd.mkv", ".oo.partial-0123abcd.mp4", ".o.partial-zz.mp4", "o.partial-0123abcd.mp4"]
    for name in dead + kept:
        (tmp_path / name).write_bytes(b"x")
    with VideoWriter(tmp_path / f"{long}.mp4", probe(SAMPLE_CLIP)) as cut:
        cut_name = cut.temp.name
        cut._abort()
    (tmp_path / cut_name).write_bytes(b"x")  # as a killed writer of the long name leaves it
    dst = tmp_path / "o.mp4"
    with VideoWriter(dst, probe(SAMPLE_CLIP)) as writer:
        assert writer.temp.exists()
        removed = remove_leftovers([dst, tmp_path / "p.mp4", tmp_path / f"{long}.mp4"])
        assert sorted(p.name for p in removed) == sorted([*dead, cut_name]) and writer.temp.exists()
        writer._abort()
    assert not writer.temp.exists() and not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


# --- issue #29 item 7: deadlines (a dead Ray address, a trickling download server) ------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_auto_with_a_dead_ray_address_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray retried a dead RAY_ADDRESS silently for minutes; now one line names it and the fix."""
    pytest.importorskip("ray")
    from reenact.cli import deidentify_main

    clips = tmp_path / "in"
    clips.mkdir()
    shutil.copy(SAMPLE_CLIP, clips / "a.mp4")
    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    started = time.monotonic()
    assert deidentify_main([str(clips), "-o", str(tmp_path / "out"), "--method", "blur", "--ray", "auto",
                            "--quiet"]) == 2
    assert time.monotonic() - started < 30
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --ray auto: no Ray cluster answers at {address} "
                                                   "(taken from the RAY_ADDRESS environment variable"), lines
    assert "unset RAY_ADDRESS" in lines[0] and "--ray local" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class _Trickle:
    """A loopback HTTP server that announces ``size`` bytes and sends one every ``every`` seconds."""

    def __init__(self, size: int, every: float) -> None:
        self.stop = threading.Event()
        trickle = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                for _ in range(size):
                    if trickle.stop.wait(every):
                        return
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/d.onnx"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Trickle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _trickle_pack(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "trickle.yaml").write_text(
        f"name: trickle\ncomponents:\n  detector:\n    kind: onnx\n    source: {url}\n    licence: test\n"
        "    file: trickle/d.onnx\n    size: 100000\n")
    home = tmp_path / "home"
    monkeypatch.setenv("REENACT_PACKS", str(packs))
    monkeypatch.setenv("REENACT_HOME", str(home))
    return home / "downloads" / "trickle-detector.onnx.part"


@pytest.mark.parametrize("rule", ["stall", "deadline"])
def test_a_trickling_download_is_stopped_and_its_part_kept(
    rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One byte at a time never trips the per-read timeout; the stall rule and the overall
    deadline end it, keep the .part and say so in one line."""
    from reenact.cli import main
    from reenact.models import download

    if rule == "stall":
        monkeypatch.setattr(download, "STALL_SECONDS", 1.0)
    else:
        monkeypatch.setenv("REENACT_DOWNLOAD_DEADLINE", "1")
    with _Trickle(100_000, 0.02) as server:
        part = _trickle_pack(tmp_path, server.url, monkeypatch)
        started = time.monotonic()
        status = main(["models", "--quiet", "pull", "trickle"])
        took = time.monotonic() - started
    assert status != 0 and took < 15
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"download of {server.url} stopped after" in lines[0], lines
    assert ("bytes in 1 s" if rule == "stall" else "longer than the 1 s allowed") in lines[0]
    assert "the part is kept in trickle-detector.onnx.part: run the same command again to resume" in lines[0]
    assert part.is_file() and 0 < part.stat().st_size < 100_000


def test_sigterm_during_a_download_says_the_part_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _Trickle(100_000, 0.02) as server:
        part = _trickle_pack(tmp_path, server.url, monkeypatch)
        run = subprocess.Popen([sys.executable, "-m", "reenact.cli", "models", "--quiet", "pull", "trickle"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            started = _wait_for(part.is_file, 60)
            time.sleep(0.5)  # some bytes in (they sit in the file's buffer until the stop flushes them)
            run.send_signal(signal.SIGTERM)
            _, stderr = run.communicate(timeout=30)
        finally:
            run.kill()
    assert started, f"the download never started: {run.stderr}"
    assert run.returncode == 143, stderr
    assert stderr.splitlines() == [
        "stopped by SIGTERM: nothing partial was written, except a download in progress: its .part file stays in "
        "the cache's downloads/ folder and the same command resumes it"], stderr
    assert part.is_file() and part.stat().st_size > 0


# --- issue #29 item 5: --dry-run refuses what the run refuses ---------------------------------

@pytest.mark.parametrize("flags", [
    ["--identity-model", "afile"],
    ["--identity-model", "text.jpg", "--identity-mean", "127.5", "--identity-std", "127.5"],
    ["--detector-model", "missing.onnx"],
    ["--detector-model", "text.jpg"],
    ["--pack", "full"],
    ["--faces-backend", "insightface"],
], ids=["identity-model-without-normalisation", "identity-model-garbage", "detector-model-missing",
        "detector-model-garbage", "pack-full-without-files", "insightface-without-packs"])
def test_dry_run_refuses_what_the_run_refuses(flags: list[str], scratch: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One check (reenact.cli.video.check_model_files) for both: same status, same line, before
    any video work (the run writes nothing)."""
    from exit_table import run_case

    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "home"))  # no pulled packs here
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "insightface"))  # nor insightface's
    words = ["deidentify", "clip.mp4", "-o", "x.mp4", "--method", "blur", *flags]
    dry = run_case([*words, "--dry-run"], scratch)
    run = run_case(words, scratch)
    assert dry == run and dry[0] in (1, 2) and dry[1].startswith("error: "), (dry, run)
    assert not list(scratch.glob("x.*")) and not list(scratch.glob(".x.*"))


@pytest.mark.parametrize(("name", "value", "says"), [
    ("REENACT_MAX_DOWNLOAD", "4GB", "REENACT_MAX_DOWNLOAD must be a whole number of bytes above 0, got '4GB'"),
    ("REENACT_DOWNLOAD_DEADLINE", "soon", "REENACT_DOWNLOAD_DEADLINE must be a number of seconds above 0"),
])
def test_a_bad_download_setting_is_named_and_nothing_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str,
    says: str,
) -> None:
    """A mistyped environment setting stops the pull with one line naming it, before any file appears."""
    from reenact.cli import main

    monkeypatch.setenv(name, value)
    with _Trickle(100_000, 0.02) as server:
        part = _trickle_pack(tmp_path, server.url, monkeypatch)
        status = main(["models", "--quiet", "pull", "trickle"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status != 0 and len(lines) == 1 and says in lines[0], lines
    assert not part.exists() and not part.with_suffix("").exists()
