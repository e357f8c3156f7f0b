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


def _load_generator(path: Path) -> Any:
    from reenact.models.stylegan2 import load_generator

    return load_generator(path)


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
}
