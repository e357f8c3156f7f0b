"""Typed errors of reenact.

Library code raises these with the offending value and what to do about it; it never
prints, exits or swallows. Only :mod:`reenact.cli` turns them into exit codes and one
clear line for the user.
"""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with control characters (newlines, terminal escape sequences) escaped.

    File names are user data: one named ``"a\\x1b[2Jb.mp4"`` or holding a newline must not
    clear the terminal or forge extra lines when a message or summary prints it.
    """
    out = []
    for ch in str(text):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


class ReenactError(Exception):
    """Base class of every error reenact raises on purpose.

    ``exit_code`` is what the command-line tools exit with when this error reaches them.
    """

    exit_code: int = 1


class ConfigError(ReenactError):
    """A configuration value or file is invalid (unknown key, wrong type, bad range)."""

    exit_code = 2


class InputError(ReenactError):
    """A user-supplied input (file, folder, option) cannot be used as given."""

    exit_code = 2


class VideoReadError(InputError):
    """A video cannot be opened or decoded (missing, not a video, truncated, no frames)."""


class VideoWriteError(ReenactError):
    """An output video cannot be written (permissions, missing folder, encoder failure)."""


class OutputExistsError(InputError):
    """The output exists or is the input, and overwriting was not allowed."""


class ShapeError(ReenactError, ValueError):
    """A tensor has the wrong shape, dtype or value range at a function boundary."""


class NoFaceError(InputError):
    """An image that must contain a face contains none."""


class ModelError(ReenactError):
    """A model file is missing, corrupt, mis-shaped or does not match its config."""


class WeightsMissingError(ModelError):
    """A model pack's weight file is not in the cache; the message says how to get it."""


class UnsafeModelFileError(ModelError):
    """A model file asks to run code or reference objects outside the allow-list."""


class ChecksumError(ModelError):
    """A downloaded or cached file does not have the expected sha256."""


class DownloadError(ModelError):
    """A download failed (network error, cut-off transfer, unwritable cache)."""


class PipelineError(ReenactError):
    """A stage of the video pipeline failed; the message names the stage and the file."""


class TrainingError(ReenactError):
    """Training cannot go on (NaN loss, corrupt dataset shard, incompatible resume)."""


class StorageError(InputError):
    """Object storage (an ``s3://`` or other fsspec URL) cannot be used: no credentials,
    wrong credentials, no such bucket, unreachable endpoint. The message never holds a secret."""
