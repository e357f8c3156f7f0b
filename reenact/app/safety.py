"""The app's safety rules: allowed folders, upload size, names, and path-valued settings.

A server path typed into the page is used only when it resolves (symlinks followed) to a
file inside one of the folders the user allowed with ``--allow``; everything else the app
reads or writes lives in its private temporary folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reenact.errors import ConfigError, InputError


class UploadTooLargeError(InputError):
    """An upload is larger than the app's ``--max-upload`` limit."""


class PathNotAllowedError(InputError):
    """A server path lies outside the folders allowed with ``--allow`` (or is missing)."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``"2G"``, ``"500M"``, ``"64k"`` or a plain number of bytes."""
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"size {text!r} is not a size; use e.g. 500M, 2G or a number of bytes")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def allowed_roots(folders: Iterable[str | Path]) -> tuple[Path, ...]:
    """The ``--allow`` folders, resolved; each must exist and be a folder."""
    roots = []
    for folder in folders:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise InputError(f"--allow {folder}: not a folder; give an existing folder")
        roots.append(path.resolve())
    return tuple(roots)


def resolve_allowed(text: str, roots: tuple[Path, ...], what: str = "path") -> Path:
    """The file ``text`` names, if it resolves to a file inside one of ``roots``.

    Relative paths are taken inside the first root. ``..`` and symlinks are resolved
    before the check, so neither can leave the allowed folders.
    """
    if not roots:
        raise PathNotAllowedError(
            f"{what} {text!r}: server paths are off; start the app with --allow FOLDER to use files in FOLDER"
        )
    if not text or "\x00" in text:
        raise PathNotAllowedError(f"{what} {text!r} is not a path")
    raw = Path(text).expanduser()
    candidate = raw if raw.is_absolute() else roots[0] / raw
    resolved = Path(os.path.realpath(candidate))
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise PathNotAllowedError(
            f"{what} {text!r} is outside the allowed folders ({', '.join(map(str, roots))}); "
            "choose a file inside them or start the app with another --allow"
        )
    if not resolved.is_file():
        raise PathNotAllowedError(f"{what} {text!r}: no such file in the allowed folders")
    return resolved


def safe_name(name: str, default: str) -> str:
    """A file name safe to create in the app's folders (no separators, no leading dots)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.replace("\\", "/")).name).lstrip(".")
    return base[:120] or default


#: settings whose value names a file the pipeline reads
PATH_SETTINGS = ("models.detector_model", "models.identity_model", "optimize.landmark_model.path")


def check_setting_paths(config_dict: dict[str, Any], roots: tuple[Path, ...]) -> dict[str, Any]:
    """Replace every file path among the settings with its allowed, resolved form.

    Checks :data:`PATH_SETTINGS`, ``faces: reference:IMAGE`` and any other string value
    that looks like a path, so the advanced box cannot make the server read outside the
    allowed folders. Returns the dotted overrides to apply.
    """
    fixed: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, str) and node:
            if prefix == "faces" and node.startswith("reference:"):
                path = resolve_allowed(node.split(":", 1)[1], roots, "reference photo (faces)")
                fixed[prefix] = f"reference:{path}"
            elif prefix in PATH_SETTINGS or "/" in node or "\\" in node or node.startswith("~"):
                fixed[prefix] = str(resolve_allowed(node, roots, f"setting {prefix}"))

    visit(config_dict, "")
    return fixed
