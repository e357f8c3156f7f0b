"""TensorFlow object-checkpoint reader against the authors' checkpoints (shared/reference/paper)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reenact.errors import ModelError
from reenact.models.readers.tf_checkpoint import (
    TFCheckpoint,
    crc32c,
    read_checkpoint_by_full_name,
)

NAME = "stylegan_G_32x32_synthesis"


@pytest.fixture(scope="module")
def paper(paper_reference: Path) -> Path:
    return paper_reference


def _copy_ckpt(src: Path, dest: Path, name: str = NAME) -> Path:
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copyfile(src / f"{name}{suffix}", dest / f"{name}{suffix}")
    return dest / name


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    big = np.arange(10000, dtype=np.uint8).tobytes()  # compiled path agrees with the byte loop
    assert crc32c(big) == crc32c(np.frombuffer(big, np.uint8)[:5000].tobytes() + big[5000:])


@pytest.mark.parametrize("res", [32, 256])
def test_every_variable_by_full_name_matches_the_listing(paper: Path, res: int) -> None:
    prefix = paper / f"stylegan_G_{res}x{res}_synthesis"
    listing = json.loads(Path(f"{prefix}.tf.variables.json").read_text())
    arrays = read_checkpoint_by_full_name(prefix)
    expected = {v["full_name"]: v for v in listing["variables"] if "full_name" in v}
    assert set(arrays) == set(expected)
    for name, var in expected.items():
        assert list(arrays[name].shape) == var["shape"], name
        assert arrays[name].dtype == np.float32
        # every synthetic tensor has a single magnitude: catches swapped or misread tensors
        assert abs(float(np.abs(arrays[name]).max()) - var["fill"]["scale"]) < 1e-6, name
        assert abs(float(np.abs(arrays[name]).min()) - var["fill"]["scale"]) < 1e-6, name


def test_index_lists_keys_and_object_graph(paper: Path) -> None:
    ckpt = TFCheckpoint(paper / NAME)
    listing = json.loads((paper / f"{NAME}.tf.variables.json").read_text())
    assert sorted(ckpt.entries) == [v["key"] for v in listing["variables"]]
    names = ckpt.full_names()
    assert names["layer_with_weights-0/const/.ATTRIBUTES/VARIABLE_VALUE"] == "G_synthesis/4x4/Const/const"


def test_truncated_data_shard_is_refused(paper: Path, tmp_path: Path) -> None:
    prefix = _copy_ckpt(paper, tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated"):
        read_checkpoint_by_full_name(prefix)


def test_corrupt_data_fails_its_checksum(paper: Path, tmp_path: Path) -> None:
    prefix = _copy_ckpt(paper, tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum mismatch"):
        read_checkpoint_by_full_name(prefix)


def test_missing_data_shard_is_named(paper: Path, tmp_path: Path) -> None:
    shutil.copyfile(paper / f"{NAME}.index", tmp_path / f"{NAME}.index")
    with pytest.raises(ModelError, match=r"data-00000-of-00001 is missing"):
        read_checkpoint_by_full_name(tmp_path / NAME)


@pytest.mark.parametrize("content", [b"", b"not a table at all" * 10, b"\x89HDF\r\n\x1a\n" + bytes(100)])
def test_index_that_is_not_a_table_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x.index").write_bytes(content)
    (tmp_path / "x.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(ModelError, match="not a TensorFlow checkpoint index"):
        TFCheckpoint(tmp_path / "x")


def test_corrupt_index_block_is_refused(paper: Path, tmp_path: Path) -> None:
    prefix = _copy_ckpt(paper, tmp_path)
    index = Path(f"{prefix}.index")
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum mismatch in a table block"):
        TFCheckpoint(prefix)


def test_a_tensor_is_read_by_slice_not_with_its_shard(tmp_path: Path) -> None:
    """One 16-byte tensor at the start of a 2 GiB (sparse) shard: read without copying the shard."""
    import tracemalloc

    from reenact.models.readers.tf_checkpoint import read_tf_checkpoint
    from testing.hostile_files import make_tf_checkpoint

    prefix = make_tf_checkpoint(tmp_path, (2, 2), 16, shard_bytes=2 << 30)
    tracemalloc.start()
    try:
        arrays = read_tf_checkpoint(prefix)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    w = arrays["w/.ATTRIBUTES/VARIABLE_VALUE"]
    assert w.dtype == np.float32 and w.shape == (2, 2) and not w.any()
    assert peak < 1 << 20, peak


def test_a_tensor_past_the_end_of_its_shard_is_a_model_error(tmp_path: Path) -> None:
    from reenact.models.readers.tf_checkpoint import read_tf_checkpoint
    from testing.hostile_files import make_tf_checkpoint

    prefix = make_tf_checkpoint(tmp_path, (4, 4), 64, shard_bytes=32)
    with pytest.raises(ModelError, match="is truncated"):
        read_tf_checkpoint(prefix)
