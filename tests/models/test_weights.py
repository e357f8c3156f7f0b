"""Weight management: pack registry, checked/resumable downloads, pull/import/verify."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from reenact.errors import (
    ChecksumError,
    ConfigError,
    DownloadError,
    ModelError,
    WeightsMissingError,
)
from reenact.models import download
from reenact.models.stylegan2 import load_generator, save_generator, tiny_generator
from reenact.packs import registry

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class _Server:
    url: str
    files: dict[str, bytes]
    cut_once: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(state: _Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if rng and not self.path.startswith("/norange"):
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if self.path in state.cut_once:
                state.cut_once.discard(self.path)
                self.wfile.write(body[start : start + (len(body) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body[start:])

    return Handler


@pytest.fixture()
def server() -> Iterator[_Server]:
    state = _Server(url="", files={})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("REENACT_HOME", str(folder))
    return folder


def test_download_good_file(server: _Server, tmp_path: Path) -> None:
    server.files["/good.bin"] = PAYLOAD
    dest = tmp_path / "cache" / "good.bin"
    assert download.download(f"{server.url}/good.bin", dest, sha256=SHA, progress=False) == SHA
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["good.bin"]


def test_download_unknown_hash_is_recorded_and_said(
    server: _Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.files["/good.bin"] = PAYLOAD
    with caplog.at_level(logging.WARNING):
        digest = download.download(f"{server.url}/good.bin", tmp_path / "g.bin", progress=False)
    assert digest == SHA
    assert "no sha256 was known" in caplog.text and SHA in caplog.text


def test_download_corrupted_file_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    server.files["/bad.bin"] = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1])
    dest = tmp_path / "cache" / "bad.bin"
    with pytest.raises(ChecksumError, match=SHA):
        download.download(f"{server.url}/bad.bin", dest, sha256=SHA, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_download_interrupted_then_resumed(server: _Server, tmp_path: Path) -> None:
    server.files["/big.bin"] = PAYLOAD
    server.cut_once.add("/big.bin")
    dest = tmp_path / "cache" / "big.bin"
    with pytest.raises(DownloadError, match="cut off.*run the same command again"):
        download.download(f"{server.url}/big.bin", dest, sha256=SHA, progress=False)
    assert not dest.exists()
    part = dest.with_name("big.bin.part")
    assert 0 < part.stat().st_size < len(PAYLOAD)
    have = part.stat().st_size
    assert download.download(f"{server.url}/big.bin", dest, sha256=SHA, progress=False) == SHA
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/big.bin", f"bytes={have}-")  # really resumed


def test_download_server_without_range_restarts(server: _Server, tmp_path: Path) -> None:
    server.files["/norange.bin"] = PAYLOAD
    dest = tmp_path / "norange.bin"
    dest.with_name("norange.bin.part").write_bytes(b"stale partial content")
    assert download.download(f"{server.url}/norange.bin", dest, sha256=SHA, progress=False) == SHA
    assert dest.read_bytes() == PAYLOAD


def test_download_errors(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        download.download(f"{server.url}/missing.bin", tmp_path / "m.bin", progress=False)
    with pytest.raises(DownloadError, match="only http"):
        download.download("ftp://example.com/x", tmp_path / "x", progress=False)
    assert not (tmp_path / "m.bin").exists()


def test_read_only_cache_dir(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/good.bin"] = PAYLOAD
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DownloadError, match="not writable.*REENACT_HOME"):
        download.download(f"{server.url}/good.bin", blocker / "models" / "g.bin", progress=False)
    monkeypatch.setenv("REENACT_HOME", str(blocker))
    with pytest.raises(ModelError, match="not writable"):
        registry.import_file(_tiny_file(tmp_path), "full/identity_model")


def test_read_only_cache_dir_permissions(server: _Server, tmp_path: Path) -> None:
    server.files["/good.bin"] = PAYLOAD
    # sysfs refuses new files and folders even to root (CI runs as root): root-proof
    for dest in (Path("/sys") / "g.bin", Path("/sys") / "reenact-cache" / "g.bin"):
        with pytest.raises(DownloadError, match="not writable"):
            download.download(f"{server.url}/good.bin", dest, progress=False)
        assert not dest.exists() and not dest.parent.joinpath(".write-test-").exists()
    assert not [p for p in Path("/sys").iterdir() if p.name.startswith((".write-test-", "g.bin", "reenact"))]
    if os.geteuid() != 0:  # a read-only folder stops everyone else too
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(DownloadError, match="not writable"):
                download.download(f"{server.url}/good.bin", ro / "g.bin", progress=False)
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(0o755)


# --- packs ----------------------------------------------------------------------------------


def test_shipped_packs_parse_and_describe_their_models() -> None:
    assert {"full", "tiny"} <= set(registry.list_packs())
    full = registry.get_pack("full")
    assert {"generator", "detector", "identity", "identity_model"} <= set(full.components)
    gen = full.components["generator"]
    assert gen.kind == "stylegan2" and gen.source_format == "nvlabs-pkl" and gen.licence
    assert gen.architecture and gen.architecture["img_resolution"] == 256
    ident = full.components["identity"]
    assert ident.scheme == "insightface" and ident.normalisation is not None
    assert ident.input_size == 112 and ident.template == "arcface"
    tiny = registry.get_pack("tiny")
    for comp in tiny.components.values():
        assert comp.scheme in ("builtin", "package", "trained")  # nothing to download


def test_tiny_pack_models_are_present_and_verified() -> None:
    results = {r.component: r for r in registry.verify("tiny")}
    for name in ("generator", "detector", "identity", "landmarks"):
        assert results[name].ok, results[name].message


def test_full_pack_points_at_insightface(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "if"))
    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsMissingError, match=r"insightface downloads itself"):
        registry.resolve("full", "detector")
    model = tmp_path / "if" / "models" / "buffalo_l" / "w600k_r50.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"x")
    assert registry.resolve("full", "identity") == model
    with pytest.raises(WeightsMissingError, match=r"`reenact models pull full`"):
        registry.resolve("full", "generator")
    with pytest.raises(WeightsMissingError, match="reenact-train"):
        registry.resolve("full", "identity_model")
    # trained components: the path training exports into, even before it exists
    assert registry.component_path("full", "identity_model") == tmp_path / "home" / "models" / "full-identity-model"
    with pytest.raises(WeightsMissingError, match="reenact models pull full"):
        registry.component_path("full", "generator")


def test_import_identity_model_folder(home: Path, tmp_path: Path) -> None:
    from reenact import packs
    from reenact.models import mapper

    G, enc, mp = packs.tiny_models(id_dim=128)
    config = mapper.IdentityModelConfig(attribute_encoder=enc.config, mapper=mp.config, image_size=64, num_ws=G.num_ws)
    folder = mapper.save_identity_model(enc, mp, config, tmp_path / "export")
    path = registry.import_file(folder, "full/identity_model")
    assert path == registry.component_path("full", "identity_model") and path.is_dir()
    (result,) = [r for r in registry.verify("full") if r.component == "identity_model"]
    assert result.ok, result.message
    (path / "mapper.safetensors").write_bytes(b"broken")
    (result,) = [r for r in registry.verify("full") if r.component == "identity_model"]
    assert not result.ok and "sha256" in result.message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "identity_model.json").write_text("{}")
    with pytest.raises(ModelError):
        registry.import_file(broken, "full/identity_model")


def _write_pack(folder: Path, url: str, sha: str | None = None, resolution: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.yaml").write_text(
        f"""name: test
description: a pack served from 127.0.0.1
components:
  generator:
    kind: stylegan2
    source: {url}
    source_format: reenact
    sha256: {sha or 'null'}
    licence: MIT
    file: test-generator.safetensors
    architecture: {{z_dim: 64, w_dim: 64, img_resolution: {resolution}}}
""",
        encoding="utf-8",
    )


def _tiny_file(folder: Path, seed: int = 5, resolution: int = 32) -> Path:
    return save_generator(tiny_generator(seed, resolution), folder / f"tiny{seed}_{resolution}.safetensors")


def test_pull_verify_and_load(server: _Server, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _tiny_file(tmp_path)
    server.files["/g.safetensors"] = src.read_bytes()
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path / "packs"))
    _write_pack(tmp_path / "packs", f"{server.url}/g.safetensors")
    with pytest.raises(WeightsMissingError, match="reenact models pull test"):
        registry.resolve("test", "generator")
    paths = registry.pull("test", progress=False)
    assert paths["generator"] == home / "models" / "test-generator.safetensors"
    assert (home / "hashes.json").read_text().count(hashlib.sha256(src.read_bytes()).hexdigest()) == 1
    assert not any((home / "downloads").iterdir())  # the raw download is gone after conversion
    G = load_generator(registry.resolve("test", "generator"))
    z = torch.randn([1, 64])
    with torch.no_grad():
        assert torch.equal(G(z), tiny_generator(5, 32)(z))
    assert all(r.ok for r in registry.verify("test"))
    n = len(server.requests)
    registry.pull("test", progress=False)  # already there: no new request
    assert len(server.requests) == n

    # A cached file that changed on disk fails verification.
    cached = paths["generator"]
    assert cached is not None
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF
    cached.write_bytes(bytes(data))
    (result,) = registry.verify("test")
    assert not result.ok and "sha256" in result.message

    # The hash recorded on the first download protects later downloads.
    cached.unlink()
    server.files["/g.safetensors"] = _tiny_file(tmp_path, seed=6).read_bytes()
    with pytest.raises(ChecksumError):
        registry.pull("test", progress=False)
    assert not cached.exists()


def test_import_checks_architecture(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path / "packs"))
    _write_pack(tmp_path / "packs", "https://example.invalid/g.safetensors")
    with pytest.raises(ModelError, match="img_resolution is 64, the pack needs 32"):
        registry.import_file(_tiny_file(tmp_path, resolution=64), "test/generator")
    assert not (home / "models" / "test-generator.safetensors").exists()
    path = registry.import_file(_tiny_file(tmp_path), "test/generator")
    assert path.is_file() and all(r.ok for r in registry.verify("test"))
    with pytest.raises(ConfigError, match="no component 'nope'"):
        registry.import_file(_tiny_file(tmp_path), "test/nope")


def test_bad_pack_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path))
    (tmp_path / "a.yaml").write_text(
        "name: a\ndescription: x\ncomponents:\n  g: {kind: stylegan2, licence: MIT, colour: red}\n"
    )
    with pytest.raises(ConfigError, match="colour"):
        registry.get_pack("a")
    (tmp_path / "b.yaml").write_text(
        "name: b\ndescription: x\ncomponents:\n  g: {kind: stylegan2, licence: MIT, sha256: abc}\n"
    )
    with pytest.raises(ConfigError, match="64 hex"):
        registry.get_pack("b")
    with pytest.raises(ConfigError, match="unknown model pack 'zzz'"):
        registry.get_pack("zzz")
    (tmp_path / "c.yaml").write_text("name: c\ncomponents: {g: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml is not valid YAML"):
        registry.get_pack("c")
    # a safe loader (libyaml's where PyYAML has it): a Python tag is refused, never run
    marker = tmp_path / "ran"
    (tmp_path / "d.yaml").write_text(
        f"name: d\ncomponents: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(ConfigError, match="d.yaml is not valid YAML"):
        registry.get_pack("d")
    assert not marker.exists()


def test_cli_models_commands(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reenact.cli import main

    assert main(["models", "verify", "tiny", "--json"]) == 0
    rows = {r["component"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["detector"]["ok"] and rows["generator"]["ok"]
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path / "packs"))
    _write_pack(tmp_path / "packs", "https://example.invalid/g.safetensors")
    assert main(["models", "verify", "test"]) == 1
    assert "reenact models pull test" in capsys.readouterr().out
    assert main(["models", "import", "test/generator", str(_tiny_file(tmp_path))]) == 0
    assert main(["models", "verify", "test"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "test", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["components"][0]["path"].endswith("test-generator.safetensors")
    assert main(["models", "import", "test/generator", str(tmp_path / "nope.pkl")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_packs_are_built_from_their_file_not_their_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from reenact.packs import PackSettings, load_pack

    data = yaml.safe_load((Path(registry.__file__).parent.parent / "packs" / "tiny.yaml").read_text())
    data["name"] = "mini"
    data["components"]["generator"]["output_size"] = 32
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("REENACT_PACKS", str(tmp_path))
    pack = load_pack(PackSettings(pack="mini"))
    assert pack.name == "mini" and pack.generator.img_resolution == 32 and not pack.trained
    assert pack.attribute_encoder is not None and pack.attribute_encoder.config.input_size == 32
    with pytest.raises(ConfigError, match="unknown model pack 'tiny'.*known packs: mini"):
        load_pack(PackSettings(pack="tiny"))


def test_registry_without_loaders_says_how_to_register(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_LOADERS", {})
    results = {r.component: r for r in registry.verify("tiny")}
    assert not results["detector"].ok and "import reenact.packs" in results["detector"].message
