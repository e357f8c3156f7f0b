"""The training set: images, z and w sampled from a frozen generator, stored in shards.

Layout of a dataset folder::

    manifest.json           what was sampled (generator, seed, truncation, resolution) and
                            one entry per finished shard: file, count, bytes, sha256
    shard_00000.safetensors images uint8 [n,R,R,3] RGB, w float32 [n,w_dim], z float32 [n,z_dim]

Generation is deterministic by seed (shard k draws its z from ``seed`` and ``k`` alone),
resumable (finished shards are checked and kept) and atomic per shard (temporary file,
then rename, then the manifest).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from reenact.errors import InputError, TrainingError
from reenact.train.config import DatasetConfig

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "reenact-train-dataset"
VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.safetensors"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def _describe(G: Any, config: DatasetConfig, generator_name: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "generator": generator_name,
        "resolution": int(G.img_resolution),
        "w_dim": int(G.w_dim),
        "z_dim": int(G.z_dim),
        "num_images": config.num_images,
        "shard_size": config.shard_size,
        "truncation_psi": config.truncation_psi,
        "seed": config.seed,
    }


@torch.no_grad()
def sample_batch(G: Any, z: torch.Tensor, truncation_psi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``z [B,z_dim]`` -> (images uint8 ``[B,R,R,3]`` RGB, w ``[B,w_dim]``) from generator ``G``."""
    ws = G.mapping(z, None, truncation_psi=truncation_psi)
    img = G.synthesis(ws, noise_mode="const")
    frames = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return frames, ws[:, 0]


def make_dataset(
    G: Any,
    config: DatasetConfig,
    out_dir: str | Path | None = None,
    generator_name: str = "",
    progress: bool = True,
) -> Path:
    """Sample ``config.num_images`` images with their z and w into ``out_dir`` (default ``config.path``).

    Resumes a partial folder made with the same settings; a folder made with other settings
    is refused (:class:`InputError`). Returns the manifest path.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    root = Path(out_dir if out_dir is not None else config.path)
    root.mkdir(parents=True, exist_ok=True)
    wanted = _describe(G, config, generator_name)
    manifest_path = root / MANIFEST
    shards: dict[str, dict[str, Any]] = {}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{manifest_path} is unreadable ({exc}); delete the folder or pick another") from exc
        differing = [k for k, v in wanted.items() if old.get(k) != v]
        if differing:
            raise InputError(
                f"{root} holds a dataset made with other settings ({', '.join(differing)}); "
                "use another folder or delete it"
            )
        for entry in old.get("shards", []):
            path = root / entry["file"]
            if path.is_file() and path.stat().st_size == entry["bytes"] and _sha256(path) == entry["sha256"]:
                shards[entry["file"]] = entry
            else:
                logger.warning("shard %s is missing or corrupt; sampling it again", path)
    num_shards = -(-config.num_images // config.shard_size)
    device = next(iter(G.parameters())).device
    bar = tqdm(total=config.num_images, unit="img", disable=not progress, desc="make-dataset")
    for k in range(num_shards):
        count = min(config.shard_size, config.num_images - k * config.shard_size)
        name = _shard_name(k)
        if name in shards:
            bar.update(count)
            continue
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + k)
        z = torch.randn(count, int(G.z_dim), generator=gen)
        images, ws = [], []
        for start in range(0, count, config.batch_size):
            frames, w = sample_batch(G, z[start : start + config.batch_size].to(device), config.truncation_psi)
            images.append(frames.cpu())
            ws.append(w.float().cpu())
            bar.update(frames.shape[0])
        tmp = root / (name + ".tmp")
        save_file({"images": torch.cat(images), "w": torch.cat(ws), "z": z}, str(tmp))
        tmp.replace(root / name)
        path = root / name
        shards[name] = {"file": name, "count": count, "bytes": path.stat().st_size, "sha256": _sha256(path)}
        _write_json(manifest_path, {**wanted, "shards": [shards[_shard_name(i)] for i in range(k + 1) if _shard_name(i) in shards]})
    bar.close()
    _write_json(manifest_path, {**wanted, "complete": True, "shards": [shards[_shard_name(i)] for i in range(num_shards)]})
    return manifest_path


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset folder's manifest says."""

    root: Path
    resolution: int
    w_dim: int
    z_dim: int
    num_images: int
    generator: str


class ShardDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random access to a dataset folder: item ``i`` is (image uint8 ``[3,R,R]``, w ``[w_dim]``).

    Opening checks the manifest and every shard (present, complete size, readable header of
    the right shapes; with ``verify=True`` also the sha256) and names the first bad shard
    in a :class:`TrainingError`.
    """

    def __init__(self, root: str | Path, verify: bool = False) -> None:
        from safetensors import SafetensorError, safe_open

        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise TrainingError(f"{self.root} is not a dataset folder ({MANIFEST} missing); run `reenact-train make-dataset`")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainingError(f"{manifest_path} is corrupt: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise TrainingError(f"{manifest_path} is not a {FORMAT} manifest")
        if not manifest.get("complete"):
            raise TrainingError(f"{self.root} is incomplete; rerun `reenact-train make-dataset` to finish it")
        res, w_dim = int(manifest["resolution"]), int(manifest["w_dim"])
        self.info = DatasetInfo(self.root, res, w_dim, int(manifest["z_dim"]), int(manifest["num_images"]), str(manifest["generator"]))
        self._files: list[Path] = []
        self._offsets: list[int] = []
        total = 0
        for entry in manifest["shards"]:
            path = self.root / entry["file"]
            if not path.is_file():
                raise TrainingError(f"dataset shard {path} is missing; rerun `reenact-train make-dataset` to resample it")
            if path.stat().st_size != entry["bytes"]:
                raise TrainingError(
                    f"dataset shard {path} is corrupt ({path.stat().st_size} bytes, manifest says {entry['bytes']}); "
                    "rerun `reenact-train make-dataset` to resample it"
                )
            if verify and _sha256(path) != entry["sha256"]:
                raise TrainingError(f"dataset shard {path} is corrupt (sha256 mismatch); rerun `reenact-train make-dataset`")
            try:
                with safe_open(str(path), framework="pt") as fh:
                    img_shape = fh.get_slice("images").get_shape()
                    w_shape = fh.get_slice("w").get_shape()
            except (SafetensorError, OSError, KeyError, ValueError) as exc:
                raise TrainingError(f"dataset shard {path} is corrupt ({exc}); rerun `reenact-train make-dataset`") from exc
            n = int(entry["count"])
            if list(img_shape) != [n, res, res, 3] or list(w_shape) != [n, w_dim]:
                raise TrainingError(f"dataset shard {path} holds {img_shape}/{w_shape}, manifest says {n} images of {res} px")
            self._files.append(path)
            self._offsets.append(total)
            total += n
        if total != self.info.num_images:
            raise TrainingError(f"{self.root}: shards hold {total} images, manifest says {self.info.num_images}")
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return self.info.num_images

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles are per process (DataLoader workers)
        return state

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        import bisect

        k = bisect.bisect_right(self._offsets, index) - 1
        return k, index - self._offsets[k]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors import safe_open

        k, j = self._locate(int(index))
        handle = self._handles.get(k)
        if handle is None:
            handle = safe_open(str(self._files[k]), framework="pt")
            self._handles[k] = handle
        image = handle.get_slice("images")[j : j + 1][0].permute(2, 0, 1).contiguous()
        w = handle.get_slice("w")[j : j + 1][0]
        return image, w


class StepBatchSampler(Sampler[list[int]]):
    """Batches of indices for steps ``start_step .. steps-1``, the same for any resume point.

    Global step ``s`` takes positions ``[s*B*W, (s+1)*B*W)`` of an endless sequence of
    seeded permutations of ``indices`` (one per epoch, seeded by ``seed + epoch``); rank
    ``r`` of ``W`` takes its ``B`` of them. Same seed -> same batches, whether a run was
    interrupted or not.
    """

    def __init__(self, indices: list[int], batch_size: int, seed: int, start_step: int, steps: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if not indices:
            raise TrainingError("no training images left (train_data_size / eval_size leave none)")
        self.indices = indices
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.steps = steps
        self.rank = rank
        self.world_size = world_size
        self._epoch = -1
        self._perm: list[int] = []

    def _position(self, pos: int) -> int:
        n = len(self.indices)
        epoch, offset = divmod(pos, n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = torch.randperm(n, generator=gen).tolist()
            self._epoch = epoch
        return self.indices[self._perm[offset]]

    def batch_for_step(self, step: int) -> list[int]:
        base = (step * self.world_size + self.rank) * self.batch_size
        return [self._position(base + i) for i in range(self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps):
            yield self.batch_for_step(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)
