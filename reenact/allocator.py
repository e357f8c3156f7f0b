"""Process-wide settings of the C allocator that keep the resident memory of a run low.

glibc's ``malloc`` serves a large block from ``mmap`` (returned to the system when freed)
only above a threshold that it raises, by default, to the size of every large block freed,
up to 32 MiB. A video run frees and reallocates large buffers for every chunk (decoded
frames, detector activations, face crops): once the threshold has risen they come from the
heap instead, where freed space is kept and fragments, and the resident size creeps up over
the run. A fixed threshold keeps large blocks on ``mmap``. Measured (``deidentify``, the
512x512 one-face clip, 60 frames, 2 CPU cores): peak VmHWM 1199 -> 1144 MiB synthetic,
1041 -> 1007 MiB ``--method blur``, the same wall time.

The threshold is a trade: every block above it is page-faulted in anew each time it is
allocated. At 1 MiB, dlib's activations (2-3 MiB a batch) and the blur's head regions
(about 2 MiB) were all mapped afresh: 3.4-3.6M page faults on the 720p clip. At 4 MiB, with
the reader's chunks and queues at 8 MiB (``reenact.io.reader``), the same 60 frames
(synthetic) took 1.3-1.4M faults and 19.8-20.8 s against 24-27 s, peaking at 950 MiB
against 990 (1 MiB threshold, 16 MiB chunks); blur 16.0 against 20.4 s, 945 against 960 MiB.

Only the CLI calls :func:`limit_heap_growth` (a library does not change its host's
allocator); an explicit ``MALLOC_MMAP_THRESHOLD_`` in the environment wins. The setting
also goes into the environment, where glibc reads it when a process starts, so the processes
a run starts get it too: the ``--workers`` pool's workers are new interpreters (spawned),
and without it the worker that took the 1080p crowd clip in ``bench/vs_deface.py --workers 2``
peaked at 1094 MiB against 998 MiB with it (blur, 20 frames a clip, back to back).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter number of the mmap threshold (glibc ``malloc.h``)."""

MMAP_THRESHOLD_BYTES = 4 << 20
"""Blocks of this size or larger are mmapped (and unmapped when freed): 4 MiB."""


def limit_heap_growth(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process and the processes
    it starts (``MALLOC_MMAP_THRESHOLD_`` is set in the environment once it is in force).

    Returns whether it was set: false off Linux, on a C library without ``mallopt`` or
    ``gnu_get_libc_version`` (not glibc), or when ``MALLOC_MMAP_THRESHOLD_`` is set.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, int(threshold)):
        return False
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(int(threshold))  # for the workers (spawned) and other children
    return True


def release_free_memory() -> bool:
    """Hand the C allocator's free memory back to the system now (glibc ``malloc_trim(0)``: the
    free pages of every thread's heap). For a thread that ends after allocating much (the early
    detection's, :mod:`reenact.faces.early`): its heap is its own, and what it freed there stays
    resident otherwise. Returns whether anything was released (false off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
