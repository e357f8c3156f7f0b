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
from reenact.models.readers.limits import MAX_TOTAL_BYTES, tensor_nbytes

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


#: Most entries a string-list attribute (``layer_names``, ``weight_names``) may have.
MAX_ATTR_ITEMS = 100_000
#: HDF5 filters a weights file may use: deflate (gzip), shuffle, fletcher32, lzf.
_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
#: Largest ratio of a filtered dataset's size to its stored bytes (deflate tops out near 1032).
_MAX_RATIO = 1100


def _child(group: Any, name: str, path: Path) -> Any:
    """The object at ``name`` (``a/b`` nests) below ``group``, through hard links only.

    An HDF5 soft link (which can loop) or external link (which opens another file) is a
    :class:`ModelError`: Keras files hold neither. None when the name is absent.
    """
    import h5py

    node = group
    for part in name.split("/"):
        if not part:
            continue
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise ModelError(
                f"{path}: {name!r} is an external link to {link.filename}:{link.path}; links to other files "
                "are refused (Keras weights files hold none): re-save the weights with Keras"
            )
        if isinstance(link, h5py.SoftLink):
            raise ModelError(
                f"{path}: {name!r} is a soft link to {link.path}; links are refused (Keras weights files "
                "hold none, and they can loop): re-save the weights with Keras"
            )
        node = node[part]
    return node


def _attr(obj: Any, name: str, path: Path, file_length: int) -> Any:
    """Attribute ``name`` of ``obj`` (None when absent), its size checked before it is read."""
    import h5py

    if name not in obj.attrs:
        return None
    aid = h5py.h5a.open(obj.id, name.encode("utf-8"))
    count = 1
    for d in aid.shape or ():
        count *= int(d)
    if count > MAX_ATTR_ITEMS or count * aid.dtype.itemsize > max(file_length, 1 << 20):
        raise ModelError(
            f"{path}: attribute {name!r} declares {count:,} entries of {aid.dtype.itemsize} bytes; "
            "refusing to read it (a corrupt or hostile file: get it again from its publisher)"
        )
    return obj.attrs[name]


def _check_dataset(dataset: Any, name: str, path: Path, file_length: int) -> int:
    """The bytes ``dataset`` will take, after checking its dtype, shape and storage.

    Refused (:class:`ModelError`): non-numeric dtypes, external or virtual storage (which
    read other files), shapes over :data:`~reenact.models.readers.limits.MAX_TENSOR_BYTES`,
    storage never written (HDF5 would return its fill value at the declared size), stored
    bytes outside the file, unknown filters and filtered data that would expand more than
    deflate can.
    """
    import h5py

    dtype = dataset.dtype
    if dtype.kind not in "fiub" or dtype.fields is not None or dtype.subdtype is not None:
        raise ModelError(f"{path}: dataset {name!r} has dtype {dtype}, not a numeric weight tensor; refused")
    dcpl = dataset.id.get_create_plist()
    layout = dcpl.get_layout()
    if dcpl.get_external_count() > 0:
        target = dcpl.get_external(0)[0].decode("utf-8", "replace")
        raise ModelError(
            f"{path}: dataset {name!r} keeps its data in another file ({target}); external storage is refused "
            "(it would read any file): re-save the weights with Keras"
        )
    if layout not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
        raise ModelError(f"{path}: dataset {name!r} uses HDF5 layout {layout} (virtual?); refused")
    nbytes = tensor_nbytes(dataset.shape or (), dtype.itemsize, str(path), name)
    stored = int(dataset.id.get_storage_size())
    if stored > file_length:
        raise ModelError(f"{path}: dataset {name!r} claims {stored:,} stored bytes in a file of {file_length:,}; refused")
    if nbytes == 0:
        return 0
    if layout == h5py.h5d.CHUNKED:
        chunks = dataset.chunks
        expected = 1
        for d, c in zip(dataset.shape, chunks, strict=True):
            expected *= -(-int(d) // int(c))
        if int(dataset.id.get_num_chunks()) < expected:
            raise ModelError(
                f"{path}: dataset {name!r} ({list(dataset.shape)}) was never fully written (its data would be "
                "fill values); refused: the file is incomplete or hostile"
            )
        codes = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        unknown = [c for c in codes if c not in _FILTERS]
        if unknown:
            raise ModelError(f"{path}: dataset {name!r} uses HDF5 filter(s) {unknown}; only {sorted(_FILTERS.values())} are read")
        limit = stored * _MAX_RATIO if codes else stored
        if nbytes > limit:
            raise ModelError(
                f"{path}: dataset {name!r} would expand {stored:,} stored bytes to {nbytes:,}; refusing to read it "
                "(a compression bomb or a corrupt file)"
            )
    elif stored < nbytes:
        raise ModelError(
            f"{path}: dataset {name!r} ({list(dataset.shape)}, {nbytes:,} bytes) holds only {stored:,} bytes: it "
            "was never written; refused (the file is incomplete or hostile)"
        )
    return nbytes


def read_keras_layers(path: str | Path) -> list[KerasLayer]:
    """Every layer of a Keras HDF5 weights or full-model file, in the file's load order.

    Raises :class:`ModelError` when the file is missing, not HDF5, has no ``layer_names``
    (not a Keras file) or lists a layer or weight that has no dataset. Every dataset is
    checked (:func:`_check_dataset`; their sum against
    :data:`~reenact.models.readers.limits.MAX_TOTAL_BYTES`) before any is read, and only
    hard links are followed.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Keras weights file {path} does not exist")
    file_length = path.stat().st_size
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ModelError(f"{path} is not a readable HDF5 file: {exc}") from exc
    layers: list[tuple[str, list[tuple[str, Any]]]] = []
    total = 0
    with handle:
        try:
            root: Any = handle
            if "layer_names" not in root.attrs:
                model_weights = _child(root, "model_weights", path)
                if model_weights is not None:
                    root = model_weights  # full-model file from model.save()
            if "layer_names" not in root.attrs:
                raise ModelError(
                    f"{path} has no 'layer_names' attribute at / or /model_weights; it is not a "
                    "Keras HDF5 weights or model file"
                )
            for layer_name in _strings(_attr(root, "layer_names", path, file_length), "layer_names", path):
                group = _child(root, layer_name, path)
                if not isinstance(group, h5py.Group):
                    raise ModelError(f"{path}: layer {layer_name!r} is listed but has no group")
                raw_names = _attr(group, "weight_names", path, file_length)
                names = _strings([] if raw_names is None else raw_names, f"{layer_name}/weight_names", path)
                datasets: list[tuple[str, Any]] = []
                for weight_name in names:
                    dataset = _child(group, weight_name, path)
                    if dataset is None:
                        raise ModelError(
                            f"{path}: weight {weight_name!r} of layer {layer_name!r} is listed but "
                            "has no dataset"
                        )
                    if not isinstance(dataset, h5py.Dataset):
                        raise ModelError(f"{path}: {layer_name}/{weight_name} is not a dataset")
                    total += _check_dataset(dataset, f"{layer_name}/{weight_name}", path, file_length)
                    datasets.append((weight_name, dataset))
                layers.append((layer_name, datasets))
            if total > MAX_TOTAL_BYTES:
                raise ModelError(
                    f"{path}: its weights add up to {total:,} bytes, more than the {MAX_TOTAL_BYTES >> 20} MiB a "
                    "model file may hold; refusing to read them (a corrupt or hostile file: get it again from its publisher)"
                )
            return [KerasLayer(name, tuple((w, np.asarray(d[()])) for w, d in datasets)) for name, datasets in layers]
        except (OSError, RuntimeError, KeyError, ValueError) as exc:  # h5py's errors for damaged files
            raise ModelError(f"{path}: the HDF5 file is damaged and cannot be read ({type(exc).__name__}: {exc})") from exc


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
