"""The paper's attribute encoder: Keras ``InceptionV3(include_top=False, pooling='avg')``.

Re-implemented in PyTorch so that it reproduces Keras exactly (torchvision's Inception3
averages padded zeros in its 3x3 pools and has BN gammas, so it does not):

* every conv is ``conv2d_bn``: conv without bias, BatchNorm with ``scale=False`` (no
  gamma) and eps 1e-3, ReLU; 'same' convs at stride 1 pad symmetrically, every stride-2 conv
  and max-pool is 'valid';
* the 3x3 stride-1 average pools are 'same' and average only real pixels
  (``count_include_pad=False``, as TensorFlow does);
* preprocessing as the authors' ``AttrEncoder.call``: TF2 bilinear resize to 299x299 (half-pixel
  centres, no antialiasing), then ``255*x/127.5 - 1``; output the global average pool,
  ``[B, 2048]``.

Weights come from the authors' ``AttrEncoder.h5`` (:func:`attr_encoder_from_keras_h5`). Keras
writes the layers in its topological order, which is *not* creation order (``conv2d_8``
precedes ``conv2d_6``), and its automatic names carry a per-process offset. Creation order
is what our modules follow (:data:`_CONVS` lists the ``conv2d_bn`` calls in the order Keras'
``inception_v3.py`` makes them), so the file's conv and BN layers are put back into creation
order by the *relative* order of their automatic-name counters, which an offset does not
change; then every tensor's role and shape is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import ModelError, ShapeError
from reenact.models.component_io import load_state_strict, read_component, save_component
from reenact.models.readers.keras_h5 import KerasLayer, read_keras_layers, weighted_layers

__all__ = [
    "ATTR_ENCODER_KIND",
    "KerasInceptionV3",
    "PaperAttributeEncoder",
    "attr_encoder_from_keras_h5",
    "save_attr_encoder",
    "load_attr_encoder",
    "tf_resize_bilinear",
]

ATTR_ENCODER_KIND = "paper_attr_encoder_inception_v3"
INPUT_SIZE = 299
BN_EPS = 1e-3


def tf_resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF2 ``tf.image.resize(..., 'bilinear')`` (half-pixel centres, no antialiasing).

    Conventions: ``images`` float NCHW ``[B, C, H, W]`` -> ``[B, C, size[0], size[1]]``.
    PyTorch's ``align_corners=False`` bilinear uses the same half-pixel mapping and edge
    clamping.
    """
    if images.ndim != 4:
        raise ShapeError(f"tf_resize_bilinear expects NCHW [B,C,H,W], got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)


class ConvBN(nn.Module):
    """Keras ``conv2d_bn``: conv (no bias) -> BatchNorm (no gamma, eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kh: int, kw: int, stride: int = 1, same: bool = True):
        super().__init__()
        if same and stride != 1:
            raise ValueError("InceptionV3 has no 'same' stride-2 convs")
        padding = (kh // 2, kw // 2) if same else (0, 0)
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, affine=True)
        self.bn.weight.requires_grad_(False)  # scale=False: gamma is fixed at 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_same(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_valid(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=2)


class KerasInceptionV3(nn.Module):
    """InceptionV3 features as Keras builds them: NCHW float -> ``[B, 2048]`` (avg pool).

    Conventions: input ``x`` float ``[B, 3, H, W]`` already preprocessed to [-1, 1]
    (H, W >= 75); output float ``[B, 2048]``. ``self.convs[i]`` is the i-th ``conv2d_bn``
    call of Keras' ``inception_v3.py`` (its ``conv2d_i`` in a fresh process).
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self._cin = 3
        c = self._add  # creation order below is Keras' order of conv2d_bn calls
        self.stem = [c(3, 32, 3, 3, 2, False), c(32, 32, 3, 3, 1, False), c(32, 64, 3, 3)]
        self.stem2 = [c(64, 80, 1, 1, 1, False), c(80, 192, 3, 3, 1, False)]
        self.blocks_a = [self._block_a(cin, pool) for cin, pool in ((192, 32), (256, 64), (288, 64))]
        self.block_b = [c(288, 384, 3, 3, 2, False), c(288, 64, 1, 1), c(64, 96, 3, 3),
                        c(96, 96, 3, 3, 2, False)]
        self.blocks_c = [self._block_c(c7) for c7 in (128, 160, 160, 192)]
        self.block_d = [c(768, 192, 1, 1), c(192, 320, 3, 3, 2, False), c(768, 192, 1, 1),
                        c(192, 192, 1, 7), c(192, 192, 7, 1), c(192, 192, 3, 3, 2, False)]
        self.blocks_e = [self._block_e(cin) for cin in (1280, 2048)]
        if len(self.convs) != 94:
            raise AssertionError(f"built {len(self.convs)} conv2d_bn, Keras has 94")

    def _add(self, cin: int, cout: int, kh: int, kw: int, stride: int = 1, same: bool = True) -> int:
        self.convs.append(ConvBN(cin, cout, kh, kw, stride, same))
        return len(self.convs) - 1

    def _block_a(self, cin: int, pool: int) -> list[int]:
        c = self._add
        return [c(cin, 64, 1, 1), c(cin, 48, 1, 1), c(48, 64, 5, 5), c(cin, 64, 1, 1),
                c(64, 96, 3, 3), c(96, 96, 3, 3), c(cin, pool, 1, 1)]

    def _block_c(self, c7: int) -> list[int]:
        c = self._add
        return [c(768, 192, 1, 1), c(768, c7, 1, 1), c(c7, c7, 1, 7), c(c7, 192, 7, 1),
                c(768, c7, 1, 1), c(c7, c7, 7, 1), c(c7, c7, 1, 7), c(c7, c7, 7, 1),
                c(c7, 192, 1, 7), c(768, 192, 1, 1)]

    def _block_e(self, cin: int) -> list[int]:
        c = self._add
        return [c(cin, 320, 1, 1), c(cin, 384, 1, 1), c(384, 384, 1, 3), c(384, 384, 3, 1),
                c(cin, 448, 1, 1), c(448, 384, 3, 3), c(384, 384, 1, 3), c(384, 384, 3, 1),
                c(cin, 192, 1, 1)]

    def _run(self, i: int, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.convs[i](x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < 75:
            raise ShapeError(f"KerasInceptionV3 expects [B,3,H>=75,W>=75], got {tuple(x.shape)}")
        r = self._run
        for i in self.stem:
            x = r(i, x)
        x = _max_valid(x)
        for i in self.stem2:
            x = r(i, x)
        x = _max_valid(x)
        for b in self.blocks_a:  # mixed0-2
            x = torch.cat([r(b[0], x), r(b[2], r(b[1], x)), r(b[5], r(b[4], r(b[3], x))),
                           r(b[6], _avg_same(x))], 1)
        b = self.block_b  # mixed3
        x = torch.cat([r(b[0], x), r(b[3], r(b[2], r(b[1], x))), _max_valid(x)], 1)
        for b in self.blocks_c:  # mixed4-7
            y7 = r(b[3], r(b[2], r(b[1], x)))
            y7d = r(b[8], r(b[7], r(b[6], r(b[5], r(b[4], x)))))
            x = torch.cat([r(b[0], x), y7, y7d, r(b[9], _avg_same(x))], 1)
        b = self.block_d  # mixed8
        x = torch.cat([r(b[1], r(b[0], x)), r(b[5], r(b[4], r(b[3], r(b[2], x)))), _max_valid(x)], 1)
        for b in self.blocks_e:  # mixed9, mixed10
            y3 = r(b[1], x)
            y3d = r(b[5], r(b[4], x))
            x = torch.cat([r(b[0], x), r(b[2], y3), r(b[3], y3), r(b[6], y3d), r(b[7], y3d),
                           r(b[8], _avg_same(x))], 1)
        return x.mean(dim=(2, 3))


class PaperAttributeEncoder(nn.Module):
    """The authors' ``AttrEncoder``: RGB images in [0, 1] -> pooled InceptionV3 features.

    Conventions: input ``images`` float ``[B, 3, H, W]`` RGB in [0, 1] (NCHW; the authors'
    NHWC tensors permuted); output float ``[B, 2048]`` (the authors' ``[B, 1, 2048]`` without
    the singleton axis).
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = KerasInceptionV3()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ShapeError(f"attribute encoder expects RGB [B,3,H,W], got {tuple(images.shape)}")
        x = tf_resize_bilinear(images.float(), (INPUT_SIZE, INPUT_SIZE))
        x = (x * 255.0) / 127.5 - 1.0  # Keras' 'tf' preprocess_input of 255*x
        out: torch.Tensor = self.net(x)
        return out


_AUTO = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")


def _creation_order(layers: list[KerasLayer], base: str, path: Path) -> list[KerasLayer]:
    """Layers named ``base`` / ``base_N`` sorted by their counter (offsets do not matter)."""
    keyed: list[tuple[int, KerasLayer]] = []
    for layer in layers:
        m = _AUTO.match(layer.name)
        if m is None:
            raise ModelError(
                f"{path}: layer {layer.name!r} is not an automatically named conv2d / "
                "batch_normalization layer; the file is not a Keras InceptionV3 "
                "(include_top=False) weights file"
            )
        if m.group(1) == base:
            keyed.append((int(m.group(2) or 0), layer))
    keyed.sort(key=lambda item: item[0])
    return [layer for _, layer in keyed]


def attr_encoder_from_keras_h5(path: str | Path) -> PaperAttributeEncoder:
    """Build the attribute encoder from the authors' ``AttrEncoder.h5`` (strict).

    A file from another network (other layer count, roles or shapes) raises
    :class:`ModelError` naming the tensor.
    """
    path = Path(path)
    encoder = PaperAttributeEncoder()
    convs = list(encoder.net.convs)
    layers = weighted_layers(read_keras_layers(path))
    if len(layers) != 2 * len(convs):
        raise ModelError(
            f"{path} has {len(layers)} layers with weights, but Keras InceptionV3 "
            f"(include_top=False) has {2 * len(convs)}; the file is from another network"
        )
    conv_layers = _creation_order(layers, "conv2d", path)
    bn_layers = _creation_order(layers, "batch_normalization", path)
    if len(conv_layers) != len(convs) or len(bn_layers) != len(convs):
        raise ModelError(
            f"{path} has {len(conv_layers)} conv2d and {len(bn_layers)} batch_normalization "
            f"layers, InceptionV3 has {len(convs)} of each"
        )
    state: dict[str, torch.Tensor] = {}
    for i, (module, conv, bn) in enumerate(zip(convs, conv_layers, bn_layers, strict=True)):
        assert isinstance(module, ConvBN)
        want = tuple(module.conv.weight.shape)  # [out, in, kh, kw]
        keras_shape = (want[2], want[3], want[1], want[0])
        if conv.roles != ("kernel",) or conv.shapes != (keras_shape,):
            raise ModelError(
                f"{path}: {conv.weights[0][0] if conv.weights else conv.name!r} has variables "
                f"{list(conv.roles)} of shapes {[list(s) for s in conv.shapes]}, but conv #{i} of "
                f"InceptionV3 is a kernel of shape {list(keras_shape)}; the file is from another "
                "network"
            )
        if bn.roles != ("beta", "moving_mean", "moving_variance") or bn.shapes != ((want[0],),) * 3:
            raise ModelError(
                f"{path}: {bn.name!r} has variables {[n for n, _ in bn.weights]} of shapes "
                f"{[list(s) for s in bn.shapes]}, but BN #{i} of InceptionV3 needs "
                f"beta/moving_mean/moving_variance of [{want[0]}] (scale=False); the file is "
                "from another network"
            )
        kernel = np.asarray(conv.weights[0][1], dtype=np.float32)
        beta, mean, var = (np.asarray(a, dtype=np.float32) for _, a in bn.weights)
        prefix = f"net.convs.{i}"
        state[f"{prefix}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"{prefix}.bn.weight"] = torch.ones(want[0])
        state[f"{prefix}.bn.bias"] = torch.from_numpy(beta.copy())
        state[f"{prefix}.bn.running_mean"] = torch.from_numpy(mean.copy())
        state[f"{prefix}.bn.running_var"] = torch.from_numpy(var.copy())
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
    load_state_strict(encoder, state, str(path))
    return encoder


def save_attr_encoder(encoder: PaperAttributeEncoder, path: str | Path) -> Path:
    """Store the attribute encoder in our format (safetensors + JSON config metadata)."""
    return save_component(encoder, ATTR_ENCODER_KIND, {"input_size": INPUT_SIZE, "features": 2048}, path)


def load_attr_encoder(path: str | Path) -> PaperAttributeEncoder:
    """Load an attribute encoder written by :func:`save_attr_encoder` (strict; eval)."""
    config, state = read_component(path, ATTR_ENCODER_KIND)
    if config != {"input_size": INPUT_SIZE, "features": 2048}:
        raise ModelError(f"{path}: unsupported attribute encoder config {config!r}")
    encoder = PaperAttributeEncoder()
    load_state_strict(encoder, state, str(path))
    return encoder
