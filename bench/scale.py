"""Past one machine: the same clips locally and through S3 on a multi-node Ray cluster, in one run.

1. 8 short clips (cut from the fixture videos) are anonymised with ``deidentify --method
   blur --pack tiny`` from a local folder to a local folder with ``--workers 2`` (two
   processes of one thread each, as the cluster's two 1-CPU worker nodes; ``--local-workers
   1 2`` takes the faster of both): the local wall time.
2. The same clips are put in an S3 bucket (moto's server on 127.0.0.1, authentication on)
   and anonymised from ``s3://.../in/`` to ``s3://.../out/`` on a Ray cluster started on
   this machine: a head (0 CPUs) and two worker nodes of 1 CPU each, separate processes
   with their own raylets, scratch folders and model caches. The wall time is the
   command's, from its start to the summary written (the cluster is already running, as
   a real one would be).
   goal s3_cluster_overhead: cluster wall / local wall <= 1.25.
3. Per file, from the run's summary: fetch and upload seconds (transfer), model check on
   the node, pipeline seconds; and the scheduling overhead per file: the worker time not
   spent in a job (worker start-up, dispatch, driver listing) shared over the files.
4. The per-frame cost of the pipeline on one CPU thread (task seconds / frames), the
   input for the README's estimate of a large archive.

Run: ``python bench/scale.py [--clips 8] [--frames 8] [--local-workers 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reenact.cli import deidentify_main  # noqa: E402
from testing.cluster import environment, ray_cluster, s3_server  # noqa: E402
from testing.fixtures import fixtures_dir  # noqa: E402
from testing.media import cut_clip  # noqa: E402

SETTINGS = ["--method", "blur", "--pack", "tiny", "--device", "cpu", "--quiet"]
BUCKET = "reenact-bench"


def goal(name: str, measured: float, op: str, target: float) -> str:
    ok = measured <= target if op == "<=" else measured >= target
    return f"goal {name}: {measured:.3f} (target {op} {target}) {'PASS' if ok else 'FAIL'}"


def make_clips(root: Path, count: int, frames: int) -> list[Path]:
    fixtures = fixtures_dir()
    if fixtures is None:
        raise SystemExit("the fixture videos were not found: set REENACT_FIXTURES")
    videos = sorted((fixtures / "videos").glob("*.mp4"))
    made = []
    for i in range(count):
        made.append(cut_clip(videos[i % len(videos)], root / f"clip{i:02d}.mp4", frames))
    return made


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    status = deidentify_main(args)
    if status != 0:
        raise SystemExit(f"deidentify {' '.join(args)} exited with {status}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--local-workers", type=int, nargs="+", default=[2],
                        help="local runs to take the fastest of (2: two processes, as the cluster's two nodes)")
    opts = parser.parse_args()
    import s3fs

    work = Path(tempfile.mkdtemp(prefix="reenact-scale-"))
    try:
        clips = work / "in"
        clips.mkdir()
        make_clips(clips, opts.clips, opts.frames)
        size = sum(p.stat().st_size for p in clips.iterdir())
        print(f"{opts.clips} clips of {opts.frames} frames, {size / 1e6:.1f} MB in all")
        local = {}
        for n in opts.local_workers:
            # one thread per process, as Ray gives each 1-CPU task (OMP_NUM_THREADS=1): without it two
            # local processes of two threads each on a busy 2-core machine measure oversubscription
            with environment({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}):
                local[n] = timed([str(clips), "-o", str(work / f"local{n}"), "--workers", str(n), *SETTINGS])
            print(f"local --workers {n} (1 thread each): {local[n]:.1f} s", flush=True)
        with s3_server((BUCKET,)) as s3, environment(s3.env):
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            fs.put(str(clips) + "/", f"{BUCKET}/in/", recursive=True)
            with ray_cluster(work / "nodes", s3.env, workers=2, cpus=1) as cluster:
                wall = timed([f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/out/", "--ray", cluster.address, *SETTINGS])
                summary = json.loads(fs.cat_file(f"{BUCKET}/out/reenact-summary.json"))
        files = [f for f in summary["files"] if f["status"] == "done"]
        assert len(files) == opts.clips, summary["counts"]
        print(f"S3 + Ray (head + 2 worker nodes x 1 CPU): {wall:.1f} s, nodes {summary['nodes']}")
        best = min(local.values())
        transfer = [f["fetch_s"] + f["upload_s"] for f in files]
        scheduling = (wall * 2 - sum(f["seconds"] for f in files)) / len(files)
        frames = sum(f["frames"] for f in files)
        per_frame = sum(f["task_s"] for f in files) / frames
        print(f"per file: transfer (fetch + upload) median {statistics.median(transfer):.3f} s, "
              f"max {max(transfer):.3f} s; model check on the node median "
              f"{statistics.median(f['prepare_s'] for f in files):.3f} s; pipeline median "
              f"{statistics.median(f['task_s'] for f in files):.2f} s")
        print(f"per file: scheduling overhead (worker time outside jobs: start-up, dispatch, listing) "
              f"{scheduling:.2f} s")
        print(f"pipeline per frame on one CPU thread (blur, tiny pack): {per_frame * 1000:.0f} ms "
              f"({frames} frames)")
        print(goal("s3_cluster_overhead", wall / best, "<=", 1.25))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
