"""The streaming engine: a reader thread, the compute loop and a writer thread.

Decoding, compute and encoding overlap; they are joined by bounded queues, so memory is
set by ``queue_bytes`` (and ``queue_size``), never by the length of the video. The
queues are bounded in bytes of frames, not in chunks: four 16-frame chunks are 50 MiB at
512x512 but 400 MiB at 1080p and 1.6 GiB at 4K, per queue. The compute
step is an *iterator transformer* (chunks in, chunks out), so it may hold chunks back
for look-ahead smoothing and release them later.

Errors: the first failure in any stage stops the other two (nobody hangs on a full or
empty queue) and is raised once from :func:`run_stream`: a ReenactError as it is, any
other exception wrapped in a PipelineError naming the stage. A KeyboardInterrupt stops
all stages and is re-raised, so the writer's context manager removes its temporary file.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from reenact.errors import ConfigError, PipelineError, ReenactError
from reenact.io.reader import DEFAULT_QUEUE_BYTES, FrameChunk

_POLL = 0.05  # seconds between checks of the stop flag while blocked on a queue
_END = object()

Transform = Callable[[Iterator[FrameChunk]], Iterator[FrameChunk]]


class ChunkSink(Protocol):
    """What the engine writes to (a VideoWriter or anything with ``write``)."""

    def write(self, chunk: FrameChunk) -> None: ...


@dataclass(frozen=True)
class StreamStats:
    """What a run did: frames in/out and seconds each stage was busy (not waiting)."""

    frames_read: int
    frames: int
    read_s: float
    compute_s: float
    write_s: float
    wall_s: float

    @property
    def fps(self) -> float:
        """Frames written per wall-clock second."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


class _Stopped(BaseException):
    """Raised inside a stage when another stage failed; BaseException so that a
    transform's ``except Exception`` cannot swallow it."""


def _nbytes(item: Any) -> int:
    frames = getattr(item, "frames", None)
    return int(frames.numel() * frames.element_size()) if frames is not None else 0


class ByteQueue:
    """A FIFO bounded by the bytes of the frames it holds and by a count of items.

    ``put`` waits while the queue holds ``max_items`` items, or while it is not empty and
    the new item would take it over ``max_bytes`` (so an item larger than ``max_bytes``
    still passes, alone). The API is the part of :class:`queue.Queue` the engine uses:
    ``put(item, timeout)`` raises :class:`queue.Full`, ``get(timeout)`` :class:`queue.Empty`.
    """

    def __init__(self, max_bytes: int, max_items: int) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.bytes = 0
        self._items: collections.deque[tuple[Any, int]] = collections.deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def _fits(self, size: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self.max_items and self.bytes + size <= self.max_bytes

    def put(self, item: Any, timeout: float | None = None) -> None:
        size = _nbytes(item)
        with self._cond:
            if not self._cond.wait_for(lambda: self._fits(size), timeout):
                raise queue.Full
            self._items.append((item, size))
            self.bytes += size
            self._cond.notify_all()

    def wait_room(self, size: int, timeout: float | None = None) -> None:
        """Wait until an item of ``size`` bytes would be let in (:meth:`put`'s rule); raises
        :class:`queue.Full` on timeout. The reader waits here *before* it decodes a chunk."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._fits(size), timeout):
                raise queue.Full

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            item, size = self._items.popleft()
            self.bytes -= size
            self._cond.notify_all()
            return item


class _Run:
    def __init__(self, queue_size: int, queue_bytes: int) -> None:
        self.stop = threading.Event()
        # Set when compute is done with its input (it may stop early): the reader ends.
        self.input_closed = threading.Event()
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.stage: str = ""
        self.in_q = ByteQueue(queue_bytes, queue_size)
        self.out_q = ByteQueue(queue_bytes, queue_size)

    def fail(self, stage: str, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
                self.stage = stage
        self.stop.set()

    def _poll(self, attempt: Callable[[], Any], waiting: type[Exception], closed: threading.Event | None) -> Any:
        """``attempt()`` (a queue call with a ``_POLL`` timeout that raises ``waiting`` when it
        times out) again until it returns; :class:`_Stopped` once the run stops or ``closed`` is set."""
        while True:
            if self.stop.is_set() or (closed is not None and closed.is_set()):
                raise _Stopped
            try:
                return attempt()
            except waiting:
                continue

    def put(self, q: ByteQueue, item: Any, closed: threading.Event | None = None) -> None:
        self._poll(lambda: q.put(item, timeout=_POLL), queue.Full, closed)

    def wait_room(self, q: ByteQueue, size: int, closed: threading.Event | None = None) -> None:
        self._poll(lambda: q.wait_room(size, timeout=_POLL), queue.Full, closed)

    def get(self, q: ByteQueue) -> Any:
        return self._poll(lambda: q.get(timeout=_POLL), queue.Empty, None)


def run_stream(
    reader: Iterable[FrameChunk],
    transform: Transform,
    writer: ChunkSink,
    *,
    queue_size: int = 4,
    queue_bytes: int = DEFAULT_QUEUE_BYTES,
) -> StreamStats:
    """Decode ``reader`` in a thread, run ``transform`` here, write in a thread.

    Conventions:
        chunks are FrameChunk (frames uint8 ``[T,H,W,3]``, pts int64 ``[T]``); the
        transform must yield chunks in order; it may yield fewer/more/delayed chunks.

    Each of the two queues holds at most ``queue_size`` chunks and at most ``queue_bytes``
    bytes of frames (one chunk always passes, however large). The reader decodes a chunk only
    once the queue has room for it (the size of the one before), so decoded frames ahead of
    compute are the queue's and no more: at 1080p, with the default 8 MiB, one 6 MiB frame,
    not a second one decoded and waiting to get in. Returns :class:`StreamStats`.
    Raises the first stage's ReenactError, or PipelineError("<stage> stage failed: ...").
    """
    if not isinstance(queue_size, int) or queue_size < 1:
        raise ConfigError(f"queue_size must be a positive integer, got {queue_size!r}")
    if not isinstance(queue_bytes, int) or queue_bytes < 1:
        raise ConfigError(f"queue_bytes must be a positive integer, got {queue_bytes!r}")
    run = _Run(queue_size, queue_bytes)
    busy = {"read": 0.0, "compute": 0.0, "write": 0.0}
    counts = {"read": 0, "write": 0}
    t_start = time.perf_counter()

    def read_loop() -> None:
        it: Iterator[FrameChunk] | None = None
        size = 0  # bytes of the last chunk: the next one is decoded only once the queue has room for it
        try:
            it = iter(reader)
            while not (run.stop.is_set() or run.input_closed.is_set()):
                run.wait_room(run.in_q, size, run.input_closed)
                t0 = time.perf_counter()
                try:
                    chunk = next(it)
                except StopIteration:
                    busy["read"] += time.perf_counter() - t0
                    break
                busy["read"] += time.perf_counter() - t0
                counts["read"] += len(chunk)
                size = _nbytes(chunk)
                run.put(run.in_q, chunk, run.input_closed)
                del chunk  # compute's now: not held here while the next one decodes
            run.put(run.in_q, _END, run.input_closed)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by run_stream
            run.fail("read", exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()  # release the decoder now, in this thread
                except BaseException as exc:  # noqa: BLE001
                    run.fail("read", exc)

    def write_loop() -> None:
        try:
            while True:
                item = run.get(run.out_q)
                if item is _END:
                    return
                t0 = time.perf_counter()
                writer.write(item)
                busy["write"] += time.perf_counter() - t0
                counts["write"] += len(item)
                del item  # encoded: its frames go now, not when the next chunk arrives
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by run_stream
            run.fail("write", exc)

    waited = [0.0]

    def source() -> Iterator[FrameChunk]:
        while True:
            t0 = time.perf_counter()
            item = run.get(run.in_q)
            waited[0] += time.perf_counter() - t0
            if item is _END:
                return
            yield item

    threads = [
        threading.Thread(target=read_loop, name="reenact-read", daemon=True),
        threading.Thread(target=write_loop, name="reenact-write", daemon=True),
    ]
    for t in threads:
        t.start()
    t_compute = time.perf_counter()
    interrupted: BaseException | None = None
    try:
        for chunk in transform(source()):
            if not isinstance(chunk, FrameChunk):
                raise PipelineError(
                    f"compute stage yielded {type(chunk).__name__}, expected FrameChunk"
                )
            t0 = time.perf_counter()
            run.put(run.out_q, chunk)
            waited[0] += time.perf_counter() - t0
            del chunk  # the writer's now: freed once encoded, not held while the next is computed
        run.input_closed.set()
        t0 = time.perf_counter()
        run.put(run.out_q, _END)
        waited[0] += time.perf_counter() - t0
    except _Stopped:
        pass
    except KeyboardInterrupt as exc:
        interrupted = exc
        run.stop.set()
    except BaseException as exc:  # noqa: BLE001 - re-raised below, once
        run.fail("compute", exc)
    busy["compute"] = time.perf_counter() - t_compute - waited[0]
    for t in threads:
        while t.is_alive():
            try:
                t.join(timeout=_POLL)
            except KeyboardInterrupt as exc:  # a second Ctrl-C while stopping
                interrupted = interrupted or exc
                run.stop.set()
    if interrupted is not None:
        raise interrupted
    if run.error is not None:
        error = run.error
        if isinstance(error, (ReenactError, KeyboardInterrupt)):
            raise error
        raise PipelineError(
            f"{run.stage} stage failed: {type(error).__name__}: {error}"
        ) from error
    return StreamStats(
        frames_read=counts["read"],
        frames=counts["write"],
        read_s=busy["read"],
        compute_s=max(0.0, busy["compute"]),
        write_s=busy["write"],
        wall_s=time.perf_counter() - t_start,
    )


def passthrough(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
    """The identity transform (round trips, benchmarks)."""
    yield from chunks
