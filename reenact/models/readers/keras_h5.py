"""Keras 2 HDF5 weight files, read with h5py (no TensorFlow).

Two layouts are accepted:

* a *weights* file (``model.save_weights('x.h5')``): the root group carries the
  ``layer_names`` attribute;
* a *full-model* file (``model.save('x.h5')``): the same structure sits under
  ``/model_weights``.

One group per layer (names containing ``/`` become nested groups); each layer group lists its
variables in the ``weight_names`` attribute and holds them as datasets at
``<layer group>/<weight name>``. Keras loads these files **by order** -- ``layer_names``
then each ``weight_names`` -- never by name, and automatic names such as ``conv2d_7`` come
from per-process counters, so they can be offset between the process that wrote a file and
ours. Mapping a file onto a network must therefore walk :func:`read_keras_layers` in order
and check kinds and shapes (:func:`match_layers`), not parse the ``_N`` suffixes.

String attributes are variable-length UTF-8 (``str``) in files from recent h5py/Keras and
fixed-length byte strings in older ones (h5py 2.10, Keras 2.3); both are accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reenact.errors import ModelError

__all__ = [
    "KerasLayer",
    "read_keras_layers",
    "read_keras_weights",
    "weighted_layers",
    "match_layers",
]


@dataclass(frozen=True)
class KerasLayer:
    """One layer group of a Keras HDF5 file, in file order.

    ``weights`` holds ``(weight name, array)`` pairs in ``weight_names`` order, e.g.
    ``("conv2d/kernel:0", array[3, 3, 3, 32])``; empty for layers without variables.
    """

    name: str
    weights: tuple[tuple[str, np.ndarray], ...]

    @property
    def roles(self) -> tuple[str, ...]:
        """The variable roles, e.g. ``("kernel",)`` or ``("beta", "moving_mean", ...)``."""
        return tuple(_role(name) for name, _ in self.weights)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(d) for d in array.shape) for _, array in self.weights)


def _role(weight_name: str) -> str:
    """``"block1/conv/kernel:0"`` -> ``"kernel"``."""
    last = weight_name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def _strings(value: Any, what: str, path: Path) -> list[str]:
    """Decode a string-list attribute written either as UTF-8 ``str`` or fixed-length bytes."""
    if isinstance(value, (str, bytes, np.bytes_, np.str_)):
        value = [value]
    arr = np.asarray(value)
    if arr.size == 0:
        return []  # Keras writes an empty float64 array for layers without weights
    if arr.ndim != 1:
        raise ModelError(f"{path}: attribute {what} has shape {arr.shape}, expected a list of strings")
    out: list[str] = []
    for item in arr.tolist():
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ModelError(f"{path}: attribute {what} is not UTF-8: {item!r}") from exc
        if not isinstance(item, str):
            raise ModelError(
                f"{path}: attribute {what} holds {type(item).__name__} {item!r}, expected strings; "
                "this is not a Keras HDF5 weights file"
            )
        out.append(item)
    return out


def read_keras_layers(path: str | Path) -> list[KerasLayer]:
    """Every layer of a Keras HDF5 weights or full-model file, in the file's load order.

    Raises :class:`ModelError` when the file is missing, not HDF5, has no ``layer_names``
    (not a Keras file) or lists a layer or weight that has no dataset.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Keras weights file {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ModelError(f"{path} is not a readable HDF5 file: {exc}") from exc
    layers: list[KerasLayer] = []
    with handle:
        root: Any = handle
        if "layer_names" not in root.attrs and "model_weights" in root:
            root = root["model_weights"]  # full-model file from model.save()
        if "layer_names" not in root.attrs:
            raise ModelError(
                f"{path} has no 'layer_names' attribute at / or /model_weights; it is not a "
                "Keras HDF5 weights or model file"
            )
        for layer_name in _strings(root.attrs["layer_names"], "layer_names", path):
            if layer_name not in root:
                raise ModelError(f"{path}: layer {layer_name!r} is listed but has no group")
            group = root[layer_name]
            names = _strings(group.attrs.get("weight_names", []), f"{layer_name}/weight_names", path)
            weights: list[tuple[str, np.ndarray]] = []
            for weight_name in names:
                if weight_name not in group:
                    raise ModelError(
                        f"{path}: weight {weight_name!r} of layer {layer_name!r} is listed but "
                        "has no dataset"
                    )
                dataset = group[weight_name]
                if not isinstance(dataset, h5py.Dataset):
                    raise ModelError(f"{path}: {layer_name}/{weight_name} is not a dataset")
                weights.append((weight_name, np.asarray(dataset[()])))
            layers.append(KerasLayer(layer_name, tuple(weights)))
    return layers


def read_keras_weights(path: str | Path) -> dict[str, np.ndarray]:
    """All variables of a Keras HDF5 file as ``{weight name: array}`` in load order.

    Keys are the ``weight_names`` entries, e.g. ``"conv2d/kernel:0"``. A name that occurs
    twice (only possible in a corrupt or hand-made file) is a :class:`ModelError`.
    """
    out: dict[str, np.ndarray] = {}
    for layer in read_keras_layers(path):
        for name, array in layer.weights:
            if name in out:
                raise ModelError(f"{path}: weight {name!r} occurs twice")
            out[name] = array
    return out


def weighted_layers(layers: Sequence[KerasLayer]) -> list[KerasLayer]:
    """The layers that own variables, in file order (what Keras' loader walks)."""
    return [layer for layer in layers if layer.weights]


def match_layers(
    layers: Sequence[KerasLayer],
    expected: Sequence[tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]],
    source: str | Path,
    network: str,
) -> list[KerasLayer]:
    """Check the weighted layers of a file against a network's layers, by order.

    ``expected`` lists, for every layer with variables in the network's load order, its
    variable roles (e.g. ``("kernel",)``, ``("beta", "moving_mean", "moving_variance")``)
    and shapes. Returns the file's weighted layers, position for position.

    Raises :class:`ModelError` naming the first mismatching tensor, or the count, when the
    file was written by another network.
    """
    got = weighted_layers(layers)
    if len(got) != len(expected):
        raise ModelError(
            f"{source} has {len(got)} layers with weights, but {network} has {len(expected)}; "
            f"the file is from another network (first layers in file: "
            f"{[layer.name for layer in got[:3]]})"
        )
    for index, (layer, (roles, shapes)) in enumerate(zip(got, expected, strict=True)):
        if layer.roles != tuple(roles):
            raise ModelError(
                f"{source}: layer #{index} {layer.name!r} has variables "
                f"{[name for name, _ in layer.weights]}, but {network} expects roles "
                f"{list(roles)} there; the file is from another network"
            )
        for (name, array), shape in zip(layer.weights, shapes, strict=True):
            if tuple(array.shape) != tuple(shape):
                raise ModelError(
                    f"{source}: tensor {name!r} (layer #{index} {layer.name!r}) has shape "
                    f"{list(array.shape)}, but {network} expects {list(shape)}; the file is "
                    "from another network or configuration"
                )
    return got
