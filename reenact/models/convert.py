"""Converting official StyleGAN2 weights into our :class:`~reenact.models.stylegan2.Generator`.

* :func:`convert_nvlabs_pickle`: NVlabs ``.pkl`` (stylegan2-ada-pytorch and stylegan3
  repositories' StyleGAN2 pickles), read with the restricted unpickler of
  :mod:`reenact.models.pickle_safe` (the source embedded in the pickle is never run).
  ``G_ema``'s constructor arguments choose the architecture; ``conv_clamp``,
  ``architecture`` and the fp16 blocks are read from the stored module attributes, which
  is what the official code uses at run time.
* :func:`convert_rosinality`: rosinality ``stylegan2-pytorch`` checkpoints (``g_ema``,
  ``latent_avg``), read with ``torch.load(weights_only=True)`` and renamed.

Both return a generator in eval mode with gradients off; save it with
:func:`~reenact.models.stylegan2.save_generator` to convert once.
"""

from __future__ import annotations

import argparse
import logging
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from reenact.errors import ModelError, UnsafeModelFileError
from reenact.models.pickle_safe import PersistentRecord, load_nvlabs_pickle
from reenact.models.stylegan2 import Generator, generator_from_state_dict, make_resample_filter

logger = logging.getLogger(__name__)

__all__ = ["convert_nvlabs_pickle", "convert_rosinality", "record_state_dict", "detect_format"]

_DIMS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a pickled module record (parameters, persistent buffers, children)."""
    state = record.state
    out: dict[str, torch.Tensor] = {}
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise ModelError(f"{prefix}{name} in the pickle is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise ModelError(f"module {prefix}{name} in the pickle is a {type(child).__name__}")
        out.update(record_state_dict(child, prefix + name + "."))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _generator_config(G: PersistentRecord, source: str) -> dict[str, Any]:
    args = list(G.state.get("_init_args") or [])
    kwargs = _plain(dict(G.state.get("_init_kwargs") or {}))
    if len(args) > len(_DIMS) + 2:
        raise ModelError(f"{source}: G_ema has {len(args)} positional constructor arguments")
    names = [*_DIMS, "mapping_kwargs", "synthesis_kwargs"]
    for name, value in zip(names, args, strict=False):
        kwargs[name] = _plain(value)
    missing = [k for k in _DIMS if k not in kwargs]
    if missing:
        raise ModelError(f"{source}: G_ema's constructor arguments lack {missing}; not a StyleGAN2 generator")
    config: dict[str, Any] = {k: int(kwargs.pop(k)) for k in _DIMS}
    config["mapping_kwargs"] = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    synthesis.update(kwargs)  # the stylegan3 twin passes synthesis kwargs flattened
    synthesis.pop("fp16_channels_last", None)
    # Run-time truth: what the stored modules actually use.
    syn = G.child("synthesis")
    res = config["img_resolution"]
    if res < 4 or res & (res - 1):
        raise ModelError(f"{source}: img_resolution {res} is not a power of two")
    blocks = [syn.child(f"b{2**i}") for i in range(2, int(math.log2(res)) + 1)]
    first_layer = blocks[0].child("conv1")
    synthesis["conv_clamp"] = _plain(first_layer.state.get("conv_clamp"))
    synthesis["architecture"] = str(blocks[0].state.get("architecture", "skip"))
    synthesis["num_fp16_res"] = sum(bool(b.state.get("use_fp16", False)) for b in blocks)
    if "channel_base" not in synthesis or "channel_max" not in synthesis:
        raise ModelError(f"{source}: G_ema's constructor arguments lack channel_base/channel_max")
    config["synthesis_kwargs"] = synthesis
    return config


def convert_nvlabs_pickle(pkl_path: str | Path) -> Generator:
    """Official NVlabs network pickle -> our :class:`Generator` (from ``G_ema``).

    Never executes code from the file: globals outside the allow-list raise
    :class:`UnsafeModelFileError` naming the global; truncated files raise
    :class:`ModelError`. The tensors are loaded unchanged and strictly.
    """
    source = str(pkl_path)
    data = load_nvlabs_pickle(pkl_path)
    G = data.get("G_ema")
    if not isinstance(G, PersistentRecord):
        raise ModelError(
            f"{source} has no G_ema network (keys: {sorted(map(str, data))}); "
            "is it an official StyleGAN2 network pickle?"
        )
    if G.class_name != "Generator":
        raise ModelError(f"{source}: G_ema is a {G.class_name}, expected Generator")
    config = _generator_config(G, source)
    try:
        syn_kwargs = config["synthesis_kwargs"]
        unknown = set(syn_kwargs) - {
            "channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture",
            "resample_filter", "use_noise", "kernel_size", "activation",
        }
        if unknown:
            raise ModelError(
                f"{source}: synthesis arguments {sorted(unknown)} are not StyleGAN2 ones "
                "(a StyleGAN3 alias-free generator is not supported)"
            )
    except KeyError as exc:  # pragma: no cover - keys set above
        raise ModelError(f"{source}: incomplete config {config}") from exc
    state = record_state_dict(G)
    return generator_from_state_dict(config, state, source=source)


# --- rosinality ---------------------------------------------------------------------------


def _load_rosinality(path: Path) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"checkpoint {path} does not exist") from exc
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFileError(
            f"{path} references objects outside torch's weights-only allow-list and was "
            f"refused without running anything: {exc}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelError(f"{path} is not a readable torch checkpoint (truncated?): {exc}") from exc
    if not isinstance(ckpt, dict):
        raise ModelError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def _rosinality_config(sd: dict[str, torch.Tensor], source: str) -> tuple[dict[str, Any], int]:
    styles = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    if not styles or "input.input" not in sd:
        raise ModelError(f"{source}: not a rosinality StyleGAN2 generator (no style.*/input.input)")
    n_mlp = len(styles)
    w_dim, z_dim = sd[f"style.{styles[0]}.weight"].shape
    n_rgbs = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    resolution = 4 * 2**n_rgbs
    out_ch = sd["to_rgb1.conv.weight"].shape[1]
    ch_last = sd[f"convs.{2 * n_rgbs - 1}.conv.weight"].shape[1] if n_rgbs else sd["conv1.conv.weight"].shape[1]
    channel_max = int(sd["input.input"].shape[1])
    config = {
        "z_dim": int(z_dim),
        "c_dim": 0,
        "w_dim": int(w_dim),
        "img_resolution": int(resolution),
        "img_channels": int(out_ch),
        "mapping_kwargs": {"num_layers": n_mlp},
        "synthesis_kwargs": {
            "channel_base": int(ch_last) * resolution,
            "channel_max": channel_max,
            "num_fp16_res": 0,
            "conv_clamp": None,
            "architecture": "skip",
        },
    }
    return config, n_rgbs


def convert_rosinality(pt_path: str | Path) -> Generator:
    """rosinality ``stylegan2-pytorch`` checkpoint (``g_ema`` [+ ``latent_avg``]) -> Generator.

    Loaded with ``torch.load(weights_only=True)``; every tensor is renamed to the official
    names and loaded strictly (an unknown or missing tensor is a :class:`ModelError`).
    Without ``latent_avg`` the checkpoint has no ``w_avg``: it is estimated from 10,000
    seeded samples of the mapping network, and a warning says so.
    """
    path = Path(pt_path)
    source = str(path)
    ckpt = _load_rosinality(path)
    sd = ckpt.get("g_ema")
    if not isinstance(sd, dict):
        raise ModelError(f"{source} has no 'g_ema' state dict (keys: {sorted(map(str, ckpt))})")
    config, n_rgbs = _rosinality_config(sd, source)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ModelError(f"{source}: g_ema lacks tensor {key}")
        used.add(key)
        return sd[key]

    for i in range(config["mapping_kwargs"]["num_layers"]):
        out[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    fir = make_resample_filter()

    def styled(src: str, dst: str, res: int) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape([])
        out[f"{dst}.bias"] = take(f"{src}.activate.bias")
        out[f"{dst}.resample_filter"] = fir

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)

    out["synthesis.b4.const"] = take("input.input")[0]
    out["synthesis.b4.resample_filter"] = fir
    styled("conv1", "synthesis.b4.conv1", 4)
    out["synthesis.b4.conv1.noise_const"] = take("noises.noise_0")[0, 0]
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for i in range(n_rgbs):
        res = 8 * 2**i
        blk = f"synthesis.b{res}"
        out[f"{blk}.resample_filter"] = fir
        styled(f"convs.{2 * i}", f"{blk}.conv0", res)
        styled(f"convs.{2 * i + 1}", f"{blk}.conv1", res)
        out[f"{blk}.conv0.noise_const"] = take(f"noises.noise_{2 * i + 1}")[0, 0]
        out[f"{blk}.conv1.noise_const"] = take(f"noises.noise_{2 * i + 2}")[0, 0]
        to_rgb(f"to_rgbs.{i}", f"{blk}.torgb")

    # Blur/upsample kernels are fixed buffers: check they are the standard [1,3,3,1] FIR.
    for key, value in sd.items():
        if key in used:
            continue
        if re.fullmatch(r"(convs\.\d+\.conv\.blur|to_rgbs\.\d+\.upsample)\.kernel", key):
            if value.shape != fir.shape or not torch.allclose(value / value.sum(), fir, atol=1e-6):
                raise ModelError(f"{source}: {key} is not the standard [1,3,3,1] filter")
            continue
        raise ModelError(f"{source}: unexpected tensor {key} in g_ema (unknown architecture)")

    latent = ckpt.get("latent_avg")
    if isinstance(latent, torch.Tensor):
        out["mapping.w_avg"] = latent.reshape(-1)
    else:
        out["mapping.w_avg"] = torch.zeros(config["w_dim"])
    G = generator_from_state_dict(config, {k: v.float() for k, v in out.items()}, source=source)
    if not isinstance(latent, torch.Tensor):
        with torch.no_grad():
            z = torch.randn([10000, G.z_dim], generator=torch.Generator().manual_seed(0))
            G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(0))
        logger.warning(
            "%s has no latent_avg; w_avg was estimated from 10,000 seeded samples "
            "(truncation will differ slightly from the original)",
            source,
        )
    return G


def detect_format(path: str | Path) -> str:
    """``'nvlabs-pkl'``, ``'rosinality-pt'`` or ``'reenact'`` from the file's first bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head[:2] == b"PK":
        return "rosinality-pt"
    if head[:2] == b"\x80\x02" and head[2:4] == b"\x8a\x0a":  # legacy torch.save magic number
        return "rosinality-pt"
    if head[:1] == b"\x80":
        return "nvlabs-pkl"
    if len(head) == 8 and int.from_bytes(head, "little") < 100_000_000 and path.suffix == ".safetensors":
        return "reenact"
    raise ModelError(
        f"{path}: unknown model file format (expected an NVlabs .pkl, a rosinality .pt or "
        "a reenact .safetensors)"
    )
