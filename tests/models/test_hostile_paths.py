"""Hostile names, paths and servers around the model cache (issue #17, findings 3, 5, 6)."""

from __future__ import annotations

import hashlib
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import reenact.packs  # noqa: F401 - registers the loaders
from reenact.errors import ConfigError, DownloadError, ModelError
from reenact.models import download, registry

VICTIM = b"export SECRET=1\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes | None]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        code, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        if body is None:  # an endless body
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[tuple[str, dict[str, tuple[int, dict[str, str], bytes | None]]]]:
    routes: dict[str, tuple[int, dict[str, str], bytes | None]] = {}
    handler = type("H", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim" / ".bashrc"
    path.parent.mkdir()
    path.write_bytes(VICTIM)
    return path


def _pack(folder: Path, name: str, source: str, file: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\ncomponents:\n  generator:\n    kind: stylegan2\n    source: {source}\n"
        f"    licence: MIT\n    file: '{file}'\n",
        encoding="utf-8",
    )


def test_pack_file_climbing_out_of_the_cache_is_refused(
    tmp_path: Path, victim: Path, server: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, routes = server
    routes["/g.pkl"] = (200, {}, b"evil")
    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path / "packs"))
    _pack(tmp_path / "packs", "evil", f"{url}/g.pkl", "../../victim/.bashrc")
    with pytest.raises(ConfigError, match="plain name inside the cache"):
        registry.pull("evil", progress=False)
    assert victim.read_bytes() == VICTIM


def test_cache_folder_linked_out_is_refused(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home).mkdir()
    (home / "models").symlink_to(victim.parent)
    monkeypatch.setenv("REENACT_HOME", str(home))
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path / "packs"))
    _pack(tmp_path / "packs", "evil", "https://example.invalid/g.pkl", ".bashrc")
    with pytest.raises(ModelError, match="outside"):
        registry.resolve("evil", "generator")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/b", "a.b", "", "a\nb"])
def test_pack_and_component_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        registry.get_pack(name)
    with pytest.raises(ConfigError, match="not allowed"):
        registry.get_component("tiny", name)


def test_reenact_packs_files_with_odd_names_are_not_packs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path))
    _pack(tmp_path, "good", "https://example.invalid/g.pkl", "g.safetensors")
    (tmp_path / "bad name.yaml").write_text("name: bad name\n", encoding="utf-8")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "good.yaml")
    assert registry.list_packs() == ["good", "link"]  # the link's own name check still applies
    with pytest.raises(ConfigError, match="not allowed"):
        registry.get_pack("bad name")


def test_planted_part_symlink_is_not_written_through(
    tmp_path: Path, victim: Path, server: tuple[str, dict]
) -> None:
    url, routes = server
    routes["/g.bin"] = (200, {}, b"payload")
    dest = tmp_path / "dl" / "g.bin"
    dest.parent.mkdir()
    (dest.parent / "g.bin.part").symlink_to(victim)
    digest = download.download(f"{url}/g.bin", dest, progress=False)
    assert victim.read_bytes() == VICTIM
    assert dest.read_bytes() == b"payload" and digest == hashlib.sha256(b"payload").hexdigest()
    assert not dest.is_symlink()


def test_manifest_written_atomically_past_a_planted_tmp(
    tmp_path: Path, victim: Path, server: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reenact.models.stylegan2 import save_generator, tiny_generator

    url, routes = server
    src = save_generator(tiny_generator(1, 32), tmp_path / "g.safetensors")
    routes["/g.safetensors"] = (200, {}, src.read_bytes())
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "downloads").mkdir()
    for planted in ("models/manifest.json.tmp", "hashes.json.tmp", "downloads/t-generator.safetensors.part"):
        (home / planted).symlink_to(victim)
    monkeypatch.setenv("REENACT_HOME", str(home))
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path / "packs"))
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "t.yaml").write_text(
        f"name: t\ncomponents:\n  generator:\n    kind: stylegan2\n    source: {url}/g.safetensors\n"
        "    licence: MIT\n    file: t.safetensors\n", encoding="utf-8")
    registry.pull("t", progress=False)
    assert victim.read_bytes() == VICTIM
    assert (home / "models" / "manifest.json").is_file() and not (home / "models" / "manifest.json").is_symlink()


def test_import_folder_does_not_copy_through_links_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY", encoding="utf-8")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "identity_model.json").symlink_to(secret)
    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelError, match="outside"):
        registry.import_file(folder, "full/identity_model")
    home = tmp_path / "home"
    assert not home.exists() or "PRIVATE KEY" not in "".join(
        p.read_text(errors="replace") for p in home.rglob("*") if p.is_file()
    )


# --- downloads -------------------------------------------------------------------------------


def test_endless_body_stops_at_the_cap(tmp_path: Path, server: tuple[str, dict]) -> None:
    url, routes = server
    routes["/endless"] = (200, {}, None)
    dest = tmp_path / "e.bin"
    with pytest.raises(DownloadError, match="more than the 1000000 bytes"):
        download.download(f"{url}/endless", dest, progress=False, max_bytes=1_000_000)
    assert not dest.exists() and not dest.with_name("e.bin.part").exists()


def test_body_longer_than_the_pack_size_is_refused(tmp_path: Path, server: tuple[str, dict]) -> None:
    url, routes = server
    routes["/big"] = (200, {}, b"x" * 5000)
    with pytest.raises(DownloadError, match="5000 bytes, more than the 100 expected"):
        download.download(f"{url}/big", tmp_path / "b.bin", progress=False, size=100)
    assert not (tmp_path / "b.bin.part").exists()


def test_part_longer_than_expected_is_discarded(tmp_path: Path, server: tuple[str, dict]) -> None:
    url, routes = server
    routes["/g.bin"] = (200, {}, b"good")
    (tmp_path / "g.bin.part").write_bytes(b"junk" * 100)
    assert download.download(f"{url}/g.bin", tmp_path / "g.bin", progress=False, size=4)
    assert (tmp_path / "g.bin").read_bytes() == b"good"


def test_redirect_to_another_host_is_refused(tmp_path: Path, server: tuple[str, dict]) -> None:
    url, routes = server
    port = url.rsplit(":", 1)[1]
    routes["/r"] = (302, {"Location": f"http://localhost:{port}/g.bin"}, b"")
    routes["/g.bin"] = (200, {}, b"good")
    with pytest.raises(DownloadError, match="another host"):
        download.download(f"{url}/r", tmp_path / "g.bin", progress=False)
    assert not (tmp_path / "g.bin").exists()


def test_redirect_on_the_same_origin_is_followed_and_logged(
    tmp_path: Path, server: tuple[str, dict], caplog: pytest.LogCaptureFixture
) -> None:
    url, routes = server
    routes["/r"] = (302, {"Location": "/g.bin"}, b"")
    routes["/g.bin"] = (200, {}, b"good")
    with caplog.at_level(logging.INFO, logger="reenact.models.download"):
        download.download(f"{url}/r", tmp_path / "g.bin", progress=False)
    assert f"final URL {url}/g.bin" in caplog.text and "trusting this first download" in caplog.text


def test_redirect_rules() -> None:
    with pytest.raises(DownloadError, match="downgrade"):
        download.check_redirect("https://cdn.example/x", "http://cdn.example/y")
    with pytest.raises(DownloadError, match="another host"):
        download.check_redirect("https://cdn.example/x", "https://evil.example/y")
    with pytest.raises(DownloadError, match="scheme"):
        download.check_redirect("https://cdn.example/x", "file:///etc/passwd")
    download.check_redirect("https://cdn.example/x", "https://cdn.example/y")
    download.check_redirect("https://cdn.example/x", "https://mirror.example/y", ("mirror.example",))
