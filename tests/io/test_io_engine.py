"""The streaming engine: pass-through, look-ahead transforms, bounded memory, one clear
error from any stage, Ctrl-C leaving no partial output."""

from __future__ import annotations

import _thread
import itertools
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from io_media import decode_all, write_video

from reenact.errors import PipelineError, VideoReadError, VideoWriteError
from reenact.io import FrameChunk, VideoWriter, open_video, passthrough, probe, run_stream

pytestmark = pytest.mark.timeout(60)


def chunk(i: int, t: int = 2, h: int = 8, w: int = 8) -> FrameChunk:
    frames = torch.full((t, h, w, 3), i % 256, dtype=torch.uint8)
    return FrameChunk(frames, torch.arange(i * t, i * t + t, dtype=torch.int64), i * t)


def endless() -> Iterator[FrameChunk]:
    for i in itertools.count():
        yield chunk(i)


class Sink:
    def __init__(self, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.chunks: list[FrameChunk] = []
        self.fail_at = fail_at
        self.delay = delay

    def write(self, c: FrameChunk) -> None:
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise RuntimeError("disk on fire")
        time.sleep(self.delay)
        self.chunks.append(c)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def test_passthrough_round_trip_through_writer(tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", frames=10, audio=True)
    out = tmp_path / "out.mp4"
    with open_video(src, chunk_size=3) as r, VideoWriter(out, r.info, source=src) as w:
        stats = run_stream(r, passthrough, w, queue_size=2)
    assert stats.frames == stats.frames_read == 10
    assert stats.wall_s > 0 and min(stats.read_s, stats.compute_s, stats.write_s) >= 0
    _, t_in, _ = decode_all(src)
    _, t_out, _ = decode_all(out)
    assert t_out == t_in and leftovers(tmp_path) == []


def test_lookahead_transform_can_hold_chunks_back() -> None:
    def delay_two(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        held: list[FrameChunk] = []
        for c in chunks:
            held.append(c)
            if len(held) > 2:
                yield held.pop(0)
        yield from held

    source = [chunk(i) for i in range(7)]
    sink = Sink()
    stats = run_stream(source, delay_two, sink, queue_size=1)
    assert [c.start_index for c in sink.chunks] == [c.start_index for c in source]
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(sink.chunks, source, strict=True))
    assert stats.frames == 14


def test_transform_may_stop_early_and_reader_is_released() -> None:
    def first_three(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        return itertools.islice(chunks, 3)

    sink = Sink()
    stats = run_stream(endless(), first_three, sink, queue_size=2)  # must not hang
    assert stats.frames == 6 and len(sink.chunks) == 3


def test_memory_is_bounded_by_the_queues() -> None:
    alive = {"now": 0, "max": 0}
    lock = threading.Lock()

    def counted() -> Iterator[FrameChunk]:
        for i in range(60):
            with lock:
                alive["now"] += 1
                alive["max"] = max(alive["max"], alive["now"])
            yield chunk(i)

    class CountingSink(Sink):
        def write(self, c: FrameChunk) -> None:
            time.sleep(0.002)  # the slowest stage
            with lock:
                alive["now"] -= 1

    run_stream(counted(), passthrough, CountingSink(), queue_size=3)
    # two queues of 3, plus one chunk in each stage's hands
    assert alive["max"] <= 2 * 3 + 3
    assert alive["now"] == 0


def test_reader_error_surfaces_once_as_itself() -> None:
    boom = VideoReadError("clip.mp4: decoding failed at frame 6")

    def failing() -> Iterator[FrameChunk]:
        yield from (chunk(i) for i in range(3))
        raise boom

    sink = Sink()
    with pytest.raises(VideoReadError) as info:
        run_stream(failing(), passthrough, sink)
    assert info.value is boom


def test_compute_error_is_a_pipeline_error_naming_the_stage() -> None:
    def broken(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            if c.start_index >= 4:
                raise ValueError("bad landmark")
            yield c

    with pytest.raises(PipelineError, match="compute stage failed: ValueError: bad landmark") as info:
        run_stream(endless(), broken, Sink())  # endless reader: must stop, not hang
    assert isinstance(info.value.__cause__, ValueError)


def test_compute_that_swallows_exceptions_still_stops_on_writer_failure() -> None:
    def stubborn(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            try:
                yield c
            except Exception:  # a careless transform must not keep the engine alive
                continue

    with pytest.raises(PipelineError, match="write stage failed: RuntimeError: disk on fire"):
        run_stream(endless(), stubborn, Sink(fail_at=2))


def test_transform_yielding_wrong_type_is_refused() -> None:
    def wrong(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            yield c.frames  # type: ignore[misc]

    with pytest.raises(PipelineError, match="yielded Tensor, expected FrameChunk"):
        run_stream([chunk(0)], wrong, Sink())


def test_error_mid_stream_leaves_existing_output_untouched(tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", frames=12)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")

    def fail_late(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            if c.start_index >= 8:
                raise RuntimeError("model exploded")
            yield c

    with pytest.raises(PipelineError, match="model exploded"):
        with open_video(src, chunk_size=4) as r, VideoWriter(out, r.info, source=src, overwrite=True) as w:
            run_stream(r, fail_late, w)
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []


def test_writer_error_leaves_no_output(tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", frames=6)
    out = tmp_path / "out.mp4"

    def wrong_size(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            yield FrameChunk(c.frames[:, :-2], c.pts, c.start_index)

    with pytest.raises(Exception, match="expects frames"):
        with open_video(src) as r, VideoWriter(out, r.info, source=src) as w:
            run_stream(r, wrong_size, w)
    assert not out.exists() and leftovers(tmp_path) == []


def test_nothing_written_is_an_error_not_an_empty_file(tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", frames=3)
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoWriteError, match="no frames were written"):
        with open_video(src) as r, VideoWriter(out, r.info, source=src) as w:
            run_stream(r, lambda chunks: iter(()), w)
    assert not out.exists() and leftovers(tmp_path) == []


def test_ctrl_c_leaves_no_partial_output(tmp_path: Path) -> None:
    before = set(threading.enumerate())  # other tests' threads (in any order) are not ours
    src = write_video(tmp_path / "in.mp4", frames=40, audio=True)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    started, pressed = threading.Event(), threading.Event()

    def slow(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            started.set()
            time.sleep(0.05)
            yield c
        # the stream never ends before Ctrl-C is pressed, however late a loaded machine runs the presser
        pressed.wait(20)
        time.sleep(1.0)

    def press_ctrl_c() -> None:
        started.wait(10)
        time.sleep(0.2)
        _thread.interrupt_main()  # the same KeyboardInterrupt a terminal's Ctrl-C raises
        pressed.set()

    # Ctrl-C as a terminal delivers it to a plain Python process, whatever handler an earlier
    # test's library (a Ray driver, a server) left on SIGINT in this test process
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with open_video(src, chunk_size=2) as r, VideoWriter(out, r.info, source=src, overwrite=True) as w:
                run_stream(r, slow, w)
    finally:
        presser.join()
        signal.signal(signal.SIGINT, previous)
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"the stream left threads running: {left}"  # reader and writer threads are gone


def test_same_input_is_refused_before_any_work(tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", frames=2)
    before = src.read_bytes()
    with pytest.raises(Exception, match="is the input"):
        VideoWriter(src, probe(src), source=src, overwrite=True)
    assert src.read_bytes() == before


@pytest.mark.gpu
def test_chunks_on_cuda_round_trip(tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", frames=9, audio=True)
    with open_video(src, chunk_size=4) as r:
        cpu_frames = torch.cat([c.frames for c in r])
    seen: list[torch.device] = []

    def on_gpu(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            seen.append(c.frames.device)
            yield FrameChunk(c.frames.clone(), c.pts, c.start_index)  # compute stays on the GPU

    out = tmp_path / "out.mp4"
    with open_video(src, chunk_size=4, device="cuda") as r, VideoWriter(out, r.info, source=src) as w:
        stats = run_stream(r, on_gpu, w)
    assert stats.frames == 9 and all(d.type == "cuda" for d in seen)
    with open_video(src, chunk_size=4, device="cuda") as r:
        assert torch.equal(torch.cat([c.frames.cpu() for c in r]), cpu_frames)
    _, t_in, _ = decode_all(src)
    _, t_out, _ = decode_all(out)
    assert t_out == t_in


def test_queues_are_bounded_in_bytes_not_chunks():
    import queue as queue_mod

    from reenact.errors import ConfigError
    from reenact.io.engine import ByteQueue

    q = ByteQueue(max_bytes=2 * 8 * 8 * 3 * 2, max_items=100)  # room for two 2-frame 8x8 chunks
    q.put(chunk(0))
    q.put(chunk(1))
    with pytest.raises(queue_mod.Full):
        q.put(chunk(2), timeout=0.05)
    assert q.get(timeout=0.05).start_index == 0
    q.put(chunk(2), timeout=0.05)
    big = ByteQueue(max_bytes=10, max_items=4)
    big.put(chunk(0, h=64, w=64), timeout=0.05)  # larger than the bound: passes alone
    with pytest.raises(queue_mod.Full):
        big.put(chunk(1), timeout=0.05)
    # a stream whose byte bound holds less than a chunk still completes, in order
    written: list[int] = []

    class Sink:
        def write(self, c: FrameChunk) -> None:
            written.append(c.start_index)

    stats = run_stream([chunk(i) for i in range(6)], passthrough, Sink(), queue_bytes=1)
    assert stats.frames == 12 and written == [2 * i for i in range(6)]
    with pytest.raises(ConfigError):
        run_stream([], passthrough, Sink(), queue_bytes=0)


def test_the_reader_decodes_no_chunk_before_the_queue_has_room_for_it() -> None:
    """Decoded frames ahead of compute are what the queue holds: with room for one chunk,
    one chunk in compute's hands and one queued, not a third decoded and waiting to get in."""
    decoded = [0]

    def counted() -> Iterator[FrameChunk]:
        for i in range(8):
            decoded[0] += 1
            yield chunk(i)

    seen: list[int] = []

    def slow(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for c in chunks:
            if c.start_index == 0:
                time.sleep(0.5)  # the reader has long filled the queue by now
                seen.append(decoded[0])
            yield c

    one_chunk = 2 * 8 * 8 * 3
    stats = run_stream(counted(), slow, Sink(), queue_bytes=one_chunk)
    assert stats.frames == 16
    assert seen == [2], f"{seen[0]} chunks decoded while compute held the first (one in compute, one queued)"
