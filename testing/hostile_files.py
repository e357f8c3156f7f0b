"""Tiny model files that ask for gigabytes (issue #17): made here, for tests and bench/hostile.py.

Each ``make_*`` writes one crafted file (or folder) under ``folder`` and returns its path;
:data:`CASES` maps a case name to ``(maker, loader)`` where ``loader(path)`` is what
reenact does with such a file. Every loader must refuse its file with a one-line
:class:`reenact.errors.ModelError` while staying far below a gigabyte of memory.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


def make_safetensors_generator(folder: Path, z_dim: int = 16000, w_dim: int = 16000, layers: int = 8) -> Path:
    """Our generator format with one tiny tensor and a config claiming huge widths."""
    from safetensors.torch import save_file

    config = {"z_dim": z_dim, "c_dim": 0, "w_dim": w_dim, "img_resolution": 64, "img_channels": 3,
              "mapping_kwargs": {"num_layers": layers}, "synthesis_kwargs": {}}
    path = folder / f"gen_z{z_dim}.safetensors"
    save_file({"mapping.fc0.weight": torch.zeros(1)}, str(path),
              metadata={"format": "reenact-stylegan2/1", "reenact_generator": json.dumps(config)})
    return path


@contextlib.contextmanager
def _fake_persistence() -> Iterator[Callable[[dict[str, Any]], Any]]:
    """A stand-in ``torch_utils.persistence._reconstruct_persistent_obj``, registered in
    ``sys.modules`` only while a pickle is written (so pickle finds it by name), then removed:
    no other test ever sees these modules."""
    pkg = types.ModuleType("torch_utils")
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta: dict[str, Any]) -> Any:  # pragma: no cover - never run
        raise RuntimeError("only pickled by name")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    pkg.persistence = mod  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence")}
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = pkg, mod
    try:
        yield _reconstruct_persistent_obj
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class _Record:
    def __init__(self, name: str, state: dict[str, Any]) -> None:
        self.meta = {"type": "class", "version": 4, "module_src": "", "class_name": name, "state": state}

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by name: only while _fake_persistence() has the module registered
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


def _module(name: str, children: dict[str, Any] | None = None, **attrs: Any) -> _Record:
    return _Record(name, {"_parameters": {}, "_buffers": {}, "_modules": children or {}, **attrs})


def make_nvlabs_pickle(folder: Path, z_dim: int = 16000, w_dim: int = 16000) -> Path:
    """An NVlabs-style network pickle (no tensors) whose G_ema claims z_dim = w_dim = 16000."""
    blocks = {f"b{r}": _module("SynthesisBlock", {"conv1": _module("SynthesisLayer", conv_clamp=None)},
                               architecture="skip") for r in (4, 8)}
    synthesis = _module("SynthesisNetwork", blocks)
    g = _module("Generator", {"synthesis": synthesis, "mapping": _module("MappingNetwork")},
                _init_args=[], _init_kwargs={"z_dim": z_dim, "c_dim": 0, "w_dim": w_dim,
                                             "img_resolution": 8, "img_channels": 3,
                                             "synthesis_kwargs": {"channel_base": 16384, "channel_max": 512}})
    path = folder / "nvlabs.pkl"
    with _fake_persistence():
        path.write_bytes(pickle.dumps({"G_ema": g}, protocol=2))
    return path


def make_identity_model(folder: Path, hidden: int = 8192, layers: int = 8) -> Path:
    """An identity-model folder whose identity_model.json asks for 8 hidden layers of 8192."""
    from safetensors.torch import save_file

    root = folder / "identity_model"
    root.mkdir()
    config = {
        "format_version": 1,
        "attribute_encoder": {"backbone": "small", "out_dim": 16, "input_size": 32, "imagenet_init": False,
                              "small_channels": [4]},
        "mapper": {"id_dim": 16, "attr_dim": 16, "hidden": [hidden] * layers, "w_dim": 16},
        "image_size": 32, "num_ws": 2,
    }
    (root / "identity_model.json").write_text(json.dumps(config), encoding="utf-8")
    for name in ("attribute_encoder.safetensors", "mapper.safetensors"):
        save_file({"x": torch.zeros(1)}, str(root / name))
    return root


def make_object_array_pickle(folder: Path, n: int = 300_000_000) -> Path:
    """58 bytes that ask numpy for an object array of ``n`` elements (2.4 GB of pointers)."""
    path = folder / "objects.pkl"
    path.write_bytes(b"cnumpy\nndarray\n((I%d\ntS'O'\ntR." % n)
    return path


def make_reconstruct_pickle(folder: Path, n: int = 300_000_000) -> Path:
    """numpy's own ``_reconstruct`` asked for a huge array up front."""
    path = folder / "reconstruct.pkl"
    path.write_bytes(b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I%d\ntS'b'\ntR." % n)
    return path


def make_constant_of_shape_onnx(folder: Path, side: int = 30000) -> Path:
    """A ~170-byte ONNX graph whose first run would fill a ``side x side`` float tensor."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [side, side])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape), helper.make_node("ConstantOfShape", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "bomb", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "bomb.onnx"
    onnx.save(model, str(path))
    return path


def make_void_scalar_pickle(folder: Path, mib: int = 512, times: int = 2) -> Path:
    """~170 bytes: numpy's ``scalar`` asked ``times`` times for a void scalar of ``mib`` MiB."""
    one = b"cnumpy._core.multiarray\nscalar\n(cnumpy\ndtype\n(S'V%d'\ntRtR" % (mib << 20)
    path = folder / "void_scalar.pkl"
    path.write_bytes(b"\x80\x02(" + one * times + b"t.")  # a protocol-2 header: taken for an NVlabs pickle
    return path


def make_stylegan1_file(folder: Path, z_dim: int = 1_000_000) -> Path:
    """The paper pack's own generator format (safetensors + JSON) claiming z_dim = 1e6."""
    from safetensors.torch import save_file

    config = {"synthesis": {"img_resolution": 32, "channels": [8, 8, 8, 8], "w_dim": 8, "const_channels": 8,
                            "img_channels": 3},
              "mapping": {"z_dim": z_dim, "w_dim": 8, "num_layers": 8}}
    path = folder / "stylegan1.safetensors"
    save_file({"synthesis.const": torch.zeros(1)}, str(path),
              metadata={"format": "reenact-stylegan1/1", "reenact_stylegan1": json.dumps(config)})
    return path


def _component(folder: Path, name: str, kind: str, config: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = folder / name
    save_file({"x": torch.zeros(1)}, str(path), metadata={
        "format": "reenact-component-1", "reenact_component": kind, "config": json.dumps(config)})
    return path


def make_v1_mapping(folder: Path) -> Path:
    """The paper pack's mapping component: 8 layers of 100000 wide (192 bytes of JSON)."""
    return _component(folder, "mapping.safetensors", "stylegan1_mapping",
                      {"z_dim": 100000, "w_dim": 100000, "num_layers": 8, "lr_multiplier": 0.01})


def make_paper_mapper(folder: Path) -> Path:
    """The paper pack's mapper component with a hidden layer of 10^6."""
    return _component(folder, "paper_mapper.safetensors", "paper_mapper",
                      {"id_dim": 512, "attr_dim": 2048, "hidden": [1_000_000], "w_dim": 512, "negative_slope": 0.2})


def _keras_file(path: Path, build: Callable[[Any], None]) -> Path:
    """A Keras weights file of one layer ``dense`` whose weight ``dense/kernel:0`` ``build`` makes."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        group = f.create_group("dense")
        group.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        build(group)
    return path


def make_h5_unwritten_chunks(folder: Path, side: int = 16384) -> Path:
    """5.7 KB: a chunked ``side x side`` float32 dataset whose chunks were never written."""
    return _keras_file(folder / "unwritten.h5", lambda g: g.create_dataset(
        "dense/kernel:0", shape=(side, side), dtype="f4", chunks=(1024, 1024)))


def make_h5_unwritten_contiguous(folder: Path, side: int = 8000) -> Path:
    """2 KB: a contiguous ``side x side`` float32 dataset (244 MiB, under the tensor cap) never written."""
    return _keras_file(folder / "unwritten_contiguous.h5", lambda g: g.create_dataset(
        "dense/kernel:0", shape=(side, side), dtype="f4"))


def make_h5_gzip_bomb(folder: Path, side: int = 16384) -> Path:
    """~1 MB: a gzip-compressed ``side x side`` float32 dataset of zeros (1 GiB expanded).

    One chunk of zeros is compressed once and written raw into every chunk slot."""
    import zlib

    def build(group: Any) -> None:
        chunk = 2048
        ds = group.create_dataset("dense/kernel:0", shape=(side, side), dtype="f4", chunks=(chunk, chunk),
                                  compression="gzip", compression_opts=9)
        packed = zlib.compress(bytes(chunk * chunk * 4), 9)
        for i in range(0, side, chunk):
            for j in range(0, side, chunk):
                ds.id.write_direct_chunk((i, j), packed)

    return _keras_file(folder / "gzip_bomb.h5", build)


def make_h5_external_storage(folder: Path, target: str = "/dev/zero", side: int = 16384) -> Path:
    """A dataset whose bytes live in another file (``/dev/zero``: endless zeros)."""
    import h5py

    return _keras_file(folder / "external_storage.h5", lambda g: g.create_dataset(
        "dense/kernel:0", shape=(side, side), dtype="f4", external=[(target, 0, h5py.h5f.UNLIMITED)]))


def make_h5_external_link(folder: Path) -> Path:
    """The weight is an HDF5 external link into another file."""
    import h5py
    import numpy as np

    with h5py.File(folder / "other.h5", "w") as other:
        other["w"] = np.zeros((2, 2), "f4")

    def build(group: Any) -> None:
        group.create_group("dense")["kernel:0"] = h5py.ExternalLink(str(folder / "other.h5"), "/w")

    return _keras_file(folder / "external_link.h5", build)


def make_h5_soft_link_loop(folder: Path) -> Path:
    """The layer group is an HDF5 soft link to itself."""
    import h5py
    import numpy as np

    path = folder / "soft_link_loop.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"loop"])
        f["loop"] = h5py.SoftLink("/loop")
    return path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _table_block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def make_tf_checkpoint(folder: Path, shape: tuple[int, ...], size: int, shard_bytes: int = 0,
                       name: str = "ckpt") -> Path:
    """A Keras-style TF checkpoint (``.index`` + one ``.data`` shard, object graph included)
    holding one float variable ``w`` of ``shape`` whose index entry says ``size`` bytes; the
    shard is a sparse file of at least ``shard_bytes``."""
    from reenact.models.readers.tf_checkpoint import _mask, crc32c

    key = b"w/.ATTRIBUTES/VARIABLE_VALUE"
    graph = _field(1, _field(2, _field(1, b"VARIABLE_VALUE") + _field(2, b"G_synthesis/w") + _field(3, key)))
    graph_data = _varint(len(graph)) + bytes(4) + graph  # lengths, their (unchecked) checksum, bytes
    graph_entry = _field(1, 7) + _field(2, b"") + _field(3, 0) + _field(4, 0) + _field(5, len(graph_data))
    dims = b"".join(_field(2, _field(1, d)) for d in shape)
    entry = _field(1, 1) + _field(2, dims) + _field(3, 0) + _field(4, len(graph_data)) + _field(5, size)
    data_block = _table_block([(b"", _field(1, 1)), (b"_CHECKPOINTABLE_OBJECT_GRAPH", graph_entry), (key, entry)])

    def framed(block: bytes) -> bytes:
        return block + b"\x00" + _mask(crc32c(block + b"\x00")).to_bytes(4, "little")

    out = framed(data_block)
    meta_off = len(out)
    meta = _table_block([])
    out += framed(meta)
    index_off = len(out)
    index = _table_block([(key, _varint(0) + _varint(len(data_block)))])
    out += framed(index)
    footer = _varint(meta_off) + _varint(len(meta)) + _varint(index_off) + _varint(len(index))
    footer = footer.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    prefix = folder / name
    Path(f"{prefix}.index").write_bytes(out + footer)
    with open(f"{prefix}.data-00000-of-00001", "wb") as f:
        f.write(graph_data)
        f.truncate(max(shard_bytes, len(graph_data)))
    return prefix


def make_constant_of_shape_neg_onnx(folder: Path, side: int = 30000) -> Path:
    """~200 bytes: ``ConstantOfShape(Neg([-side, -side]))`` escapes a look at constants alone."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-side, -side])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape), helper.make_node("Neg", ["s"], ["n"]),
             helper.make_node("ConstantOfShape", ["n"], ["y"])]
    graph = helper.make_graph(nodes, "bomb", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "bomb_neg.onnx"
    onnx.save(model, str(path))
    return path


def make_if_branch_onnx(folder: Path, side: int = 30000) -> Path:
    """The ``ConstantOfShape(Neg(..))`` bomb hidden in the taken branch of an ``If``."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-side, -side])
    then = helper.make_graph([helper.make_node("Neg", ["s"], ["n"]), helper.make_node("ConstantOfShape", ["n"], ["y1"])],
                             "then", [], [helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["h", "w"])])
    other = helper.make_graph([helper.make_node("ConstantOfShape", ["one"], ["y2"])], "else", [],
                              [helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["h"])])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
             helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1])),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "bomb", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["h", "w"])])
    path = folder / "bomb_if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def make_loop_onnx(folder: Path, trips: int = 1_000_000_000) -> Path:
    """A ``Loop`` of ``trips`` iterations stacking one value per iteration (4 GB, and hours)."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Cast", ["i"], ["scan"], to=TensorProto.FLOAT)], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("scan", TensorProto.FLOAT, [])])
    nodes = [helper.make_node("Constant", [], ["M"], value=helper.make_tensor("m", TensorProto.INT64, [], [trips])),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
             helper.make_node("Loop", ["M", "c"], ["y"], body=body)]
    graph = helper.make_graph(nodes, "loop", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    path = folder / "bomb_loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def make_invalid_onnx(folder: Path) -> Path:
    """An ONNX file that is no graph at all (what `models import` used to copy unchecked)."""
    path = folder / "invalid.onnx"
    path.write_bytes(b"\x08\x07garbage, not a graph")
    return path


def _load_generator(path: Path) -> Any:
    from reenact.models.stylegan2 import load_generator

    return load_generator(path)


def _load_stylegan1(path: Path) -> Any:
    from reenact.models.stylegan1 import load_stylegan1

    return load_stylegan1(path)


def _load_v1_mapping(path: Path) -> Any:
    from reenact.models.stylegan1 import load_mapping

    return load_mapping(path, num_ws=14)


def _load_paper_mapper(path: Path) -> Any:
    from reenact.models.paper_mapper import load_paper_mapper

    return load_paper_mapper(path)


def _load_keras_mapper(path: Path) -> Any:
    from reenact.models.paper_mapper import mapper_from_keras_h5

    return mapper_from_keras_h5(path)


def _load_tf_checkpoint(prefix: Path) -> Any:
    """What ``reenact models import paper/generator PREFIX`` reads."""
    from reenact.models.stylegan1 import load_stylegan1_synthesis

    return load_stylegan1_synthesis(prefix)


def _import_as_detector(path: Path) -> Any:
    """``reenact models import hostile/detector FILE`` into a throwaway cache, with a pack
    whose detector is an ONNX file stored in the cache."""
    import os

    import reenact.packs  # noqa: F401 - registers the loaders
    from reenact.models import registry

    root = path.parent / "import"
    (root / "packs").mkdir(parents=True)
    (root / "packs" / "hostile.yaml").write_text(
        "name: hostile\ncomponents:\n  detector:\n    kind: onnx\n    source: import:the publisher\n"
        "    file: hostile/detector.onnx\n    licence: test\n", encoding="utf-8")
    saved = {k: os.environ.get(k) for k in ("REENACT_PACKS", "REENACT_HOME")}
    os.environ["REENACT_PACKS"], os.environ["REENACT_HOME"] = str(root / "packs"), str(root / "home")
    try:
        return registry.import_file(path, "hostile/detector")
    finally:
        if (root / "home" / "models" / "hostile" / "detector.onnx").exists():
            raise AssertionError("the refused file was stored in the cache")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_nvlabs(path: Path) -> Any:
    from reenact.models.convert import convert_nvlabs_pickle

    return convert_nvlabs_pickle(path)


def _load_identity(path: Path) -> Any:
    from reenact.models.mapper import load_identity_model

    return load_identity_model(path)


def _load_pickle(path: Path) -> Any:
    from reenact.models.pickle_safe import load_nvlabs_pickle

    return load_nvlabs_pickle(path)


def _load_onnx(path: Path) -> Any:
    from reenact.faces.onnx_session import open_session

    session = open_session(path, "detector", prefer_cuda=False)
    return session.run(None, {})


#: case -> (make(folder) -> path, load(path))
CASES: dict[str, tuple[Callable[[Path], Path], Callable[[Path], Any]]] = {
    "safetensors generator z_dim=w_dim=16000": (make_safetensors_generator, _load_generator),
    "safetensors generator w_dim=8192 x 8 layers (meta-size cap)": (
        lambda f: make_safetensors_generator(f, 8192, 8192, 8), _load_generator),
    "nvlabs pickle z_dim=w_dim=16000": (make_nvlabs_pickle, _load_nvlabs),
    "identity_model.json hidden 8x8192": (make_identity_model, _load_identity),
    "identity_model.json hidden 100000": (lambda f: make_identity_model(f, 100000, 2), _load_identity),
    "pickle numpy.ndarray object array 3e8": (make_object_array_pickle, _load_pickle),
    "pickle numpy _reconstruct 3e8": (make_reconstruct_pickle, _load_pickle),
    "onnx ConstantOfShape 30000x30000": (make_constant_of_shape_onnx, _load_onnx),
    # issue #29
    "pickle numpy scalar void 512 MiB x2": (make_void_scalar_pickle, _load_nvlabs),
    "stylegan1 safetensors z_dim=1e6": (make_stylegan1_file, _load_stylegan1),
    "stylegan1 mapping 8x100000": (make_v1_mapping, _load_v1_mapping),
    "paper mapper hidden 1e6": (make_paper_mapper, _load_paper_mapper),
    "h5 chunked never written 16384^2": (make_h5_unwritten_chunks, _load_keras_mapper),
    "h5 chunked never written 8000^2 (under the tensor cap)": (
        lambda f: make_h5_unwritten_chunks(f, 8000), _load_keras_mapper),
    "h5 contiguous never written 8000^2": (make_h5_unwritten_contiguous, _load_keras_mapper),
    "h5 gzip bomb 16384^2": (make_h5_gzip_bomb, _load_keras_mapper),
    "h5 external storage /dev/zero": (make_h5_external_storage, _load_keras_mapper),
    "h5 external storage /etc/hostname": (
        lambda f: make_h5_external_storage(f, "/etc/hostname", 2), _load_keras_mapper),
    "h5 external link": (make_h5_external_link, _load_keras_mapper),
    "h5 soft link loop": (make_h5_soft_link_loop, _load_keras_mapper),
    "tf checkpoint sparse shard 1 GiB tensor": (
        lambda f: make_tf_checkpoint(f, (16384, 16384), 1 << 30, 1 << 30), _load_tf_checkpoint),
    "tf checkpoint shape 2^32 x 2^32": (lambda f: make_tf_checkpoint(f, (1 << 32, 1 << 32), 0), _load_tf_checkpoint),
    "tf checkpoint shape 2^62 x 4, size 0": (lambda f: make_tf_checkpoint(f, (1 << 62, 4), 0), _load_tf_checkpoint),
    "onnx ConstantOfShape(Neg) 30000x30000": (make_constant_of_shape_neg_onnx, _load_onnx),
    "onnx ConstantOfShape(Neg) in an If branch": (make_if_branch_onnx, _load_onnx),
    "onnx Loop of 1e9 iterations with a scan output": (make_loop_onnx, _load_onnx),
    "models import of a bomb onnx": (make_constant_of_shape_neg_onnx, _import_as_detector),
    "models import of an invalid onnx": (make_invalid_onnx, _import_as_detector),
}
