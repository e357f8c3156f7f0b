"""The paper's identity encoder: VGGFace2 ResNet-50 (WeidiXie/Keras-VGGFace2-ResNet50).

The network (Caffe-style ResNet-50, as ``resnet50_backend`` builds it):

* ``conv1/7x7_s2``: 7x7 stride 2 'same' (TF pads 2 before and 3 after on 224 input),
  BatchNorm, ReLU, then a 3x3 stride-2 'valid' max-pool (112 -> 55);
* four stages of bottleneck blocks (3, 4, 6, 3). Projection blocks put the stride on the
  first 1x1 conv and use a stride-2 1x1 shortcut (the first stage's stride is 1);
* convs have no bias, BatchNorm has eps 1e-3 and gamma;
* a 7x7 average pool, flatten, and ``dim_proj`` Dense 2048 -> 512 with ReLU: the authors'
  ``IDEncoder`` takes ``layers[-2]``, which is this layer (the 8631-way classifier is unused).

:class:`PaperIdentityEncoder` adds the authors' preprocessing exactly (see its docstring).
Weights come from the full-model ``vggface2.h5`` (:func:`id_encoder_from_keras_h5`), matched
by the explicit layer names WeidiXie's code gives every layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import ModelError, ShapeError
from reenact.models.component_io import load_state_strict, read_component, save_component
from reenact.models.inception_attr import tf_resize_bilinear
from reenact.models.readers.keras_h5 import KerasLayer, read_keras_layers, weighted_layers

__all__ = [
    "ID_ENCODER_KIND",
    "VGGFACE2_MEAN_BGR",
    "VGGFace2ResNet50",
    "PaperIdentityEncoder",
    "id_encoder_from_keras_h5",
    "save_id_encoder",
    "load_id_encoder",
]

ID_ENCODER_KIND = "paper_id_encoder_vggface2_resnet50"
VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)
BN_EPS = 1e-3
STAGES = ((2, 3, 64, 256, 1), (3, 4, 128, 512, 2), (4, 6, 256, 1024, 2), (5, 3, 512, 2048, 2))
CLASSIFIER = "classifier_low_dim"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class Bottleneck(nn.Module):
    """One ``conv_block`` (with ``proj``) or ``identity_block`` of the VGGFace2 ResNet-50."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, project: bool) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, mid, 1, stride=stride, bias=False)
        self.reduce_bn = _bn(mid)
        self.conv3x3 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.conv3x3_bn = _bn(mid)
        self.increase = nn.Conv2d(mid, cout, 1, bias=False)
        self.increase_bn = _bn(cout)
        self.proj: nn.Conv2d | None = None
        self.proj_bn: nn.BatchNorm2d | None = None
        if project:
            self.proj = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.proj_bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.reduce_bn(self.reduce(x)))
        y = F.relu(self.conv3x3_bn(self.conv3x3(y)))
        y = self.increase_bn(self.increase(y))
        shortcut = x if self.proj is None or self.proj_bn is None else self.proj_bn(self.proj(x))
        return F.relu(y + shortcut)


def _keras_names(stage: int, block: int) -> dict[str, str]:
    """Our module names in a block -> WeidiXie's Keras layer names."""
    base = f"conv{stage}_{block}"
    names = {
        "reduce": f"{base}_1x1_reduce",
        "conv3x3": f"{base}_3x3",
        "increase": f"{base}_1x1_increase",
        "proj": f"{base}_1x1_proj",
    }
    for key in list(names):
        names[f"{key}_bn"] = names[key] + "/bn"
    return names


class VGGFace2ResNet50(nn.Module):
    """VGGFace2 ResNet-50 up to ``dim_proj`` (with its ReLU).

    Conventions: input ``x`` float ``[B, 3, 224, 224]``, BGR, mean-subtracted (0-255 scale);
    output float ``[B, 512]`` (not normalised).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, bias=False)
        self.conv1_bn = _bn(64)
        blocks: list[nn.Module] = []
        cin = 64
        for _stage, count, mid, cout, stride in STAGES:
            for block in range(count):
                blocks.append(Bottleneck(cin, mid, cout, stride if block == 0 else 1, block == 0))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.dim_proj = nn.Linear(2048, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 224, 224):
            raise ShapeError(f"VGGFace2ResNet50 expects [B,3,224,224], got {tuple(x.shape)}")
        x = F.pad(x, (2, 3, 2, 3))  # TF 'same' for 7x7 stride 2 on 224: 2 before, 3 after
        x = F.relu(self.conv1_bn(self.conv1(x)))
        x = F.max_pool2d(x, 3, stride=2)
        for block in self.blocks:
            x = block(x)
        x = F.avg_pool2d(x, 7)
        return F.relu(self.dim_proj(torch.flatten(x, 1)))

    def keras_names(self) -> dict[str, nn.Module]:
        """WeidiXie's Keras layer name of every weighted module, e.g. ``conv2_1_3x3/bn``."""
        out: dict[str, nn.Module] = {"conv1/7x7_s2": self.conv1, "conv1/7x7_s2/bn": self.conv1_bn}
        index = 0
        for stage, count, _mid, _cout, _stride in STAGES:
            for block in range(1, count + 1):
                module = self.blocks[index]
                index += 1
                for attr, name in _keras_names(stage, block).items():
                    child = getattr(module, attr)
                    if child is not None:
                        out[name] = child
        out["dim_proj"] = self.dim_proj
        return out


class PaperIdentityEncoder(nn.Module):
    """The authors' ``IDEncoder``: RGB images in [0, 1] -> L2-normalised 512-d identity.

    Preprocessing, exactly as their code: ``x*255``; crop rows and columns
    ``[int(0.1*R) : int(0.9*R)]`` where R is the configured ``resolution`` (the generator's),
    *not* the image size; TF2 bilinear resize to 256x256; centre crop ``[16:240]``; RGB -> BGR;
    subtract (91.4953, 103.8827, 131.0912) in BGR order; the network; then
    ``x / sqrt(max(sum(x^2), 1e-12))``.

    Conventions: input ``images`` float ``[B, 3, H, W]`` RGB in [0, 1] with H, W >=
    ``int(0.9*resolution)``; output float ``[B, 512]`` with unit rows (the authors'
    ``[B, 1, 512]`` without the singleton axis).
    """

    mean_bgr: torch.Tensor

    def __init__(self, resolution: int = 256) -> None:
        super().__init__()
        if resolution < 10:
            raise ShapeError(f"identity encoder resolution must be >= 10, got {resolution}")
        self.resolution = int(resolution)
        self.net = VGGFace2ResNet50()
        self.register_buffer(
            "mean_bgr", torch.tensor(VGGFACE2_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = int(0.1 * self.resolution), int(0.9 * self.resolution)
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < hi:
            raise ShapeError(
                f"identity encoder (resolution {self.resolution}) expects RGB [B,3,H,W] with "
                f"H, W >= {hi}, got {tuple(images.shape)}"
            )
        x = images.float() * 255.0
        x = x[:, :, lo:hi, lo:hi]
        x = tf_resize_bilinear(x, (256, 256))[:, :, 16:240, 16:240]
        x = x.flip(1) - self.mean_bgr  # RGB -> BGR, then the BGR means
        emb: torch.Tensor = self.net(x)
        norm = emb.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-12).rsqrt()
        return emb * norm


def _assign(module: nn.Module, layer: KerasLayer, path: Path) -> dict[str, torch.Tensor]:
    """Keras tensors of ``layer`` as ``module``'s parameters (shapes checked)."""
    arrays = [np.asarray(a, dtype=np.float32) for _, a in layer.weights]
    if isinstance(module, nn.Conv2d):
        want_roles: tuple[str, ...] = ("kernel",)
        o, i, kh, kw = module.weight.shape
        want_shapes: tuple[tuple[int, ...], ...] = ((kh, kw, i, o),)
    elif isinstance(module, nn.BatchNorm2d):
        want_roles = ("gamma", "beta", "moving_mean", "moving_variance")
        want_shapes = ((module.num_features,),) * 4
    elif isinstance(module, nn.Linear):
        want_roles = ("kernel", "bias")
        want_shapes = ((module.in_features, module.out_features), (module.out_features,))
    else:  # pragma: no cover - keras_names only lists the three kinds above
        raise TypeError(type(module).__name__)
    if layer.roles != want_roles or layer.shapes != want_shapes:
        raise ModelError(
            f"{path}: layer {layer.name!r} has variables {[n for n, _ in layer.weights]} of "
            f"shapes {[list(s) for s in layer.shapes]}, but the VGGFace2 ResNet-50 needs "
            f"{list(want_roles)} of shapes {[list(s) for s in want_shapes]}; the file is from "
            "another network"
        )
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    if isinstance(module, nn.Conv2d):
        return {"weight": t[0].permute(3, 2, 0, 1).contiguous()}
    if isinstance(module, nn.BatchNorm2d):
        return {"weight": t[0], "bias": t[1], "running_mean": t[2], "running_var": t[3],
                "num_batches_tracked": torch.tensor(0)}
    return {"weight": t[0].T.contiguous(), "bias": t[1]}


def id_encoder_from_keras_h5(path: str | Path, resolution: int = 256) -> PaperIdentityEncoder:
    """Build the identity encoder from WeidiXie's / the authors' ``vggface2.h5`` (strict).

    Every weighted layer of the network must be in the file under its Keras name with the
    right roles and shapes; the only other layer allowed is the unused 8631-way
    ``classifier_low_dim``. Anything else raises :class:`ModelError` naming it.
    """
    path = Path(path)
    encoder = PaperIdentityEncoder(resolution)
    wanted = encoder.net.keras_names()
    layers = {layer.name: layer for layer in weighted_layers(read_keras_layers(path))}
    extra = sorted(set(layers) - set(wanted) - {CLASSIFIER})
    missing = [name for name in wanted if name not in layers]
    if missing or extra:
        raise ModelError(
            f"{path} is not the VGGFace2 ResNet-50: missing layers {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected layers {extra[:5]}"
            f"{' ...' if len(extra) > 5 else ''}"
        )
    prefix = {id(m): n for n, m in encoder.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for name, module in wanted.items():
        for key, value in _assign(module, layers[name], path).items():
            state[f"{prefix[id(module)]}.{key}"] = value
    load_state_strict(encoder, state, str(path))
    return encoder


def save_id_encoder(encoder: PaperIdentityEncoder, path: str | Path) -> Path:
    """Store the identity network in our format; the resolution is chosen at load time."""
    return save_component(encoder, ID_ENCODER_KIND, {"embedding": 512, "input_size": 224}, path)


def load_id_encoder(path: str | Path, resolution: int = 256) -> PaperIdentityEncoder:
    """Load an identity encoder written by :func:`save_id_encoder` (strict; eval).

    ``resolution`` is the generator resolution the authors' crop is defined by (256 for the
    published model).
    """
    config, state = read_component(path, ID_ENCODER_KIND)
    if config != {"embedding": 512, "input_size": 224}:
        raise ModelError(f"{path}: unsupported identity encoder config {config!r}")
    encoder = PaperIdentityEncoder(resolution)
    load_state_strict(encoder, state, str(path))
    return encoder
