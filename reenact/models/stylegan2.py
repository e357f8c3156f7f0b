"""StyleGAN2 generator (our own PyTorch code) that runs NVIDIA's official weights exactly.

The module tree, parameter names and shapes are those of the official StyleGAN2-ADA
``Generator`` (``mapping.fc0.weight``, ``synthesis.b64.conv0.affine.bias`` ...), so an
official ``state_dict`` loads unchanged and the outputs agree with the official CPU
reference path to float rounding (checked against ``shared/reference/stylegan2``).

Everything is plain PyTorch (no compiled extensions) and differentiable with respect to
``ws``; blocks flagged for fp16 compute in float16 on CUDA unless ``force_fp32=True``.

Conventions:
    z: float ``[B, z_dim]`` (any scale; each row is RMS-normalised).
    c: float ``[B, c_dim]`` or ``None`` when ``c_dim == 0``.
    ws: float ``[B, num_ws, w_dim]`` (W+; W is the same row repeated).
    img: float32 ``[B, img_channels, R, R]``, roughly [-1, 1] for trained models
    (no final activation; the tiny random model goes well beyond that range).

Weights in our own format are saved/loaded with :func:`save_generator` /
:func:`load_generator`: a ``.safetensors`` file whose metadata key ``reenact_generator``
holds the JSON constructor config (:attr:`Generator.config`) and ``format`` the format
version.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import ModelError, ShapeError
from reenact.io.atomic import atomic_path
from reenact.shapes import check_shape

__all__ = [
    "FORMAT_VERSION",
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "SynthesisBlock",
    "SynthesisLayer",
    "ToRGBLayer",
    "FullyConnectedLayer",
    "tiny_generator",
    "tiny_config",
    "ffhq_config",
    "save_generator",
    "load_generator",
    "generator_from_state_dict",
]

#: Version of our on-disk generator format (metadata key ``format``).
FORMAT_VERSION = "reenact-stylegan2/1"
_META_KEY = "reenact_generator"

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)
_NOISE_MODES = ("const", "random", "none")

_MAPPING_KEYS = {
    "num_layers",
    "embed_features",
    "layer_features",
    "activation",
    "lr_multiplier",
    "w_avg_beta",
}
_SYNTHESIS_KEYS = {
    "channel_base",
    "channel_max",
    "num_fp16_res",
    "conv_clamp",
    "architecture",
    "resample_filter",
    "fp16_channels_last",
    "use_noise",
    "kernel_size",
    "activation",
}


# --- low-level ops ------------------------------------------------------------------------


def make_resample_filter(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """The normalised 2-D FIR filter (outer product of ``taps``, sum 1) as ``[k, k]``."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    if f.ndim != 1 or f.numel() < 1:
        raise ModelError(f"resample_filter must be a 1-D list of taps, got {taps!r}")
    f2 = torch.outer(f, f)
    return f2 / f2.sum()


def _bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str,
    gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """Bias along dim 1, activation, gain, clamp (the official order)."""
    if b is not None:
        shape = [1] * x.ndim
        shape[1] = -1
        x = x + b.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, _LRELU_SLOPE)
    elif act != "linear":
        raise ModelError(f"unsupported activation {act!r}; use 'lrelu' or 'linear'")
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _fir(x: torch.Tensor, f: torch.Tensor, pad: int, gain: float) -> torch.Tensor:
    """Depthwise 2-D FIR filter (convolution, not correlation) with symmetric zero padding."""
    channels = x.shape[1]
    k = (f * gain).to(x.dtype).flip([0, 1])
    k = k[None, None].expand(channels, 1, *k.shape).contiguous()
    return F.conv2d(x, k, padding=pad, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Upsample ``[B,C,H,W]`` by 2 with the FIR filter ``f`` (``[k,k]``, gain 4).

    Same result as zero-insertion followed by padding ``(k+1)//2, (k-2)//2`` and the FIR,
    computed as one depthwise transposed convolution.
    """
    channels = x.shape[1]
    kk = f.shape[-1]
    if kk % 2 != 0:
        raise ModelError(f"upsample2d needs an even-sized filter, got {tuple(f.shape)}")
    k = (f * 4).to(x.dtype)[None, None].expand(channels, 1, *f.shape).contiguous()
    return F.conv_transpose2d(x, k, stride=2, padding=(kk - 2) // 2, groups=channels)


def _epilogue(
    y: torch.Tensor,
    scale: torch.Tensor | None,
    noise: torch.Tensor | None,
    bias: torch.Tensor | None,
    activation: str,
    gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """``clamp(gain * act(y * scale + noise + bias))`` in as few passes as possible.

    The gain is folded in before the activation (lrelu and linear are positively
    homogeneous), so this is one fused multiply-add, the activation and the clamp; they
    run in place when autograd does not need the intermediate values.
    """
    addend = None
    if bias is not None:
        addend = bias.to(y.dtype).reshape(1, -1, 1, 1)
    if noise is not None:
        noise = noise.to(y.dtype)
        addend = noise if addend is None else addend + noise
    if addend is not None and gain != 1:
        addend = addend * gain
    if addend is not None and y.is_contiguous(memory_format=torch.channels_last) and addend.ndim == 4:
        addend = addend.contiguous(memory_format=torch.channels_last)
    if scale is not None:
        mult = (scale * gain).to(y.dtype).reshape(y.shape[0], -1, 1, 1)
        y = torch.addcmul(addend, y, mult) if addend is not None else y * mult
    elif addend is not None:
        y = torch.add(addend, y, alpha=gain)
    elif gain != 1:
        y = y * gain
    inplace = not (torch.is_grad_enabled() and y.requires_grad)
    if activation == "lrelu":
        y = F.leaky_relu(y, _LRELU_SLOPE, inplace=inplace)
    elif activation != "linear":
        raise ModelError(f"unsupported activation {activation!r}; use 'lrelu' or 'linear'")
    if clamp is not None and clamp >= 0:
        y = y.clamp_(-clamp, clamp) if inplace else y.clamp(-clamp, clamp)
    return y


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused_modconv: bool = True,
    bias: torch.Tensor | None = None,
    activation: str = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """Style-modulated (optionally demodulated) convolution, then noise, bias, act, gain, clamp.

    ``x`` ``[B,I,H,W]``, ``weight`` ``[O,I,k,k]``, ``styles`` ``[B,I]``; ``up=2`` does a
    stride-2 transposed convolution followed by the FIR ``resample_filter`` (gain 4).
    Returns ``[B,O,H*up,W*up]``. ``fused_modconv`` runs one grouped convolution with
    per-sample weights; otherwise the styles scale the input and the demodulation scales
    the output (same result to float rounding; faster on CPU for batches > 1).
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape

    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise to keep float16 in range (same as the official code).
        weight = weight * (
            1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        # sum_{i,k} (W[o,i,k] s[b,i])^2 == sum_i s[b,i]^2 sum_k W[o,i,k]^2: a small matmul.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()

    if fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
        if dcoefs is not None:
            w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
        xg = x.reshape(1, -1, *x.shape[2:])
        y = _conv_resample(xg, w.reshape(-1, in_ch, kh, kw).to(x.dtype), up, padding, resample_filter, batch)
        y = y.reshape(batch, -1, *y.shape[2:])
        return _epilogue(y, None, noise, bias, activation, gain, clamp)

    x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
    y = _conv_resample(x, weight.to(x.dtype), up, padding, resample_filter, groups=1)
    return _epilogue(y, dcoefs, noise, bias, activation, gain, clamp)


def _conv_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    up: int,
    padding: int,
    f: torch.Tensor | None,
    groups: int,
) -> torch.Tensor:
    """Convolution (``up=1``) or x2 transposed convolution + FIR (``up=2``)."""
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    if up != 2 or f is None:
        raise ModelError(f"only up=1 or up=2 with a filter is supported, got up={up}")
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1]
    # Padding bookkeeping of the official conv2d_resample (transposed-conv fast path).
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    pxt = max(min(-px0, -px1), 0)
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=up, padding=pxt, groups=groups)
    pad0, pad1 = px0 + pxt, px1 + pxt
    if pad0 != pad1:
        x = F.pad(x, [max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
        x = x[:, :, max(-pad0, 0) : x.shape[2] - max(-pad1, 0), max(-pad0, 0) : x.shape[3] - max(-pad1, 0)]
        return _fir(x, f, 0, float(up * up))
    if pad0 < 0:
        x = x[:, :, -pad0 : x.shape[2] + pad0, -pad0 : x.shape[3] + pad0]
        pad0 = 0
    return _fir(x, f, pad0, float(up * up))


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


# --- layers -------------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate (official ``FullyConnectedLayer``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b: torch.Tensor | None = None
        if self.bias is not None:
            b = self.bias.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        gain = _LRELU_GAIN if self.activation == "lrelu" else 1.0
        return _bias_act(x, b, self.activation, gain, None)


class MappingNetwork(nn.Module):
    """z (and c) -> ws ``[B, num_ws, w_dim]``; keeps ``w_avg`` for truncation."""

    w_avg: torch.Tensor

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Map ``z`` ``[B,z_dim]`` (and ``c`` ``[B,c_dim]``) to ``ws`` ``[B,num_ws,w_dim]``.

        Conventions: z float ``[B, z_dim]``; c float ``[B, c_dim]`` or None when c_dim=0;
        returns float32 ``[B, num_ws, w_dim]``. ``truncation_psi`` lerps towards ``w_avg``
        (rows ``[0, truncation_cutoff)`` only, when a cutoff is given). ``w_avg`` is only
        updated when ``update_emas=True`` in training mode.
        """
        dims = check_shape(z, ["B", self.z_dim], "mapping: z", dtype="float")
        if self.c_dim > 0 or c is not None:
            check_shape(c, ["B", self.c_dim], "mapping: c", dims=dims,
                        what="(None when the model is unconditional)" if self.c_dim == 0 else "")
        if truncation_cutoff is not None and not (0 <= truncation_cutoff):
            raise ShapeError(f"mapping: truncation_cutoff must be >= 0 or None, got {truncation_cutoff}")

        x = None
        if self.z_dim > 0:
            x = _normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            assert c is not None
            y = _normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        assert x is not None
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.training and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ModelError("truncation needs mapping.w_avg, which this model does not have")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally x2 up), noise, bias, lrelu, gain, clamp."""

    noise_const: torch.Tensor
    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: list[float] | tuple[float, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = _LRELU_GAIN if activation == "lrelu" else 1.0
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1.0,
    ) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
                * self.noise_strength
            )
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            fused_modconv=fused_modconv,
            bias=self.bias,
            activation=self.activation,
            gain=self.act_gain * gain,
            clamp=act_clamp,
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels (no demodulation), bias, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=False,
            fused_modconv=fused_modconv,
            bias=self.bias,
            clamp=self.conv_clamp,
        )


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network (official ``SynthesisBlock``, no resnet)."""

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: list[float] | tuple[float, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        if architecture not in ("orig", "skip"):
            raise ModelError(
                f"synthesis architecture {architecture!r} is not supported; "
                "official FFHQ StyleGAN2 generators use 'skip' ('orig' also works)"
            )
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.num_conv = 0
        self.num_torgb = 0
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        if in_channels != 0:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        channels_last: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        w_iter = iter(ws.unbind(dim=1))
        on_cpu = ws.device.type == "cpu"
        use_half = self.use_fp16 and not force_fp32 and not on_cpu
        dtype = torch.float16 if use_half else torch.float32
        if fused_modconv is None:
            if on_cpu:  # grouped convolutions are slow on CPU beyond one sample
                fused_modconv = (not self.training) and ws.shape[0] == 1
            else:  # the official rule
                fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)
        if channels_last is None:
            channels_last = on_cpu  # oneDNN's transposed and depthwise convs are much faster in NHWC
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1]).contiguous(memory_format=fmt)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        else:
            assert x is not None
            x = x.to(dtype=dtype, memory_format=fmt)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws ``[B, num_ws, w_dim]`` -> image ``[B, C, R, R]``."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ModelError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(
                in_channels,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        channels_last: bool | None = None,
    ) -> torch.Tensor:
        """Render ``ws``.

        Conventions: ws float ``[B, num_ws, w_dim]``; returns float32
        ``[B, img_channels, R, R]`` (roughly [-1, 1] for trained models).
        ``noise_mode``: 'const' (the stored noise images, deterministic), 'random'
        (fresh N(0,1) noise) or 'none'. ``force_fp32`` disables the fp16 blocks on CUDA.
        ``fused_modconv`` / ``channels_last``: None picks the fastest for the device
        (both give the official result to float rounding).
        """
        check_shape(ws, ["B", self.num_ws, self.w_dim], "synthesis: ws", dtype="float")
        if noise_mode not in _NOISE_MODES:
            raise ShapeError(f"synthesis: noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        w_idx = 0
        for res in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(
                x,
                img,
                block_ws,
                noise_mode=noise_mode,
                force_fp32=force_fp32,
                fused_modconv=fused_modconv,
                channels_last=channels_last,
            )
        assert img is not None
        return img.contiguous()


class Generator(nn.Module):
    """The official StyleGAN2(-ADA) generator: ``mapping`` then ``synthesis``.

    Constructor arguments and parameter names are the official ones; :attr:`config` holds
    them as JSON-able data (what :func:`save_generator` stores).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        for name, value in (
            ("z_dim", z_dim),
            ("c_dim", c_dim),
            ("w_dim", w_dim),
            ("img_resolution", img_resolution),
            ("img_channels", img_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelError(f"Generator: {name} must be a non-negative integer, got {value!r}")
        bad = sorted(set(mapping_kwargs) - _MAPPING_KEYS)
        if bad:
            raise ModelError(f"Generator: unknown mapping_kwargs {bad}; known: {sorted(_MAPPING_KEYS)}")
        bad = sorted(set(synthesis_kwargs) - _SYNTHESIS_KEYS)
        if bad:
            raise ModelError(
                f"Generator: unknown synthesis_kwargs {bad}; known: {sorted(_SYNTHESIS_KEYS)}"
            )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.config: dict[str, Any] = {
            "z_dim": z_dim,
            "c_dim": c_dim,
            "w_dim": w_dim,
            "img_resolution": img_resolution,
            "img_channels": img_channels,
            "mapping_kwargs": _jsonable(mapping_kwargs),
            "synthesis_kwargs": _jsonable(synthesis_kwargs),
        }
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        """z ``[B,z_dim]`` (c ``[B,c_dim]`` or None) -> image float32 ``[B,C,R,R]``.

        Conventions: see :meth:`MappingNetwork.forward` and
        :meth:`SynthesisNetwork.forward`; output roughly in [-1, 1] for trained models.
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(
            ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv
        )


def _jsonable(value: Any) -> Any:
    """Plain JSON data (dict subclasses -> dict, tuples -> lists, numpy scalars -> float/int)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        return value.item()
    raise ModelError(f"generator config value {value!r} ({type(value).__name__}) is not JSON data")


# --- known configurations -----------------------------------------------------------------


def ffhq_config(resolution: int = 1024) -> dict[str, Any]:
    """Constructor config of NVIDIA's FFHQ generators (``stylegan2`` 1024 / ``paper256``)."""
    bases = {1024: 32768, 512: 32768, 256: 16384}
    if resolution not in bases:
        raise ModelError(f"no official FFHQ config for resolution {resolution}; use 256, 512 or 1024")
    return {
        "z_dim": 512,
        "c_dim": 0,
        "w_dim": 512,
        "img_resolution": resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 8},
        "synthesis_kwargs": {
            "channel_base": bases[resolution],
            "channel_max": 512,
            "num_fp16_res": 4,
            "conv_clamp": 256,
            "architecture": "skip",
        },
    }


def tiny_config(resolution: int = 64) -> dict[str, Any]:
    """Constructor config of the small generator of the ``tiny`` pack (64-d z/w)."""
    return {
        "z_dim": 64,
        "c_dim": 0,
        "w_dim": 64,
        "img_resolution": resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 4},
        "synthesis_kwargs": {
            "channel_base": 1024,
            "channel_max": 64,
            "num_fp16_res": 0,
            "conv_clamp": 256,
            "architecture": "skip",
        },
    }


def tiny_generator(seed: int = 0, resolution: int = 64) -> Generator:
    """A small deterministic (seeded) generator for the ``tiny`` pack, tests and demos.

    Untrained, but initialised so that images are structured and roughly in [-1, 1]:
    official init plus seeded perturbations of every tensor, with the output layer scaled
    down. Returned in eval mode with gradients off. Same seed -> identical weights.
    """
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        G = Generator(**tiny_config(resolution))
    with torch.no_grad():
        for name, tensor in G.state_dict().items():
            if name.endswith("resample_filter"):
                continue
            draw = torch.randn(tensor.shape, generator=gen)
            if name.endswith("noise_strength"):
                tensor.copy_(0.05 + 0.02 * draw)
            elif name == "mapping.w_avg":
                tensor.copy_(draw)
            elif name.startswith("mapping.") and name.endswith(".bias"):
                tensor.copy_(10 * draw)
            elif ".torgb." in name and ".affine." not in name:
                tensor.mul_(0.25)
            elif name.endswith(".affine.bias"):
                tensor.add_(0.1 * draw)
            elif not name.endswith("noise_const"):
                tensor.add_(0.1 * draw)
    G.eval().requires_grad_(False)
    return G


# --- own format ---------------------------------------------------------------------------


def generator_from_state_dict(
    config: dict[str, Any], state: dict[str, torch.Tensor], source: str = "state_dict"
) -> Generator:
    """Build a :class:`Generator` from ``config`` and load ``state`` strictly.

    A missing, extra or mis-shaped tensor raises :class:`ModelError` naming it (and
    ``source``). The result is in eval mode with gradients off.
    """
    if not isinstance(config, dict):
        raise ModelError(f"{source}: generator config must be a mapping, got {config!r}")
    known = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ModelError(f"{source}: unknown generator config key(s) {unknown}; known: {sorted(known)}")
    missing_cfg = sorted({"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"} - set(config))
    if missing_cfg:
        raise ModelError(f"{source}: generator config lacks {missing_cfg}")
    from reenact.models.component_io import build_bounded, check_dims

    check_dims(config, ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"), source)
    for sub in ("mapping_kwargs", "synthesis_kwargs"):
        kw = config.get(sub) or {}
        if not isinstance(kw, dict):
            raise ModelError(f"{source}: generator config {sub} must be a mapping, got {kw!r}")
        check_dims(kw, tuple(k for k, v in kw.items() if type(v) is int and k != "channel_base"), source)
        check_dims(kw, ("channel_base",), source, limit=1 << 17)

    def build() -> Generator:
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG stream
            return Generator(**config)

    try:
        G = build_bounded(build, source, {k: tuple(v.shape) for k, v in state.items()})
    except TypeError as exc:
        raise ModelError(f"{source}: invalid generator config {config!r}: {exc}") from exc
    expected = G.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise ModelError(
            f"{source}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
            f"({len(missing)} missing) for config {json.dumps(config)}; the file does not match its config"
        )
    if extra:
        raise ModelError(
            f"{source}: unexpected tensor(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} "
            f"({len(extra)} extra); the file does not match its config"
        )
    for key, ref in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise ModelError(
                f"{source}: tensor {key} has shape {tuple(got.shape)}, the config needs {tuple(ref.shape)}"
            )
        if not got.is_floating_point():
            raise ModelError(f"{source}: tensor {key} has dtype {got.dtype}, expected a float dtype")
    G.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    G.eval().requires_grad_(False)
    return G


def save_generator(G: Generator, path: str | Path) -> Path:
    """Write ``G`` in our format: float32 safetensors, config JSON in the metadata.

    The file is written to a temporary name and renamed into place. Returns the path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not isinstance(G, Generator):
        raise ModelError(f"save_generator expects a Generator, got {type(G).__name__}")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    metadata = {
        "format": FORMAT_VERSION,
        _META_KEY: json.dumps(G.config, sort_keys=True),
        "num_ws": str(G.num_ws),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as exc:
        raise ModelError(f"cannot write generator to {path}: {exc.strerror or exc}") from exc
    return path


def read_generator_config(path: str | Path) -> dict[str, Any]:
    """The constructor config stored in one of our generator files (no tensors read)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError as exc:
        raise ModelError(f"generator file {path} does not exist") from exc
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path} is not a readable safetensors file: {exc}") from exc
    if _META_KEY not in meta:
        raise ModelError(
            f"{path} has no '{_META_KEY}' config in its metadata; it is not a reenact generator "
            "file (convert official weights with `reenact models import`)"
        )
    try:
        config = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: generator config metadata is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path}: generator config must be a JSON object, got {config!r}")
    return config


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a generator saved by :func:`save_generator` (strict; eval; no gradients).

    A missing, extra or mis-shaped tensor, or a config that does not match the tensors,
    raises :class:`ModelError` naming it.
    """
    from safetensors.torch import load_file

    path = Path(path)
    config = read_generator_config(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelError(f"{path}: cannot read tensors: {exc}") from exc
    G = generator_from_state_dict(config, state, source=str(path))
    return G.to(device)
