"""The thread budget: how many threads each pool of a process may ask for.

A run has three pools that work at the same time: the compute thread (torch and
onnxruntime take turns in it, so they share one intra-op count), the writer thread (the
x264 encoder) and the reader thread (the video decoder). Left alone, torch, onnxruntime,
OpenMP and FFmpeg each size their pool to every core of the machine, so a run asks for
three or four times the cores it has, and ``--workers N`` multiplies that by N. On a
machine that other work keeps busy, OpenMP's threads then spin at their barriers waiting
for a thread the scheduler took away (measured: the README's ``deidentify`` 29.1 s with
the defaults, 7.5 s with ``OMP_NUM_THREADS=1``, back to back, load 3-7 on 2 cores).

So every process decides once, at its start, from the cores it may use
(:func:`usable_cores`: its CPU affinity and its cgroup's CPU quota) and how many
processes share them (``--workers N``, Ray tasks on a node, the app's one worker):

* ``share = cores // processes`` (at least 1), or ``REENACT_THREADS`` / ``--threads``;
* the encoder and the decoder get ``io = max(1, share // 8)`` threads each;
* compute (torch intra-op = onnxruntime intra-op) gets ``share - io`` (at least 1);
* torch's and onnxruntime's inter-op pools get 1 (the pipeline runs one operator at a
  time); nothing spins while it waits (``OMP_WAIT_POLICY=PASSIVE``, onnxruntime's
  ``session.intra_op.allow_spinning = 0``).

``compute + io <= share``: the compute pool and the encoder never ask for more than the
share. The decoder's ``io`` threads are the one excess: they work in short bursts ahead of
compute and sleep on a full queue, and a pool cannot have fewer than one thread.

Detection in a thread of its own, one chunk ahead of the tracking and the privacy check
(onnxruntime and torch both let go of the GIL), was measured and left out: on the 2-core
machine CenterFace and the dlib check run concurrently take as long as in turn (20 full
passes and 8 six-chip forwards: 1.28-1.33 s together against 1.21-1.23 s one after the
other), and ``deidentify --method blur`` on 60 frames of the 512x512 clip was no faster
(issue 28).

:meth:`ThreadBudget.apply` puts a budget in force: the environment variables that OpenMP,
MKL, OpenBLAS and numba read when they load (so call it before ``import torch``), torch's
own counts when torch is loaded, and the budget that :func:`current` returns to the
places that size a pool later (onnxruntime sessions, the video reader and writer). That
record is this module's one piece of state, as thread pools are the process's own: torch's
count is process-wide too. A library caller that applies no budget gets this machine's
share for one process from :func:`current` in onnxruntime and the codecs, and torch as it is.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reenact.errors import ConfigError

log = logging.getLogger(__name__)

#: environment variable that overrides a process's share (threads, a positive integer)
ENV_THREADS = "REENACT_THREADS"

#: the variables :meth:`ThreadBudget.apply` sets for libraries that read them when they load
_COMPUTE_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def _cgroup_quota_cores(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float:
    """Cores the process's cgroup lets it use (CPU quota / period), ``inf`` without a quota.

    cgroup v2 (``cpu.max``: ``QUOTA PERIOD`` or ``max PERIOD``) and v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); the smallest quota on the path from the
    process's group up to the root counts.
    """
    limit = math.inf
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return limit
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, rel = parts[1], parts[2].lstrip("/")
        if controllers == "":  # v2 unified hierarchy
            candidates = [(root / rel, "cpu.max")]
        elif "cpu" in controllers.split(","):
            candidates = [(root / d / rel, "cpu.cfs_quota_us") for d in ("cpu", "cpu,cpuacct") if (root / d).is_dir()]
        else:
            continue
        for folder, name in candidates:
            here = folder
            while True:
                limit = min(limit, _quota_in(here, name))
                if here == root or root not in here.parents:
                    break
                here = here.parent
    return limit


def _quota_in(folder: Path, name: str) -> float:
    try:
        if name == "cpu.max":
            quota, period = (folder / name).read_text().split()[:2]
            return math.inf if quota == "max" else int(quota) / int(period)
        quota_us = int((folder / name).read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
        return math.inf if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return math.inf


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by its cgroup's quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota_cores()
    if quota < cores:
        cores = max(1, math.ceil(quota))
    return max(1, cores)


def idle_cores(loadavg: Path = Path("/proc/loadavg"), samples: int = 3, pause: float = 0.002) -> int:
    """Cores of this machine that nothing runs on right now, besides the calling thread: the
    online cores less the runnable tasks (the kernel's count of running and ready threads in
    ``/proc/loadavg``, the calling one included), the least of ``samples`` reads ``pause``
    seconds apart (a passing task does not count). 0 where the count cannot be read.

    For work that only pays off on a core nobody else wants (a second thread at start-up,
    :func:`reenact.cli.video.start_early_detection`): other processes' threads, such as the
    busy bench's CPU hogs, leave none. The cores are the process's usable ones
    (:func:`usable_cores`: its affinity and cgroup quota); the runnable count is the host's.
    """
    import time

    cores, most_running = usable_cores(), 0
    for i in range(max(1, samples)):
        if i:
            time.sleep(pause)
        try:
            running = int(loadavg.read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        most_running = max(most_running, running)
    return max(0, cores - most_running)


def threads_from_env(environ: dict[str, str] | None = None) -> int | None:
    """``REENACT_THREADS`` as a positive integer, ``None`` when unset or empty."""
    value = (os.environ if environ is None else environ).get(ENV_THREADS, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{ENV_THREADS}={value!r} is not a positive integer (threads per process); "
                          f"unset it to let each process take its share of the cores")
    return n


@dataclass(frozen=True)
class ThreadBudget:
    """Threads per pool of one process; see the module docstring for the rule.

    ``share``: threads of the process in all (its cores divided among the processes).
    ``compute``: torch intra-op and onnxruntime intra-op threads (they take turns).
    ``interop``: torch and onnxruntime inter-op threads. ``encoder`` / ``decoder``: the
    codec contexts' thread counts (x264, FFmpeg's decoder, decord).
    """

    share: int
    compute: int
    interop: int
    encoder: int
    decoder: int

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"thread budget {name} must be a positive integer, got {value!r}")

    @classmethod
    def resolve(cls, cores: int, processes: int = 1, threads: int | None = None) -> ThreadBudget:
        """The budget of one of ``processes`` processes sharing ``cores`` cores; ``threads``
        (``--threads`` / ``REENACT_THREADS``) sets the share outright."""
        if cores < 1 or processes < 1:
            raise ConfigError(f"a thread budget needs cores >= 1 and processes >= 1, got {cores} and {processes}")
        share = threads if threads is not None else max(1, cores // processes)
        io = max(1, share // 8)
        return cls(share=share, compute=max(1, share - io), interop=1, encoder=io, decoder=io)

    @classmethod
    def for_process(cls, processes: int = 1, threads: int | None = None) -> ThreadBudget:
        """:meth:`resolve` on this machine: :func:`usable_cores`, and ``threads`` else
        ``REENACT_THREADS``."""
        return cls.resolve(usable_cores(), processes, threads if threads is not None else threads_from_env())

    def environment(self) -> dict[str, str]:
        """Variables OpenMP, MKL, OpenBLAS and numba read once, when they load."""
        env = dict.fromkeys(_COMPUTE_VARS, str(self.compute))
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        return env

    def apply(self, load_torch: bool = False) -> ThreadBudget:
        """Put this budget in force in this process (and the processes it starts); returns it.

        Sets :meth:`environment` (effective for libraries not loaded yet), torch's intra-op
        and inter-op counts when torch is loaded or ``load_torch`` (a worker that is about
        to load it anyway; inter-op only while torch has not started that pool), and makes
        this the budget :func:`current` returns. A process that must not load torch yet (the
        CLI before its cheap checks) applies again once it has.
        """
        os.environ.update(self.environment())
        if load_torch or "torch" in sys.modules:
            self._apply_torch()
        global _current
        _current = self
        return self

    def _apply_torch(self) -> None:
        import torch

        torch.set_num_threads(self.compute)
        if torch.get_num_interop_threads() != self.interop:
            try:
                torch.set_num_interop_threads(self.interop)
            except RuntimeError:  # the pool has started (or was sized) already: it stays
                log.debug("torch inter-op threads stay at %d", torch.get_num_interop_threads())

    def describe(self) -> dict[str, Any]:
        """The budget and what torch reports now (for --dry-run and the tests)."""
        out: dict[str, Any] = asdict(self)
        if "torch" in sys.modules:
            import torch

            out["torch_threads"] = torch.get_num_threads()
            out["torch_interop_threads"] = torch.get_num_interop_threads()
        return out


_current: ThreadBudget | None = None


def current() -> ThreadBudget:
    """The budget in force in this process: the one last applied, else (a library caller
    that applied none) this machine's share for a single process, left unapplied."""
    return _current if _current is not None else ThreadBudget.for_process(1)
