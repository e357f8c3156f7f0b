"""Hostile model files under a memory cap: each crafted file loaded in its own process.

Usage: ``python bench/hostile.py`` (CPU only, ~1 minute). For every case of
:data:`testing.hostile_files.CASES` a fresh Python process writes the tiny crafted file
and asks reenact to load it; the parent watches the child's resident memory through
``/proc/PID/status`` and kills it past ``--cap-mib`` (1536 MiB: an ``RLIMIT_AS`` cap is
not usable, torch alone maps more than 6 GiB of address space). A case passes when the
load is refused with a one-line ``ModelError`` and the child's peak RSS (VmHWM, torch
and onnxruntime imports included) stays under the cap.

Prints one line per case and ``goal max_rss_mib_hostile: X (target <= 1024) PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {root!r})
from testing.hostile_files import CASES
from reenact.errors import ModelError
make, load = CASES[{case!r}]
folder = Path(tempfile.mkdtemp(dir={tmp!r}))
path = make(folder)
size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())
out = {{"bytes": size}}
try:
    load(path)
    out["result"] = "LOADED"
except ModelError as exc:
    out["result"] = "refused"
    out["error"] = type(exc).__name__ + ": " + str(exc)
except BaseException as exc:
    out["result"] = "other error"
    out["error"] = type(exc).__name__ + ": " + str(exc)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork+exec
_hwm = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0]
out["max_rss_mib"] = int(_hwm.split()[1]) / 1024
print("RESULT " + json.dumps(out))
"""


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_case(case: str, cap_mib: float, tmp: str) -> dict[str, object]:
    code = CHILD.format(root=str(ROOT), case=case, tmp=tmp)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                            "CUDA_VISIBLE_DEVICES": ""})
    peak = 0.0
    killed = False
    while proc.poll() is None:
        rss = _rss_mib(proc.pid)
        peak = max(peak, rss)
        if rss > cap_mib:
            proc.kill()
            killed = True
            break
        time.sleep(0.01)
    stdout, stderr = proc.communicate()
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if killed or line is None:
        return {"result": "killed over the cap" if killed else "crashed", "max_rss_mib": peak,
                "error": (stderr.strip().splitlines() or ["?"])[-1], "bytes": 0}
    out: dict[str, object] = json.loads(line[len("RESULT "):])
    out["max_rss_mib"] = max(float(out["max_rss_mib"]), peak)  # type: ignore[arg-type]
    return out


def main() -> int:
    from testing.goals import all_pass, goal
    from testing.hostile_files import CASES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap-mib", type=float, default=1536.0, help="kill a child past this RSS")
    ap.add_argument("--target-mib", type=float, default=1024.0)
    args = ap.parse_args()
    worst = 0.0
    one_line_refusals = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            r = run_case(case, args.cap_mib, tmp)
            error = str(r.get("error", ""))
            one_line = r["result"] == "refused" and "\n" not in error
            one_line_refusals += one_line
            worst = max(worst, float(r["max_rss_mib"]))  # type: ignore[arg-type]
            print(f"{case}: {r['bytes']} bytes, {r['result']}, max RSS {float(r['max_rss_mib']):.0f} MiB"  # type: ignore[arg-type]
                  f"{'' if one_line else ' (NOT a one-line ModelError)'}")
            print(f"    {error}")
    lines = [goal("max_rss_mib_hostile", worst, "<=", args.target_mib, ".0f", ".0f"),
             goal("one_line_refusals_hostile", one_line_refusals, ">=", len(CASES), ".0f")]
    print("\n".join(lines))
    return 0 if all_pass(lines) else 1


if __name__ == "__main__":
    sys.exit(main())
