"""The CLI's allocator setting: large freed buffers go back to the system."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_PROGRAM = """
import re, sys
import numpy as np
from reenact.allocator import limit_heap_growth

def rss_mib():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

if sys.argv[1] == "limit":
    assert limit_heap_growth()
big = np.ones(16 << 20, np.uint8)  # freeing it raises glibc's default mmap threshold to 16 MiB
del big
before = rss_mib()
blocks = [np.ones(8 << 20, np.uint8) for _ in range(8)]  # 64 MiB, as a chunk's buffers
pinned = [np.ones(1000) for _ in range(10)]  # allocated after them: the heap cannot shrink
del blocks
print(rss_mib() - before)
"""


def _clean_env() -> dict[str, str]:
    """This environment without the allocator variable (an in-process CLI test may have set it)."""
    return {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}


def _kept_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, timeout=120,
                         env=_clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_chunk_buffers_leave_the_resident_memory() -> None:
    default = _kept_mib("default")
    limited = _kept_mib("limit")
    assert limited < 8, f"{limited:.0f} MiB of freed buffers still resident with the limit"
    assert default > 32, f"glibc's default kept only {default:.0f} MiB (the test lost its point)"


def test_an_explicit_environment_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from reenact.allocator import limit_heap_growth

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert limit_heap_growth() is False


_KEPT = """
import re
import numpy as np

def kept_mib():
    def rss_mib():
        return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
    big = np.ones(16 << 20, np.uint8)
    del big
    before = rss_mib()
    blocks = [np.ones(8 << 20, np.uint8) for _ in range(8)]
    pinned = [np.ones(1000) for _ in range(10)]
    del blocks
    return rss_mib() - before
"""

_POOL = """
import concurrent.futures, multiprocessing, sys
sys.path.insert(0, sys.argv[2])
import kept
from reenact.allocator import limit_heap_growth

if __name__ == "__main__":
    if sys.argv[1] == "limit":
        assert limit_heap_growth()
    # the --workers pool: spawned interpreters (reenact.batch.run_jobs)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        print(pool.submit(kept.kept_mib).result())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_workers_a_run_starts_get_the_setting_too(tmp_path: Path) -> None:
    (tmp_path / "kept.py").write_text(_KEPT)
    (tmp_path / "pool.py").write_text(_POOL)

    def worker_kept(mode: str) -> float:
        out = subprocess.run([sys.executable, str(tmp_path / "pool.py"), mode, str(tmp_path)], capture_output=True,
                             text=True, timeout=120, env=_clean_env())
        assert out.returncode == 0, out.stderr[-2000:]
        return float(out.stdout.split()[-1])

    assert worker_kept("limit") < 8, "a worker of a run with the limit kept its freed buffers"
    assert worker_kept("default") > 32, "glibc's default in the worker kept them (the test lost its point)"
