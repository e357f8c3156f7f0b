"""The run queue: one ``process_video`` at a time in a worker thread, with progress and cancel.

Previews and runs share one engine lock (the models are shared and not all of them are
thread-safe), so a preview is refused with a clear message while a run is working.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reenact.errors import ReenactError

log = logging.getLogger(__name__)

State = Literal["queued", "running", "done", "failed", "cancelled"]


class CancelledError(ReenactError):
    """The user cancelled a run; nothing partial is kept."""


class QueueFullError(ReenactError):
    """Too many runs are waiting; the new one is refused."""


@dataclass
class Job:
    """One run: what to do (``work``), where its files go, and how far it is."""

    id: str
    folder: Path
    work: Callable[[Job], dict[str, Any]]
    label: str = ""
    state: State = "queued"
    done: int = 0
    total: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        """The pipeline's progress callback: record progress, raise when cancelled."""
        self.done, self.total = done, total
        if self.cancel.is_set():
            raise CancelledError("cancelled: no output was written")

    def fps(self) -> float | None:
        if self.started is None or self.done == 0:
            return None
        return self.done / max((self.finished or time.perf_counter()) - self.started, 1e-6)


class JobQueue:
    """A FIFO of jobs run one at a time by a daemon worker thread."""

    def __init__(self, engine: threading.Lock, max_waiting: int = 4) -> None:
        self.engine, self.max_waiting = engine, max_waiting
        self.jobs: dict[str, Job] = {}
        self.waiting: deque[Job] = deque()
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="reenact-app-jobs", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> int:
        """Queue ``job``; returns how many jobs are ahead of it (running one included)."""
        with self.cond:
            if len(self.waiting) >= self.max_waiting:
                raise QueueFullError(
                    f"{len(self.waiting)} runs are already waiting (limit {self.max_waiting}); "
                    "wait for one to finish or cancel one"
                )
            ahead = len(self.waiting) + sum(1 for j in self.jobs.values() if j.state == "running")
            self.jobs[job.id] = job
            self.waiting.append(job)
            self.cond.notify()
            return ahead

    def position(self, job: Job) -> int:
        """Jobs ahead of a queued ``job`` (0 when it runs or ran)."""
        with self.cond:
            if job.state != "queued":
                return 0
            running = sum(1 for j in self.jobs.values() if j.state == "running")
            return running + list(self.waiting).index(job) if job in self.waiting else 0

    def cancel(self, job: Job) -> None:
        with self.cond:
            job.cancel.set()
            if job.state == "queued" and job in self.waiting:
                self.waiting.remove(job)
                job.state, job.error, job.finished = "cancelled", "cancelled before it started", time.perf_counter()

    def busy(self) -> bool:
        with self.cond:
            return bool(self.waiting) or any(j.state == "running" for j in self.jobs.values())

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            for job in list(self.waiting):
                job.cancel.set()
            for job in self.jobs.values():
                job.cancel.set()
            self.cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    return
                job = self.waiting.popleft()
                job.state = "running"
            with self.engine:
                job.started = time.perf_counter()
                try:
                    if job.cancel.is_set():
                        raise CancelledError("cancelled before it started")
                    job.result = job.work(job)
                    job.state = "done"
                except CancelledError as exc:
                    job.state, job.error = "cancelled", str(exc)
                except ReenactError as exc:
                    job.state, job.error = "failed", str(exc)
                except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker; logged in full
                    log.error("run %s failed:\n%s", job.id, traceback.format_exc())
                    job.state, job.error = "failed", f"internal error ({type(exc).__name__}): {exc}"
                finally:
                    job.finished = time.perf_counter()
