"""make-dataset: deterministic, resumable shards; damaged folders named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reenact.errors import InputError, TrainingError
from reenact.train.config import DatasetConfig
from reenact.train.dataset import ShardDataset, StepBatchSampler, make_dataset


def _small(root: Path, **kw: object) -> DatasetConfig:
    return DatasetConfig(path=str(root), **{"num_images": 10, "shard_size": 4, "batch_size": 4, "seed": 3, **kw})  # type: ignore[arg-type]


def test_dataset_is_deterministic_resumable_and_readable(tmp_path: Path, tiny_generator_32: torch.nn.Module) -> None:
    G = tiny_generator_32
    make_dataset(G, _small(tmp_path / "a"), progress=False)
    make_dataset(G, _small(tmp_path / "b"), progress=False)
    shards = sorted(p.name for p in (tmp_path / "a").glob("shard_*.safetensors"))
    assert shards == ["shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors"]
    for name in shards:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # an interrupted run: one shard lost; the rerun resamples exactly it
    original = (tmp_path / "a" / shards[1]).read_bytes()
    (tmp_path / "a" / shards[1]).unlink()
    before = (tmp_path / "a" / shards[0]).stat().st_mtime_ns
    make_dataset(G, _small(tmp_path / "a"), progress=False)
    assert (tmp_path / "a" / shards[1]).read_bytes() == original
    assert (tmp_path / "a" / shards[0]).stat().st_mtime_ns == before
    data = ShardDataset(tmp_path / "a", verify=True)
    assert len(data) == 10
    image, w = data[9]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and w.shape == (G.w_dim,)
    # the stored image is what the generator renders from the stored w
    with torch.no_grad():
        again = G.synthesis(w[None, None].expand(1, G.num_ws, G.w_dim), noise_mode="const")
    again_u8 = (again[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    assert (again_u8.int() - image.int()).abs().max() <= 1
    with pytest.raises(InputError, match="other settings.*seed"):
        make_dataset(G, _small(tmp_path / "a", seed=4), progress=False)


def test_missing_or_corrupt_shard_is_named(tmp_path: Path, tiny_generator_32: torch.nn.Module) -> None:
    make_dataset(tiny_generator_32, _small(tmp_path), progress=False)
    shard = tmp_path / "shard_00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingError, match="shard_00001.safetensors is corrupt"):
        ShardDataset(tmp_path)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    ShardDataset(tmp_path)  # same size: only the checksum notices
    with pytest.raises(TrainingError, match="shard_00001.safetensors is corrupt.*sha256"):
        ShardDataset(tmp_path, verify=True)
    shard.unlink()
    with pytest.raises(TrainingError, match="shard_00001.safetensors is missing"):
        ShardDataset(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest.pop("complete")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match="incomplete"):
        ShardDataset(tmp_path)
    with pytest.raises(TrainingError, match="manifest.json missing"):
        ShardDataset(tmp_path / "nowhere")


def test_step_sampler_same_batches_after_resume_and_disjoint_ranks() -> None:
    indices = list(range(10))
    full = list(StepBatchSampler(indices, 3, seed=1, start_step=0, steps=8))
    resumed = list(StepBatchSampler(indices, 3, seed=1, start_step=5, steps=8))
    assert resumed == full[5:]
    first_epoch = [i for batch in full for i in batch][:10]
    assert sorted(first_epoch) == indices
    r0 = list(StepBatchSampler(indices, 2, seed=1, start_step=0, steps=2, rank=0, world_size=2))
    r1 = list(StepBatchSampler(indices, 2, seed=1, start_step=0, steps=2, rank=1, world_size=2))
    assert not set(r0[0]) & set(r1[0])
