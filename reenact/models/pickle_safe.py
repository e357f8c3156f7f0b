"""Reading NVIDIA's StyleGAN2 ``.pkl`` files without running the code inside them.

Official network pickles store every module as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` carries the
*whole Python source* of the module that defined the class, which the official loader
executes. :func:`load_nvlabs_pickle` uses a :class:`pickle.Unpickler` whose
``find_class`` only resolves an allow-list of globals; the persistence function is
replaced by one that returns a plain :class:`PersistentRecord` (class name and state) and
never looks at the source. Any other global (``os.system``, ``builtins.exec``,
``subprocess.Popen`` ...) raises :class:`UnsafeModelFileError` naming it, before it could
be called. Tensors are rebuilt from their raw storage bytes with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reenact.errors import ModelError, UnsafeModelFileError

__all__ = [
    "PersistentRecord",
    "TF1NetworkRecord",
    "load_nvlabs_pickle",
    "load_tf1_network_pickle",
    "loads_restricted",
    "ALLOWED_GLOBALS",
]


@dataclass
class PersistentRecord:
    """What a persistent network object holds, without its class: name and ``__dict__``.

    ``state`` is the torch Module ``__dict__`` (``_parameters``, ``_buffers``,
    ``_modules`` of child records, plain attributes, ``_init_args``/``_init_kwargs``).
    ``has_source`` says whether the pickle carried module source (which was ignored).
    """

    class_name: str
    state: dict[str, Any] = field(default_factory=dict)
    has_source: bool = False

    def child(self, name: str) -> PersistentRecord:
        """The child module record ``name`` (raises ModelError if absent)."""
        modules = self.state.get("_modules") or {}
        rec = modules.get(name)
        if not isinstance(rec, PersistentRecord):
            raise ModelError(f"{self.class_name} record has no child module {name!r}")
        return rec


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stand-in for the official function: keep class name and state, ignore the source."""
    if not isinstance(meta, dict):
        raise UnsafeModelFileError(f"persistent object metadata must be a dict, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise UnsafeModelFileError(
            f"persistent object of type {meta.get('type')!r} is not supported (only 'class')"
        )
    name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise ModelError("persistent object metadata lacks class_name/state")
    return PersistentRecord(class_name=name, state=state, has_source=bool(meta.get("module_src")))


class _EasyDict(dict):
    """Plain stand-in for ``dnnlib.util.EasyDict`` (a dict subclass); no attribute magic."""


class TF1NetworkRecord:
    """Stand-in for ``dnnlib.tflib.network.Network`` of TF1-era pickles (StyleGAN v1).

    Its ``__setstate__`` only keeps the state dict (``version``, ``name``,
    ``static_kwargs``, ``components``, ``build_module_src``, ``build_func_name``,
    ``variables`` as ``(name, ndarray)`` pairs); the embedded build source is never run.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeModelFileError(f"dnnlib Network state must be a dict, got {type(state).__name__}")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", "?"))

    def component(self, name: str) -> TF1NetworkRecord:
        """The sub-network ``name`` (e.g. ``G_synthesis``); ModelError if absent."""
        comp = (self.state.get("components") or {}).get(name)
        if not isinstance(comp, TF1NetworkRecord):
            raise ModelError(f"dnnlib Network {self.name!r} has no component {name!r}")
        return comp

    def variables(self) -> dict[str, np.ndarray[Any, Any]]:
        """The network's own variables, ``{name: ndarray}`` (ModelError if malformed)."""
        out: dict[str, np.ndarray[Any, Any]] = {}
        for item in self.state.get("variables") or []:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise ModelError(f"dnnlib Network {self.name!r}: malformed variables entry")
            # TF's session.run returns numpy scalars (np.generic) for 0-d variables such as lod
            if not isinstance(item[1], (np.ndarray, np.generic)) or np.asarray(item[1]).dtype.hasobject:
                raise ModelError(f"dnnlib Network {self.name!r}: variable {item[0]!r} is not an array")
            if item[0] in out:
                raise ModelError(f"dnnlib Network {self.name!r}: variable {item[0]!r} occurs twice")
            out[item[0]] = np.asarray(item[1])
        return out


def _load_storage_bytes(data: Any) -> Any:
    """Safe ``torch.storage._load_from_bytes``: a legacy ``torch.save`` of one storage."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeModelFileError(f"storage payload must be bytes, got {type(data).__name__}")
    try:
        return torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFileError(f"a tensor storage inside the pickle was refused: {exc}") from exc
    except Exception as exc:
        raise ModelError(f"a tensor storage inside the pickle is corrupt: {exc}") from exc


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise UnsafeModelFileError(f"tensor storage has type {type(storage).__name__}")
    from torch._utils import _rebuild_tensor_v2 as real

    return real(storage, offset, size, stride, *rest[:3])


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafeModelFileError(f"parameter data has type {type(data).__name__}")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


#: Largest numpy scalar a pickle may hold (a float64 is 8 bytes, a complex256 32): a void
#: dtype of any size can be written in a few bytes, and ``scalar(dtype)`` would allocate it.
MAX_SCALAR_BYTES = 1024


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's ``scalar(dtype, data)`` for plain dtypes, only from the file's own bytes.

    ``data`` must be the scalar's bytes, exactly ``dtype.itemsize`` of them (numpy's own
    pickles always carry them); nothing is allocated from a size the pickle merely claims.
    """
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeModelFileError(f"numpy scalar of dtype {dtype!r} is not allowed")
    if dtype.itemsize > MAX_SCALAR_BYTES:
        raise UnsafeModelFileError(
            f"refused a numpy scalar of {dtype.itemsize} bytes (dtype {dtype.str}); scalars are at most "
            f"{MAX_SCALAR_BYTES} bytes (a memory bomb: get the file again from its publisher)"
        )
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafeModelFileError(
            f"refused a numpy scalar of dtype {dtype.str} without its {dtype.itemsize} bytes of data "
            f"(got {type(data).__name__}{f' of {len(data)} bytes' if isinstance(data, bytes) else ''})"
        )
    from numpy._core.multiarray import scalar

    return scalar(dtype, data)


def _numpy_dtype(*args: Any) -> np.dtype[Any]:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafeModelFileError(f"numpy dtype {dt!r} holds Python objects; not allowed")
    return dt


class _NdarrayToken:
    """What ``numpy.ndarray`` unpickles to: only a marker for :func:`_numpy_reconstruct`.

    Calling it (``ndarray(shape, dtype)``, which allocates any size, objects included) is
    refused; numpy's own pickles only pass it to ``_reconstruct``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise UnsafeModelFileError("calling numpy.ndarray from a pickle is not allowed (it allocates any size)")


#: Most elements ``_reconstruct`` may start an array with (numpy itself pickles ``(0,)``;
#: the data then comes from the file's bytes through ``__setstate__``).
MAX_RECONSTRUCT_ELEMENTS = 1


def _numpy_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray[Any, Any]:
    if cls is not _NdarrayToken:
        raise UnsafeModelFileError(f"numpy array reconstruct of {cls!r} is not allowed")
    try:
        dt = np.dtype(dtype)
        dims = [int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,))]
    except (TypeError, ValueError) as exc:
        raise UnsafeModelFileError(f"numpy array reconstruct with shape {shape!r}, dtype {dtype!r}") from exc
    if dt.hasobject:
        raise UnsafeModelFileError(f"numpy dtype {dt!r} holds Python objects; not allowed")
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.float64)) > MAX_RECONSTRUCT_ELEMENTS:
        raise UnsafeModelFileError(
            f"refused numpy array reconstruct asking for shape {dims} up front; numpy pickles start empty "
            "(a memory bomb?)"
        )
    return np.ndarray.__new__(np.ndarray, tuple(dims), dt)


#: ``(module, name)`` -> the object the restricted unpickler hands out for it.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib.tflib.network", "Network"): TF1NetworkRecord,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): _numpy_dtype,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise UnsafeModelFileError(
                f"refused to load global {module}.{name}: it is not on the allow-list of "
                "network pickles (the file may try to run code); nothing was executed"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeModelFileError(
            f"refused persistent id {pid!r}: official network pickles do not use them "
            "(is this a torch.save file? use its own loader)"
        )


def loads_restricted(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the allow-list; persistent objects become records."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafeModelFileError as exc:
        if str(exc).startswith(source):
            raise
        raise UnsafeModelFileError(f"{source}: {exc}") from exc
    except ModelError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ModelError(
            f"{source} is not a complete, readable network pickle ({type(exc).__name__}: {exc}); "
            "it may be truncated: download it again"
        ) from exc
    except RuntimeError as exc:  # torch storage errors
        raise ModelError(f"{source}: corrupt tensor data ({exc})") from exc
    except MemoryError as exc:
        raise ModelError(f"{source}: unpickling it ran out of memory; a corrupt or hostile file") from exc


def load_nvlabs_pickle(path: str | Path) -> dict[str, Any]:
    """Read an official StyleGAN2(-ADA)/StyleGAN3 network pickle safely.

    Returns the pickled dict (``G``, ``D``, ``G_ema`` ... as :class:`PersistentRecord`).
    Raises :class:`UnsafeModelFileError` for any global outside :data:`ALLOWED_GLOBALS`
    and :class:`ModelError` for truncated/corrupt files or TensorFlow-era pickles.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"network pickle {path} does not exist") from exc
    except OSError as exc:
        raise ModelError(f"cannot read network pickle {path}: {exc.strerror or exc}") from exc
    obj = loads_restricted(data, source=str(path))
    if isinstance(obj, tuple):
        raise ModelError(
            f"{path} looks like a TensorFlow-era StyleGAN2 pickle (a tuple of networks); it is "
            "not supported: use the PyTorch re-release (stylegan2-ada-pytorch / stylegan3 "
            "pretrained .pkl) or a rosinality .pt"
        )
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: expected a dict of networks, got {type(obj).__name__}")
    return obj


def load_tf1_network_pickle(path: str | Path) -> Any:
    """Read a TF1-era ``dnnlib`` network pickle (official StyleGAN v1) without TensorFlow.

    Returns what the pickle holds -- usually the ``(G, D, Gs)`` tuple -- with every
    ``dnnlib.tflib.network.Network`` as a :class:`TF1NetworkRecord`. The same allow-list as
    :func:`load_nvlabs_pickle` applies: any other global is an
    :class:`UnsafeModelFileError` raised before anything could be called.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"network pickle {path} does not exist") from exc
    except OSError as exc:
        raise ModelError(f"cannot read network pickle {path}: {exc.strerror or exc}") from exc
    return loads_restricted(data, source=str(path))
