"""Web app benchmark (tiny pack, CPU), measured in one run.

1. Preview latency of one frame of the sample clip through the app (HTTP request to a
   running ``python -m reenact.app``, models warm) against the same frame through the
   Python API (``process_video`` on the same three-frame clip around it, models warm,
   clip cut beforehand). The app's time includes cutting the clip, outlining the faces,
   PNG encoding and HTTP. goal: app / api <= 1.5.
2. The app's resident memory when idle: right after start-up, and after previews (models
   loaded). The pipeline (torch) is imported on first use, so an idle app stays small.
   goal: idle RSS after start-up <= 300 MiB.

Run: ``python bench/app.py [--frame 25] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reenact.app.media import cut_clip  # noqa: E402
from reenact.pipeline import PipelineConfig, process_video  # noqa: E402
from testing.goals import all_pass, goal  # noqa: E402

SAMPLE = ROOT / "samples" / "astronaut_clip.mp4"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json", "x-reenact": "1"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frame", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "reenact.app", "--quiet", "--port", str(port), "--device", "cpu",
                               "--allow", str(SAMPLE.parent)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/api/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.3)
        time.sleep(1.0)
        idle_start = rss_mib(server.pid)
        video = post(base + "/api/path", {"path": str(SAMPLE)})
        request = {"input": video["id"], "mode": "deidentify", "frame": args.frame}
        post(base + "/api/preview", request)  # warm-up: models load, numba compiles
        with tempfile.TemporaryDirectory() as tmp:
            clip, out = Path(tmp) / "clip.mp4", Path(tmp) / "out.mp4"
            cut_clip(SAMPLE, clip, args.frame)
            config = PipelineConfig(device="cpu")
            process_video(clip, out, "deidentify", config, overwrite=True)  # warm-up
            app_s, api_s = [], []
            for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
                t = time.perf_counter()
                post(base + "/api/preview", request)
                app_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                process_video(clip, out, "deidentify", config, overwrite=True)
                api_s.append(time.perf_counter() - t)
        time.sleep(1.0)
        idle_warm = rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    app_t, api_t = statistics.median(app_s), statistics.median(api_s)
    print(f"preview of frame {args.frame} ({args.repeats} runs, median): app over HTTP {app_t:.3f} s, "
          f"Python API {api_t:.3f} s")
    print(f"app idle RSS: {idle_start:.0f} MiB after start-up, {idle_warm:.0f} MiB after previews (models loaded)")
    lines = [goal("app_preview_latency_ratio", app_t / api_t, "<=", 1.5),
             goal("app_idle_rss_mib", idle_start, "<=", 300)]
    print("\n".join(lines))
    return 0 if all_pass(lines) else 1


if __name__ == "__main__":
    sys.exit(main())
