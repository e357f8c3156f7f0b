"""Atomic file writes: a private temporary file beside the destination, renamed into place.

Every file the project writes for a user (outputs, sidecars, cache entries, checkpoints)
goes through :func:`atomic_path`: the temporary file is created with ``O_EXCL`` (so a
planted file or symlink is never written through), and it is removed when the block
raises, so nothing partial is ever left under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Longest file name (bytes) most file systems accept (ext4, xfs, btrfs, tmpfs: 255).
NAME_MAX = 255


def temp_prefix(name: str, extra: int) -> str:
    """``.NAME.`` for a temporary name beside ``NAME`` that gets ``extra`` more bytes, with
    ``NAME`` cut short (at a character boundary, marked ``~``) when the whole would pass
    :data:`NAME_MAX` bytes: a long output name never makes its temporary name fail."""
    room = NAME_MAX - extra - 2
    raw = os.fsencode(name)
    if len(raw) <= room:
        return f".{name}."
    cut = name
    while len(os.fsencode(cut)) > room - 1:
        cut = cut[:-1]
    return f".{cut}~."


@contextlib.contextmanager
def atomic_path(dest: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``dest``; on a clean exit it replaces ``dest``.

    The temporary name is hidden (``.NAME.XXXX.partial``, ``NAME`` shortened when the whole
    would pass :data:`NAME_MAX` bytes) and unpredictable; the file exists
    (empty) when the block starts, so writers may open it for writing or replace it.
    """
    dest = Path(dest)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=temp_prefix(dest.name, 8 + len(".partial")),
                                suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(dest: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``dest`` atomically (see :func:`atomic_path`)."""
    with atomic_path(dest, mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | Path, text: str, mode: int = 0o644) -> None:
    """Write UTF-8 ``text`` to ``dest`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(dest, text.encode("utf-8"), mode)
