"""Training benchmarks for the tiny configuration (CPU) or any training config.

1. Training steps per second fed by the real data loader (shards on disk, DataLoader with
   ``run.num_workers`` workers) against the same steps fed from tensors already in memory.
   Goal: ratio >= 0.9 (the loader is never the bottleneck).
2. ``make-dataset`` images per second (sampling, uint8 conversion, shard writing, sha256)
   against the bare generator forward (mapping + synthesis) at the same batch size.
   Goal: ratio >= 0.8.

Both sides of each comparison run in this process, alternately, ``--repeats`` times; the
best time of each side is compared (robust to other load on a shared machine).

    .venv/bin/python bench/train.py [--config configs/train_tiny.yaml] [--steps 20] [--images 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testing.fixtures import fixtures_dir  # noqa: E402
from testing.goals import goal  # noqa: E402


def bench_loader(config_path: Path, overrides: dict[str, object], steps: int, repeats: int) -> float:
    from reenact.train.config import load_train_config
    from reenact.train.dataset import make_dataset
    from reenact.train.trainer import Trainer, build_generator

    with tempfile.TemporaryDirectory() as tmp:
        config = load_train_config(config_path, {**overrides, "dataset.path": f"{tmp}/ds",
                                                 "run.results_dir": f"{tmp}/run", "run.progress": False,
                                                 "run.eval_every": 10**9, "run.checkpoint_every": 10**9})
        G = build_generator(config.generator)
        make_dataset(G, config.dataset, progress=False)
        trainer = Trainer(config, G=G)
        warm = 2
        sampler_batches = [trainer.batches(0, warm + steps).batch_sampler.batch_for_step(s)  # type: ignore[union-attr]
                           for s in range(warm + steps)]
        memory = [
            (torch.stack([trainer.dataset[i][0] for i in b]), torch.stack([trainer.dataset[i][1] for i in b]))
            for b in sampler_batches
        ]
        best_loader, best_memory = float("inf"), float("inf")
        for _ in range(repeats):
            # real loader: DataLoader over the shards (workers start inside the timed region)
            trainer.step = 0
            for i, (images, w) in enumerate(trainer.batches(0, warm + steps)):
                if i == warm:
                    start = time.perf_counter()
                trainer.train_step(images, w)
            best_loader = min(best_loader, time.perf_counter() - start)
            trainer.step = 0
            for i, (images, w) in enumerate(memory):
                if i == warm:
                    start = time.perf_counter()
                trainer.train_step(images, w)
            best_memory = min(best_memory, time.perf_counter() - start)
    sps_loader, sps_memory = steps / best_loader, steps / best_memory
    print(f"train steps/s: real loader {sps_loader:.3f} (workers={config.run.num_workers}), "
          f"in memory {sps_memory:.3f}, batch {config.run.batch_size}, {steps} steps, best of {repeats}")
    return sps_loader / sps_memory


def bench_make_dataset(config_path: Path, overrides: dict[str, object], images: int, repeats: int) -> float:
    from dataclasses import replace

    from reenact.train.config import load_train_config
    from reenact.train.dataset import make_dataset
    from reenact.train.trainer import build_generator

    config = load_train_config(config_path, overrides)
    G = build_generator(config.generator)
    ds = replace(config.dataset, num_images=images, shard_size=min(images, config.dataset.shard_size))
    bs = ds.batch_size
    z = torch.randn(images, int(G.z_dim), generator=torch.Generator().manual_seed(0))
    best_make, best_bare = float("inf"), float("inf")
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            make_dataset(G, ds, out_dir=Path(tmp) / f"ds{r}", progress=False)
            best_make = min(best_make, time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, images, bs):
                G.synthesis(G.mapping(z[i : i + bs], None, truncation_psi=ds.truncation_psi), noise_mode="const")
        best_bare = min(best_bare, time.perf_counter() - start)
    ips_make, ips_bare = images / best_make, images / best_bare
    print(f"images/s: make-dataset {ips_make:.1f}, bare generator {ips_bare:.1f} "
          f"(batch {bs}, {images} images, {G.img_resolution} px, best of {repeats})")
    return ips_make / ips_bare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "train_tiny.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="override run.num_workers")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (run.num_threads)")
    args = parser.parse_args()
    found = fixtures_dir()
    if "REENACT_FIXTURES" not in os.environ and found is not None:
        os.environ["REENACT_FIXTURES"] = str(found)
    torch.set_num_threads(args.threads)
    overrides: dict[str, object] = {"run.num_threads": args.threads}
    if args.workers is not None:
        overrides["run.num_workers"] = args.workers
    loader_ratio = bench_loader(args.config, overrides, args.steps, args.repeats)
    print(f"ratio real loader / in memory: {loader_ratio:.3f}")
    make_ratio = bench_make_dataset(args.config, overrides, args.images, args.repeats)
    print(f"ratio make-dataset / bare generator: {make_ratio:.3f}")
    print(goal("train_loader_vs_memory", loader_ratio, ">=", 0.9))
    print(goal("make_dataset_vs_generator", make_ratio, ">=", 0.8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
