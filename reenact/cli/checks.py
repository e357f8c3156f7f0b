"""Cheap checks the CLI runs before importing torch: paths, file kinds, file headers.

A refusal of a bad argument must come back in well under a second, so these checks use
only the standard library and PyAV (which imports in a fraction of a second) and run
before :mod:`reenact.pipeline` (torch) is imported. They raise the same typed errors as
the library checks that run again later (``check_inputs``); every output-path problem is
an :class:`~reenact.errors.InputError` (exit status 2), whatever the cause.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from reenact.errors import InputError, OutputExistsError, VideoReadError

__all__ = ["check_output_file", "check_output_folder", "check_photo_path", "check_video_header"]


def check_video_header(path: Path) -> None:
    """Refuse a file that is not a video before anything heavy loads.

    Opens the container with PyAV (it reads the header only) and asks for a video stream: a
    text file named ``.mp4``, an empty file or an audio-only file is refused here.
    """
    if path.is_dir():
        return
    if not path.is_file():
        raise VideoReadError(f"{path}: is not a regular file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: is empty (0 bytes); give a video file")
    import av  # light: no torch

    try:
        with av.open(str(path), "r") as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: has no video stream (audio or data only)")
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise VideoReadError(
            f"{path}: cannot be opened as a video ({reason}); the file is not a video, is truncated "
            "or corrupt, or uses an unsupported container"
        ) from exc
    except OSError as exc:
        raise VideoReadError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def check_photo_path(path: Path, what: str) -> None:
    """A photo argument names a readable file (not a folder, not missing)."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give one photo file")
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} cannot be read (permission denied)")


def _existing_ancestor_problem(parent: Path) -> str | None:
    """Why ``parent`` cannot be a folder to write in: a file on its path, or missing."""
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a folder"
            break
    if not parent.is_dir():
        return f"folder {parent} does not exist; create it first"
    return None


def check_output_file(source: Path | None, output: Path, overwrite: bool, *,
                      suffixes: tuple[str, ...] | None = None, what: str = "-o") -> None:
    """Everything about an output file path that can be known before work starts.

    ``suffixes``: the extensions the command can write (None: any, but one is needed).
    Raises OutputExistsError (output exists without ``overwrite``, or is the input) or
    InputError (folder, no/unsupported extension, parent missing or a file, not writable).
    """
    if source is not None and source.exists() and output.exists():
        if os.path.samefile(source, output):
            raise OutputExistsError(f"{what} {output}: is the input; write the result to a different file")
    elif source is not None and output.resolve() == source.resolve():
        raise OutputExistsError(f"{what} {output}: is the input; write the result to a different file")
    if output.is_dir():
        raise InputError(f"{what} {output}: is a folder; give an output file name")
    if not output.suffix:
        wanted = "/".join(suffixes) if suffixes else ".mp4 or .mkv"
        raise InputError(f"{what} {output}: has no file extension; use {wanted} so the format is known")
    if suffixes is not None and output.suffix.lower() not in suffixes:
        raise InputError(f"{what} {output}: cannot write {output.suffix} files; use {' or '.join(suffixes)}")
    problem = _existing_ancestor_problem(output.parent)
    if problem is not None:
        raise InputError(f"{what} {output}: {problem}")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{what} {output}: already exists; pass --overwrite to replace it")
    probe = output.parent / f".reenact-write-test-{uuid.uuid4().hex}"
    try:
        with open(probe, "wb"):
            pass
    except OSError as exc:
        raise InputError(f"{what} {output}: cannot write in folder {output.parent} ({exc.strerror}); "
                         "choose a writable folder") from exc
    probe.unlink(missing_ok=True)


def check_output_folder(output: Path) -> None:
    """A folder run's output: a folder, or a path where one can be made."""
    if output.exists() and not output.is_dir():
        raise InputError(f"-o {output} is a file; a folder input needs an output folder")
    for ancestor in output.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"-o {output}: {ancestor} is a file, not a folder")
            break
