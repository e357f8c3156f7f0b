"""The Keras HDF5 reader: both layouts, both string encodings, load order, strictness."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from reenact.errors import ModelError
from reenact.models.readers.keras_h5 import (
    match_layers,
    read_keras_layers,
    read_keras_weights,
    weighted_layers,
)


def _write(path: Path, *, full_model: bool, fixed_length: bool) -> dict[str, np.ndarray]:
    """A Keras-layout file whose layer order differs from the alphabetical group order."""
    rng = np.random.default_rng(0)
    layers = {
        "conv2d_8": {"conv2d_8/kernel:0": rng.standard_normal((3, 3, 3, 4)).astype(np.float32)},
        "input_1": {},
        "conv2d_6": {"conv2d_6/kernel:0": rng.standard_normal((1, 1, 4, 2)).astype(np.float32)},
        "block/dense": {
            "block/dense/kernel:0": rng.standard_normal((2, 5)).astype(np.float32),
            "block/dense/bias:0": rng.standard_normal((5,)).astype(np.float32),
        },
    }

    def strings(items: list[str]) -> np.ndarray:
        if fixed_length:
            return np.array([s.encode() for s in items], dtype=f"S{max(map(len, items))}")
        return np.array(items, dtype=h5py.string_dtype("utf-8"))

    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        root.attrs["layer_names"] = strings(list(layers))
        for layer, weights in layers.items():
            group = root.create_group(layer)
            group.attrs["weight_names"] = strings(list(weights)) if weights else np.zeros((0,))
            for name, value in weights.items():
                group.create_dataset(name, data=value, compression="gzip", shuffle=True)
    return {name: value for weights in layers.values() for name, value in weights.items()}


@pytest.mark.parametrize("full_model", [False, True])
@pytest.mark.parametrize("fixed_length", [False, True])
def test_reads_in_file_order(tmp_path: Path, full_model: bool, fixed_length: bool) -> None:
    path = tmp_path / "w.h5"
    expected = _write(path, full_model=full_model, fixed_length=fixed_length)
    weights = read_keras_weights(path)
    assert list(weights) == list(expected)  # layer_names order, not alphabetical
    for name, value in expected.items():
        np.testing.assert_array_equal(weights[name], value)
    layers = read_keras_layers(path)
    assert [layer.name for layer in layers] == ["conv2d_8", "input_1", "conv2d_6", "block/dense"]
    assert [layer.name for layer in weighted_layers(layers)] == ["conv2d_8", "conv2d_6", "block/dense"]
    assert layers[3].roles == ("kernel", "bias")


def test_match_layers_accepts_offset_names_and_rejects_another_network(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    _write(path, full_model=False, fixed_length=False)
    layers = read_keras_layers(path)
    spec = [
        (("kernel",), ((3, 3, 3, 4),)),
        (("kernel",), ((1, 1, 4, 2),)),
        (("kernel", "bias"), ((2, 5), (5,))),
    ]
    assert [layer.name for layer in match_layers(layers, spec, path, "net")][0] == "conv2d_8"
    wrong_shape = [spec[0], (("kernel",), ((1, 1, 4, 3),)), spec[2]]
    with pytest.raises(ModelError, match=r"conv2d_6/kernel:0.*\[1, 1, 4, 2\].*\[1, 1, 4, 3\]"):
        match_layers(layers, wrong_shape, path, "net")
    with pytest.raises(ModelError, match="3 layers with weights, but net has 2"):
        match_layers(layers, spec[:2], path, "net")
    with pytest.raises(ModelError, match="block/dense/kernel:0"):
        match_layers(layers, [spec[0], spec[1], (("gamma", "beta"), ((5,), (5,)))], path, "net")


def test_not_a_keras_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ModelError, match="layer_names"):
        read_keras_weights(plain)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a readable HDF5"):
        read_keras_weights(text)
    with pytest.raises(ModelError, match="does not exist"):
        read_keras_weights(tmp_path / "missing.h5")


def test_listed_weight_without_dataset(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array(["dense"], dtype=h5py.string_dtype())
        group = f.create_group("dense")
        group.attrs["weight_names"] = np.array(["dense/kernel:0"], dtype=h5py.string_dtype())
    with pytest.raises(ModelError, match="dense/kernel:0"):
        read_keras_weights(path)
