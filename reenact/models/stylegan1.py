"""StyleGAN v1 generator (our own PyTorch code) that runs the authors' TF2 port and NVIDIA's v1 weights.

The synthesis network computes what ``G_synthesis`` of StyleGAN v1 computes (the TF2/Keras
port used by ID-disentanglement and NVIDIA's original): a learned 4x4 constant, then for
every synthesis layer *i* (dlatent row *i*) a convolution followed by the same epilogue:
noise x per-channel strength, bias, leaky ReLU 0.2, instance norm (eps 1e-8), style
modulation ``x * (s[:, :C] + 1) + s[:, C:]`` with ``s = StyleMod(w_i)``. Blocks of output
resolution below 128 upsample by nearest-neighbour x2 then a 3x3 conv; from 128 on a *fused*
stride-2 transposed convolution (the 3x3 kernel padded to 5x5 and its four 1-pixel shifts
summed into 4x4). Both are followed by the [1,2,1] (x) [1,2,1] / 16 blur. A 1x1 ``ToRGB``
with bias ends the network. Equalised learning rate: stored kernels are multiplied at run
time by ``gain / sqrt(fan_in)``, gain sqrt(2) for the 3x3 convs, 1 for StyleMod and ToRGB.

The interface is that of :class:`reenact.models.stylegan2.Generator`, so the pipeline, the
optimiser and the image tools take either: ``G.synthesis(ws, noise_mode=...)``,
``G.mapping(z, None, truncation_psi=...)``, ``num_ws``, ``w_dim``, ``z_dim``,
``img_resolution``.

Conventions:
    z: float ``[B, z_dim]`` (pixel-normalised inside the mapping network).
    ws: float ``[B, num_ws, w_dim]`` with ``num_ws = 2 * log2(R) - 2``.
    img: float32 ``[B, 3, R, R]``, NCHW, nominally [-1, 1] (not clipped).

Weights are imported from the authors' TF checkpoint or Keras ``.h5`` (by Keras variable
name, e.g. ``G_synthesis/8x8/Conv0_up/StyleMod/kernel``) or from NVIDIA's official v1
``.pkl`` (names such as ``8x8/Conv0_up/weight`` inside the ``G_synthesis`` component), and
stored in our format: a ``.safetensors`` file whose metadata key ``reenact_stylegan1`` holds
the JSON config (:func:`save_stylegan1` / :func:`load_stylegan1`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import ModelError, ShapeError

__all__ = [
    "FORMAT_VERSION",
    "SynthesisNetwork",
    "MappingNetwork",
    "Generator",
    "published_config",
    "synthesis_state_from_keras",
    "mapping_state_from_nvidia",
    "synthesis_state_from_nvidia",
    "generator_from_state",
    "save_stylegan1",
    "load_stylegan1",
    "load_stylegan1_synthesis",
    "convert_stylegan1",
    "MAPPING_KIND",
    "mapping_from_nvidia_pickle",
    "save_mapping",
    "load_mapping",
    "attach_mapping",
    "tiny_stylegan1",
]

FORMAT_VERSION = "reenact-stylegan1/1"
_META_KEY = "reenact_stylegan1"
_NOISE_MODES = ("const", "random", "none")
_FUSED_MIN_RES = 128
_CONST_CHANNELS = 512


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4 or (
        resolution & (resolution - 1)
    ):
        raise ModelError(f"StyleGAN v1: resolution must be a power of two >= 4, got {resolution!r}")
    return int(math.log2(resolution))


def _layer_res(i: int) -> int:
    """Output resolution of synthesis layer ``i`` (0, 1 -> 4; 2, 3 -> 8; ...)."""
    return 2 ** (i // 2 + 2)


class _Params(nn.Module):
    """A named holder of parameters: keeps the TF layers' state-dict names (``weight``, ``bias``)."""

    weight: nn.Parameter
    bias: nn.Parameter


class _Epilogue(nn.Module):
    """Noise, bias, leaky ReLU, instance norm, style modulation of one synthesis layer."""

    noise_const: torch.Tensor

    def __init__(self, channels: int, res: int, w_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("noise_const", torch.zeros([1, 1, res, res]))
        self.noise_strength = nn.Parameter(torch.zeros([channels]))
        self.bias = nn.Parameter(torch.zeros([channels]))
        self.style_weight = nn.Parameter(torch.randn([2 * channels, w_dim]))  # [out, in]
        self.style_bias = nn.Parameter(torch.zeros([2 * channels]))
        self.style_gain = 1.0 / math.sqrt(w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        strength = self.noise_strength.view(1, -1, 1, 1)
        bias = self.bias.view(1, -1, 1, 1)
        if noise_mode == "const":
            x = x + (self.noise_const * strength + bias)  # [1, C, H, W]: computed once per batch
        elif noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, x.shape[2], x.shape[3]], device=x.device, dtype=x.dtype)
            x = x + (noise * strength + bias)
        else:
            x = x + bias
        x = F.leaky_relu(x, 0.2)
        # instance norm and modulation folded into one multiply-add per element:
        # (x - mean) * rstd * (s + 1) + shift = x * a + (shift - mean * a)
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        style = F.linear(w, self.style_weight * self.style_gain, self.style_bias)
        scale = (style[:, : self.channels] + 1).view(-1, self.channels, 1, 1)
        shift = style[:, self.channels :].view(-1, self.channels, 1, 1)
        a = torch.rsqrt(var + 1e-8) * scale
        return torch.addcmul(shift - mean * a, x, a)


class SynthesisNetwork(nn.Module):
    """ws ``[B, num_ws, w_dim]`` -> image ``[B, 3, R, R]`` (StyleGAN v1 ``G_synthesis``).

    ``channels[j]`` is the width of the output of block ``4 * 2**j`` (``channels[0]`` is
    the 4x4 ``Conv``); the constant always has 512 channels. Parameters (PyTorch layouts):
    ``const``, ``convs.{i}.weight`` ``[Cout, Cin, 3, 3]`` for layers 1.., ``epilogues.{i}.*``
    and ``torgb.weight`` ``[3, C, 1, 1]`` / ``torgb.bias``.
    """

    blur_kernel: torch.Tensor

    def __init__(
        self,
        img_resolution: int,
        channels: list[int] | tuple[int, ...],
        w_dim: int = 512,
        const_channels: int = _CONST_CHANNELS,
        img_channels: int = 3,
    ) -> None:
        super().__init__()
        log2 = _check_resolution(img_resolution)
        channels = [int(c) for c in channels]
        if len(channels) != log2 - 1 or any(c <= 0 for c in channels):
            raise ModelError(
                f"StyleGAN v1 synthesis at {img_resolution} needs {log2 - 1} positive block widths "
                f"(4x4 .. {img_resolution}x{img_resolution}), got {channels}"
            )
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.w_dim = w_dim
        self.channels = channels
        self.const_channels = const_channels
        self.num_ws = 2 * log2 - 2
        self.config: dict[str, Any] = {
            "img_resolution": img_resolution,
            "channels": list(channels),
            "w_dim": w_dim,
            "const_channels": const_channels,
            "img_channels": img_channels,
        }
        self.const = nn.Parameter(torch.randn([1, const_channels, 4, 4]))
        self.convs = nn.ModuleDict()
        epilogues = []
        in_ch = const_channels
        for i in range(self.num_ws):
            out_ch = const_channels if i == 0 else channels[i // 2]
            if i > 0:
                conv = _Params()
                conv.weight = nn.Parameter(torch.randn([out_ch, in_ch, 3, 3]))
                self.convs[str(i)] = conv
            epilogues.append(_Epilogue(out_ch, _layer_res(i), w_dim))
            in_ch = out_ch
        self.epilogues = nn.ModuleList(epilogues)
        self.torgb = _Params()
        self.torgb.weight = nn.Parameter(torch.randn([img_channels, in_ch, 1, 1]))
        self.torgb.bias = nn.Parameter(torch.zeros([img_channels]))
        blur = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer(
            "blur_kernel", (blur[:, None] * blur[None, :] / 16).view(1, 1, 3, 3), persistent=False
        )

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        weight = cast(_Params, self.convs[str(i)]).weight
        gain = math.sqrt(2.0) / math.sqrt(weight.shape[1] * 9)
        w = weight * gain
        res = _layer_res(i)
        if i >= 2 and i % 2 == 0:  # Conv0_up
            if res >= _FUSED_MIN_RES:
                w = F.pad(w, [1, 1, 1, 1])
                w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
                x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=1)
            else:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = F.conv2d(x, w, padding=1)
            c = x.shape[1]
            x = F.conv2d(x, self.blur_kernel.expand(c, 1, 3, 3), padding=1, groups=c)
            return x
        return F.conv2d(x, w, padding=1)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", **_unused: Any) -> torch.Tensor:
        """Render ``ws``.

        Conventions: ws float ``[B, num_ws, w_dim]``; returns float32 ``[B, 3, R, R]`` (NCHW,
        nominally [-1, 1], unclipped). ``noise_mode``: 'const' (the stored noise images, as
        the authors run it), 'random' (fresh N(0,1) per call) or 'none'. Extra keyword
        arguments of the StyleGAN2 interface (``force_fp32``, ``fused_modconv``) are accepted
        and ignored.
        """
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or tuple(ws.shape[1:]) != (
            self.num_ws,
            self.w_dim,
        ):
            raise ShapeError(
                f"StyleGAN v1 synthesis: ws must be [B, {self.num_ws}, {self.w_dim}], got "
                f"{tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__}"
            )
        if not ws.is_floating_point():
            raise ShapeError(f"StyleGAN v1 synthesis: ws must be a float tensor, got {ws.dtype}")
        if noise_mode not in _NOISE_MODES:
            raise ShapeError(f"synthesis: noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        for i, epilogue in enumerate(self.epilogues):
            if i > 0:
                x = self._conv(i, x)
            x = epilogue(x, ws[:, i], noise_mode)
        w = self.torgb.weight * (1.0 / math.sqrt(self.torgb.weight.shape[1]))
        return F.conv2d(x, w, self.torgb.bias).contiguous()


class MappingNetwork(nn.Module):
    """StyleGAN v1 ``G_mapping``: z ``[B, z_dim]`` -> ws ``[B, num_ws, w_dim]``.

    Pixel-norm of z, then ``num_layers`` dense layers (equalised LR with gain sqrt(2) and
    learning-rate multiplier 0.01 on weights and biases; leaky ReLU 0.2 after each),
    broadcast to ``num_ws`` rows. ``w_avg`` (the official ``dlatent_avg``) is the truncation
    centre.
    """

    w_avg: torch.Tensor

    def __init__(self, z_dim: int = 512, w_dim: int = 512, num_ws: int = 14, num_layers: int = 8,
                 lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.lr_multiplier = lr_multiplier
        self.config = {"z_dim": z_dim, "w_dim": w_dim, "num_layers": num_layers, "lr_multiplier": lr_multiplier}
        dims = [z_dim] + [w_dim] * num_layers
        self.weights = nn.ParameterList([nn.Parameter(torch.randn([dims[k + 1], dims[k]])) for k in range(num_layers)])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros([dims[k + 1]])) for k in range(num_layers)])
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """Map ``z`` ``[B, z_dim]`` to ``ws`` float32 ``[B, num_ws, w_dim]``.

        Conventions: ``c`` must be None (v1 has no class input); ``truncation_psi`` lerps
        rows ``< truncation_cutoff`` (all when None) towards ``w_avg``.
        """
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ShapeError(
                f"mapping: z must be [B, {self.z_dim}], got "
                f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}"
            )
        if c is not None and c.numel() > 0:
            raise ShapeError("StyleGAN v1 mapping takes no class input c")
        x = z.to(torch.float32)
        x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)
        for w, b in zip(self.weights, self.biases, strict=True):
            gain = math.sqrt(2.0) / math.sqrt(w.shape[1]) * self.lr_multiplier
            x = F.leaky_relu(F.linear(x, w * gain, b * self.lr_multiplier), 0.2)
        ws = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


class _MissingMapping(nn.Module):
    """Stands in for an absent mapping network: any call says what to add."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise ModelError(
            "this StyleGAN v1 generator has no mapping network (z -> w): the authors' "
            "synthesis checkpoint does not contain one; import NVIDIA's official StyleGAN v1 "
            ".pkl (karras2019stylegan-ffhq-*.pkl) to generate synthetic identities"
        )


class Generator(nn.Module):
    """StyleGAN v1 ``mapping`` (optional) + ``synthesis``, with the StyleGAN2 interface."""

    def __init__(self, synthesis: SynthesisNetwork, mapping: MappingNetwork | None = None) -> None:
        super().__init__()
        if mapping is not None and (mapping.w_dim != synthesis.w_dim or mapping.num_ws != synthesis.num_ws):
            raise ModelError(
                f"StyleGAN v1: mapping gives {mapping.num_ws}x{mapping.w_dim} ws, synthesis needs "
                f"{synthesis.num_ws}x{synthesis.w_dim}"
            )
        self.synthesis = synthesis
        self.mapping: nn.Module = mapping if mapping is not None else _MissingMapping()
        self.has_mapping = mapping is not None
        self.img_resolution = synthesis.img_resolution
        self.img_channels = synthesis.img_channels
        self.num_ws = synthesis.num_ws
        self.w_dim = synthesis.w_dim
        self.z_dim = mapping.z_dim if mapping is not None else synthesis.w_dim
        self.c_dim = 0
        self.config: dict[str, Any] = {
            "synthesis": synthesis.config,
            "mapping": mapping.config if mapping is not None else None,
        }

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const", **_unused: Any) -> torch.Tensor:
        """z ``[B, z_dim]`` -> image float32 ``[B, 3, R, R]`` (needs the mapping network)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


def published_config(resolution: int = 256) -> dict[str, Any]:
    """Synthesis config of the published FFHQ StyleGAN v1 (fmap_base 8192, fmap_max 512)."""
    log2 = _check_resolution(resolution)
    return {
        "img_resolution": resolution,
        "channels": [min(8192 // 2**s, 512) for s in range(1, log2)],
        "w_dim": 512,
        "const_channels": _CONST_CHANNELS,
        "img_channels": 3,
    }


# --- importing foreign names ----------------------------------------------------------------


Arrays = dict[str, np.ndarray]


def _infer_resolution(names: set[str], source: str, prefix: str) -> int:
    res = 4
    while any(n.startswith(f"{prefix}{res * 2}x{res * 2}/") for n in names):
        res *= 2
    if not any(n.startswith(f"{prefix}4x4/Const/") for n in names):
        raise ModelError(
            f"{source} is not a StyleGAN v1 synthesis network: it has no {prefix}4x4/Const "
            f"variables (found e.g. {sorted(names)[:3]})"
        )
    return res


def _take(arrays: Arrays, used: set[str], name: str, shape: tuple[int, ...] | None, source: str) -> np.ndarray:
    if name not in arrays:
        raise ModelError(f"{source}: missing tensor {name!r} of the StyleGAN v1 synthesis network")
    arr = np.asarray(arrays[name])
    if shape is not None and tuple(arr.shape) != shape:
        raise ModelError(f"{source}: tensor {name!r} has shape {tuple(arr.shape)}, expected {shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ModelError(f"{source}: tensor {name!r} has dtype {arr.dtype}, expected float")
    used.add(name)
    return arr.astype(np.float32)


def _synthesis_state(arrays: Arrays, source: str, scheme: str, resolution: int | None,
                     ignore: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Map foreign names onto our parameters. ``scheme``: 'keras' or 'nvidia'."""
    if scheme == "keras":
        p, kernel, bias, noise_name, rgb = "G_synthesis/", "kernel", "bias/bias", "G_synthesis/noise{}/noise", "ToRGB_lod0"
    else:
        p, kernel, bias, noise_name, rgb = "", "weight", "bias", "noise{}", "ToRGB_lod0"
    names = set(arrays)
    found = _infer_resolution(names, source, p)
    if resolution is not None and resolution != found:
        raise ModelError(
            f"{source} holds a {found}x{found} StyleGAN v1 synthesis network, but "
            f"{resolution}x{resolution} was asked for; use the checkpoint of that resolution "
            f"(stylegan_G_{resolution}x{resolution}_synthesis)"
        )
    log2 = _check_resolution(found)
    num_layers = 2 * log2 - 2
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    const = _take(arrays, used, f"{p}4x4/Const/const", None, source)
    if const.ndim != 4 or const.shape[0] != 1 or const.shape[2:] != (4, 4):
        raise ModelError(f"{source}: tensor {p}4x4/Const/const has shape {const.shape}, expected [1, C, 4, 4]")
    cc = int(const.shape[1])
    w_dim = int(np.asarray(arrays.get(f"{p}4x4/Const/StyleMod/{kernel}", np.zeros((512, 0)))).shape[0])
    state["const"] = t(const)
    channels: list[int] = []
    in_ch = cc
    for i in range(num_layers):
        res = _layer_res(i)
        if i == 0:
            scope = f"{p}4x4/Const"
            out_ch = cc
        else:
            scope = f"{p}{res}x{res}/" + ("Conv" if i == 1 else "Conv0_up" if i % 2 == 0 else "Conv1")
            fused = i % 2 == 0 and i >= 2 and res >= _FUSED_MIN_RES
            wname = f"{scope}/weight" if fused else f"{scope}/{kernel}"
            wk = _take(arrays, used, wname, None, source)
            if wk.ndim != 4 or wk.shape[:3] != (3, 3, in_ch):
                raise ModelError(f"{source}: tensor {wname!r} has shape {wk.shape}, expected [3, 3, {in_ch}, C]")
            out_ch = int(wk.shape[3])
            state[f"convs.{i}.weight"] = t(wk.transpose(3, 2, 0, 1))
            if i % 2 == 1:
                channels.append(out_ch)
        e = f"epilogues.{i}."
        state[e + "noise_const"] = t(_take(arrays, used, noise_name.format(i), (1, 1, res, res), source))
        state[e + "noise_strength"] = t(_take(arrays, used, f"{scope}/Noise/weight", (out_ch,), source))
        state[e + "bias"] = t(_take(arrays, used, f"{scope}/{bias}", (out_ch,), source))
        sk = _take(arrays, used, f"{scope}/StyleMod/{kernel}", (w_dim, 2 * out_ch), source)
        state[e + "style_weight"] = t(sk.T)
        state[e + "style_bias"] = t(_take(arrays, used, f"{scope}/StyleMod/bias", (2 * out_ch,), source))
        in_ch = out_ch
    rk = _take(arrays, used, f"{p}{rgb}/{kernel}", (1, 1, in_ch, 3), source)
    state["torgb.weight"] = t(rk.transpose(3, 2, 0, 1))
    state["torgb.bias"] = t(_take(arrays, used, f"{p}{rgb}/bias", (3,), source))
    extra = sorted(n for n in names - used if not any(n.startswith(ig) for ig in ignore))
    if extra:
        raise ModelError(
            f"{source}: unexpected tensor(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} "
            f"({len(extra)} extra) for a {found}x{found} StyleGAN v1 synthesis network"
        )
    config = {"img_resolution": found, "channels": channels, "w_dim": w_dim, "const_channels": cc,
              "img_channels": 3}
    return config, state


def synthesis_state_from_keras(arrays: Arrays, source: str, resolution: int | None = None
                               ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and state dict from Keras variable names (``G_synthesis/...``; ``:0`` optional)."""
    arrays = {k[:-2] if k.endswith(":0") else k: v for k, v in arrays.items()}
    return _synthesis_state(arrays, source, "keras", resolution)


def synthesis_state_from_nvidia(arrays: Arrays, source: str, resolution: int | None = None
                                ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and state dict from the variables of NVIDIA's v1 ``G_synthesis`` component.

    The progressive-growing leftovers (``lod`` and ``ToRGB_lod1..``) are not used.
    """
    arrays = {k: v for k, v in arrays.items() if k != "lod"}
    return _synthesis_state(arrays, source, "nvidia", resolution, ignore=tuple(f"ToRGB_lod{k}/" for k in range(1, 12)))


def mapping_state_from_nvidia(arrays: Arrays, source: str, dlatent_avg: np.ndarray | None = None
                              ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and state dict from NVIDIA's v1 ``G_mapping`` variables (``Dense{k}/weight|bias``)."""
    used: set[str] = set()
    num_layers = 0
    while f"Dense{num_layers}/weight" in arrays:
        num_layers += 1
    if num_layers == 0:
        raise ModelError(f"{source}: the G_mapping component has no Dense0/weight; not a StyleGAN v1 mapping")
    state: dict[str, torch.Tensor] = {}
    z_dim = int(np.asarray(arrays["Dense0/weight"]).shape[0])
    w_dim = int(np.asarray(arrays[f"Dense{num_layers - 1}/weight"]).shape[1])
    in_dim = z_dim
    for k in range(num_layers):
        out = w_dim
        w = _take(arrays, used, f"Dense{k}/weight", (in_dim, out), source)
        state[f"weights.{k}"] = torch.from_numpy(np.ascontiguousarray(w.T))
        state[f"biases.{k}"] = torch.from_numpy(_take(arrays, used, f"Dense{k}/bias", (out,), source))
        in_dim = out
    extra = sorted(set(arrays) - used)
    if extra:
        raise ModelError(f"{source}: unexpected tensor(s) {extra[:5]} in the G_mapping component")
    avg = np.zeros([w_dim], np.float32) if dlatent_avg is None else np.asarray(dlatent_avg, np.float32)
    if avg.shape != (w_dim,):
        raise ModelError(f"{source}: dlatent_avg has shape {avg.shape}, expected ({w_dim},)")
    state["w_avg"] = torch.from_numpy(avg.copy())
    return {"z_dim": z_dim, "w_dim": w_dim, "num_layers": num_layers, "lr_multiplier": 0.01}, state


# --- our format -------------------------------------------------------------------------------


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise ModelError(f"{source}: missing tensor(s) {missing[:5]}, unexpected tensor(s) {extra[:5]}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ModelError(f"{source}: tensor {key} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}")
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def _check_config(config: Any, source: str) -> None:
    """Raise :class:`ModelError` unless ``config`` is a sane StyleGAN v1 config (nothing built).

    Widths are ints in ``0..MAX_DIM`` (the published network uses 512), at most 64 mapping
    layers, a power-of-two resolution up to 8192: a few bytes of JSON cannot ask for terabytes.
    """
    from reenact.models.component_io import MAX_DIM, check_dims

    if not isinstance(config, dict) or not isinstance(config.get("synthesis"), dict):
        raise ModelError(f"{source}: StyleGAN v1 config must hold a 'synthesis' object, got {config!r}")
    syn = config["synthesis"]
    check_dims(syn, ("img_resolution", "channels", "w_dim", "const_channels", "img_channels"), source)
    if "img_resolution" in syn:
        _check_resolution(syn["img_resolution"])
    mcfg = config.get("mapping")
    if mcfg is not None:
        if not isinstance(mcfg, dict):
            raise ModelError(f"{source}: StyleGAN v1 mapping config must be an object or null, got {mcfg!r}")
        check_dims(mcfg, ("z_dim", "w_dim"), source, limit=MAX_DIM)
        check_dims(mcfg, ("num_layers",), source, limit=64)
        lr = mcfg.get("lr_multiplier", 0.01)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise ModelError(f"{source}: StyleGAN v1 mapping lr_multiplier must be a number, got {lr!r}")


def _build_generator(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> Generator:
    """The :class:`Generator` of ``config``, sized on the meta device and matched against the
    file's tensor ``shapes`` before anything is allocated (:func:`component_io.build_bounded`)."""
    from reenact.models.component_io import build_bounded

    _check_config(config, source)

    def build() -> Generator:
        with torch.random.fork_rng(devices=[]):
            synthesis = SynthesisNetwork(**config["synthesis"])
            mcfg = config.get("mapping")
            mapping = MappingNetwork(num_ws=synthesis.num_ws, **mcfg) if mcfg else None
        return Generator(synthesis, mapping)

    try:
        return build_bounded(build, source, shapes)
    except TypeError as exc:
        raise ModelError(f"{source}: invalid StyleGAN v1 config {config!r}: {exc}") from exc


def generator_from_state(config: dict[str, Any], state: dict[str, torch.Tensor], source: str = "state") -> Generator:
    """Build a :class:`Generator` from our config (``synthesis``, ``mapping`` or None) and state.

    ``state`` keys are ``synthesis.*`` and ``mapping.*``; strict (ModelError naming a
    missing, extra or mis-shaped tensor). The config is bounded and matched against the
    state's shapes before the network is allocated. Eval mode, no gradients.
    """
    G = _build_generator(config, {k: tuple(v.shape) for k, v in state.items()}, source)
    return _load_generator_state(G, state, source)


def _load_generator_state(G: Generator, state: dict[str, torch.Tensor], source: str) -> Generator:
    _load_strict(G.synthesis, {k[10:]: v for k, v in state.items() if k.startswith("synthesis.")}, source)
    mstate = {k[8:]: v for k, v in state.items() if k.startswith("mapping.")}
    if G.has_mapping:
        _load_strict(G.mapping, mstate, source)
    elif mstate:
        raise ModelError(f"{source}: mapping tensors present but the config has no mapping network")
    other = [k for k in state if not k.startswith(("synthesis.", "mapping."))]
    if other:
        raise ModelError(f"{source}: unexpected tensor(s) {other[:5]}")
    G.eval().requires_grad_(False)
    return G


def save_stylegan1(G: Generator, path: str | Path) -> Path:
    """Write ``G`` as float32 safetensors with its JSON config in the metadata (atomically)."""
    from safetensors.torch import save_file

    from reenact.io.atomic import atomic_path

    if not isinstance(G, Generator):
        raise ModelError(f"save_stylegan1 expects a stylegan1.Generator, got {type(G).__name__}")
    path = Path(path)
    tensors = {f"synthesis.{k}": v.detach().to("cpu", torch.float32).contiguous()
               for k, v in G.synthesis.state_dict().items()}
    if G.has_mapping:
        tensors.update({f"mapping.{k}": v.detach().to("cpu", torch.float32).contiguous()
                        for k, v in G.mapping.state_dict().items()})
    metadata = {"format": FORMAT_VERSION, _META_KEY: json.dumps(G.config, sort_keys=True), "num_ws": str(G.num_ws)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as exc:
        raise ModelError(f"cannot write StyleGAN v1 generator to {path}: {exc.strerror or exc}") from exc
    return path


def load_stylegan1(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a file written by :func:`save_stylegan1` (strict; eval; no gradients).

    The JSON config is bounded and the network sized against the file's tensor shapes
    before any tensor is allocated or read.
    """
    from safetensors import safe_open

    from reenact.models.component_io import file_shapes, load_tensors

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"StyleGAN v1 file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ModelError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION or _META_KEY not in meta:
        raise ModelError(f"{path} is not a reenact StyleGAN v1 file (format {meta.get('format')!r})")
    try:
        config = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: StyleGAN v1 config metadata is not valid JSON: {exc}") from exc
    shapes = file_shapes(path)
    G = _build_generator(config, shapes, str(path))
    return _load_generator_state(G, load_tensors(path, shapes), str(path)).to(device)


def _read_foreign(source: str | Path, resolution: int | None) -> Generator:
    """A Generator from a TF checkpoint prefix, a Keras ``.h5``, an official v1 ``.pkl``."""
    src = str(source)
    path = Path(src)
    if src.endswith(".pkl"):
        from reenact.models.pickle_safe import load_tf1_network_pickle

        return _from_nvidia_pickle(load_tf1_network_pickle(path), src, resolution)
    from reenact.models.readers.tf_checkpoint import (
        is_tf_checkpoint_prefix,
        read_checkpoint_by_full_name,
    )

    if src.endswith(".index"):
        src = src[: -len(".index")]
    if is_tf_checkpoint_prefix(src):
        arrays = read_checkpoint_by_full_name(src)
    elif path.is_file():
        from reenact.models.readers.keras_h5 import read_keras_weights

        arrays = read_keras_weights(path)
    else:
        raise ModelError(
            f"{src}: neither a TF checkpoint prefix ({src}.index + .data-*) nor a Keras .h5 file "
            "exists there; give the path without a suffix, as the authors' load_weights does"
        )
    config, state = synthesis_state_from_keras(arrays, src, resolution)
    return generator_from_state({"synthesis": config, "mapping": None},
                                {f"synthesis.{k}": v for k, v in state.items()}, source=src)


def _from_nvidia_pickle(networks: Any, source: str, resolution: int | None) -> Generator:
    from reenact.models.pickle_safe import TF1NetworkRecord

    if isinstance(networks, tuple) and len(networks) == 3:
        net = networks[2]  # (G, D, Gs): Gs, the moving average, is the one to run
    else:
        net = networks
    if not isinstance(net, TF1NetworkRecord):
        raise ModelError(f"{source}: expected a dnnlib Network (or a (G, D, Gs) tuple), got {type(net).__name__}")
    syn = net.component("G_synthesis")
    config, state = synthesis_state_from_nvidia(syn.variables(), source, resolution)
    full = {f"synthesis.{k}": v for k, v in state.items()}
    mcfg = None
    if "G_mapping" in (net.state.get("components") or {}):
        own = net.variables()
        mcfg, mstate = mapping_state_from_nvidia(net.component("G_mapping").variables(), source,
                                                 own.get("dlatent_avg"))
        full.update({f"mapping.{k}": v for k, v in mstate.items()})
    return generator_from_state({"synthesis": config, "mapping": mcfg}, full, source=source)


def convert_stylegan1(source: str | Path, dest: str | Path, resolution: int | None = None) -> Generator:
    """Read foreign StyleGAN v1 weights once and store them in our format at ``dest``."""
    G = _read_foreign(source, resolution)
    save_stylegan1(G, dest)
    return G


def load_stylegan1_synthesis(source: str | Path, resolution: int | None = None) -> SynthesisNetwork:
    """The synthesis network from any supported file.

    ``source``: a TF checkpoint prefix (no suffix, like Keras ``load_weights``), a Keras
    ``.h5``, NVIDIA's v1 ``.pkl`` or our ``.safetensors``. ``resolution``, when given, must
    match the file (ModelError otherwise).
    """
    if str(source).endswith(".safetensors"):
        G = load_stylegan1(source)
        if resolution is not None and G.img_resolution != resolution:
            raise ModelError(f"{source} is a {G.img_resolution}x{G.img_resolution} generator, not {resolution}")
    else:
        G = _read_foreign(source, resolution)
    return G.synthesis


# --- the mapping network on its own (the authors' synthesis files have none) ------------------

MAPPING_KIND = "stylegan1_mapping"


def mapping_from_nvidia_pickle(source: str | Path, num_ws: int) -> MappingNetwork:
    """The ``G_mapping`` of NVIDIA's official StyleGAN v1 ``.pkl`` (``(G, D, Gs)``: Gs's), alone.

    Read through the restricted unpickler (nothing the pickle embeds is run). ``num_ws`` is
    how many rows the one w is broadcast to (the synthesis network it will drive). A pickle
    without a mapping network raises :class:`ModelError`.
    """
    from reenact.models.pickle_safe import TF1NetworkRecord, load_tf1_network_pickle

    src = str(source)
    networks = load_tf1_network_pickle(Path(src))
    net = networks[2] if isinstance(networks, tuple) and len(networks) == 3 else networks
    if not isinstance(net, TF1NetworkRecord):
        raise ModelError(f"{src}: expected a dnnlib Network (or a (G, D, Gs) tuple), got {type(net).__name__}")
    if "G_mapping" not in (net.state.get("components") or {}):
        raise ModelError(
            f"{src} holds no G_mapping component: it is not a full StyleGAN v1 generator; use the "
            "official karras2019stylegan-*.pkl"
        )
    config, state = mapping_state_from_nvidia(net.component("G_mapping").variables(), src,
                                              net.variables().get("dlatent_avg"))
    with torch.random.fork_rng(devices=[]):
        mapping = MappingNetwork(num_ws=num_ws, **config)
    _load_strict(mapping, state, src)
    mapping.eval().requires_grad_(False)
    return mapping


def save_mapping(mapping: MappingNetwork, path: str | Path) -> Path:
    """Store a mapping network in our component format (safetensors + JSON config)."""
    from reenact.models.component_io import save_component

    return save_component(mapping, MAPPING_KIND, dict(mapping.config), path)


def load_mapping(path: str | Path, num_ws: int) -> MappingNetwork:
    """Load a mapping network written by :func:`save_mapping` (strict; eval; no gradients).

    The JSON config is bounded and the network sized against the file's tensor shapes
    before any tensor is allocated or read.
    """
    from reenact.models.component_io import (
        build_bounded,
        load_state_strict,
        load_tensors,
        read_component_header,
    )

    config, shapes = read_component_header(path, MAPPING_KIND)
    _check_config({"synthesis": {}, "mapping": config}, str(path))

    def build() -> MappingNetwork:
        with torch.random.fork_rng(devices=[]):
            return MappingNetwork(num_ws=num_ws, **config)

    try:
        mapping = build_bounded(build, str(path), shapes)
    except TypeError as exc:
        raise ModelError(f"{path}: invalid StyleGAN v1 mapping config {config!r}: {exc}") from exc
    load_state_strict(mapping, load_tensors(path, shapes), str(path))
    return mapping


def attach_mapping(G: Generator, mapping: MappingNetwork) -> Generator:
    """A generator with ``G``'s synthesis network and ``mapping`` (w sizes checked)."""
    out = Generator(G.synthesis, mapping)
    out.eval().requires_grad_(False)
    return out


def tiny_stylegan1(seed: int = 0, resolution: int = 32, w_dim: int = 64, width: int = 32) -> Generator:
    """A small seeded, untrained StyleGAN v1 (mapping + synthesis) for tests and tiny training runs.

    Widths ``width`` everywhere (the constant too), ``w_dim``-d z and w; stored noise images
    drawn from the seed. Same arguments -> identical weights. Eval mode, no gradients.
    """
    log2 = _check_resolution(resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        synthesis = SynthesisNetwork(resolution, [width] * (log2 - 1), w_dim=w_dim, const_channels=width)
        mapping = MappingNetwork(z_dim=w_dim, w_dim=w_dim, num_ws=synthesis.num_ws, num_layers=4)
        with torch.no_grad():
            for e in cast(list[_Epilogue], list(synthesis.epilogues)):
                e.noise_const.normal_()
                e.noise_strength.fill_(0.1)
                e.style_weight.mul_(0.5)
            synthesis.torgb.weight.mul_(0.5)
    G = Generator(synthesis, mapping)
    G.eval().requires_grad_(False)
    return G
