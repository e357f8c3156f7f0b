"""Generator fidelity: official reference vectors, official names/shapes, own format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from reenact.errors import ModelError, ShapeError
from reenact.models.stylegan2 import (
    Generator,
    ffhq_config,
    generator_from_state_dict,
    load_generator,
    save_generator,
    tiny_generator,
)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def test_mapping_matches_official(tiny_ref: tuple[Generator, dict[str, torch.Tensor]]) -> None:
    G, V = tiny_ref
    z = V["z"]
    w_avg = G.mapping.w_avg.clone()
    with torch.no_grad():
        assert _err(G.mapping(z, None), V["ws_psi1"]) <= 1e-5
        assert _err(G.mapping(z, torch.zeros([4, 0])), V["ws_psi1"]) <= 1e-5
        assert _err(G.mapping(z, None, truncation_psi=0.7), V["ws_psi07"]) <= 1e-5
        cut = G.mapping(z, None, truncation_psi=0.7, truncation_cutoff=4)
        assert _err(cut, V["ws_psi07_cutoff4"]) <= 1e-5
    # mapping must not change w_avg (eval forward), and truncation lerps towards it:
    # ws(psi) = w_avg + psi * (ws(1) - w_avg)
    assert G.mapping.w_avg.shape == (G.w_dim,) and torch.equal(G.mapping.w_avg, w_avg)
    assert float(w_avg.abs().max()) > 0, "the reference w_avg is not all zeros"
    lerp = w_avg + 0.7 * (V["ws_psi1"] - w_avg)
    assert _err(lerp, V["ws_psi07"]) <= 1e-5
    with torch.no_grad():
        assert _err(G.mapping(z, None, truncation_psi=0.0), w_avg.expand_as(V["ws_psi1"])) <= 1e-6


@pytest.mark.parametrize(
    "name, ws_name, noise_mode, fused",
    [
        ("img_const", "ws_psi1", "const", None),
        ("img_none", "ws_psi1", "none", None),
        ("img_psi07_const", "ws_psi07", "const", None),
        ("img_from_ws_custom", "ws_custom", "const", None),
        ("img_const_unfused", "ws_psi1", "const", False),
        ("img_const", "ws_psi1", "const", False),
        ("img_const", "ws_psi1", "const", True),
    ],
)
def test_synthesis_matches_official(
    tiny_ref: tuple[Generator, dict[str, torch.Tensor]],
    name: str,
    ws_name: str,
    noise_mode: str,
    fused: bool | None,
) -> None:
    G, V = tiny_ref
    with torch.no_grad():
        img = G.synthesis(V[ws_name], noise_mode=noise_mode, fused_modconv=fused)
    assert img.dtype == torch.float32
    assert _err(img, V[name]) <= 1e-4


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_memory_format_and_modconv_paths_agree(
    tiny_ref: tuple[Generator, dict[str, torch.Tensor]], fused: bool, channels_last: bool
) -> None:
    G, V = tiny_ref
    with torch.no_grad():
        img = G.synthesis(V["ws_psi1"], noise_mode="const", fused_modconv=fused, channels_last=channels_last)
    assert img.is_contiguous()
    assert _err(img, V["img_const"]) <= 1e-4


def test_full_generator_call_matches(tiny_ref: tuple[Generator, dict[str, torch.Tensor]]) -> None:
    G, V = tiny_ref
    with torch.no_grad():
        assert _err(G(V["z"], None, noise_mode="const"), V["img_const"]) <= 1e-4
        img = G(V["z"], None, truncation_psi=0.7, noise_mode="const")
        assert _err(img, V["img_psi07_const"]) <= 1e-4


def test_clamps_match_official(tiny_ref: tuple[Generator, dict[str, torch.Tensor]]) -> None:
    G, V = tiny_ref
    with torch.no_grad():
        big = G.synthesis(V["ws_custom_large"], noise_mode="const")
        ref = V["img_from_ws_custom_large"]
        assert _err(big, ref) <= 1e-5 * float(ref.abs().max())  # values reach ~500
        strength = G.get_parameter("synthesis.b32.conv1.noise_strength")
        old = strength.clone()
        try:
            strength.fill_(100.0)
            img = G.synthesis(V["ws_psi1"], noise_mode="const")
        finally:
            strength.copy_(old)
        ref = V["img_const_b32conv1_ns100"]
        assert _err(img, ref) <= 1e-5 * float(ref.abs().max())
    assert float(ref.abs().max()) > 256  # the clamp really is active in this vector


def test_noise_modes_differ_and_random_is_random(
    tiny_ref: tuple[Generator, dict[str, torch.Tensor]],
) -> None:
    G, V = tiny_ref
    ws = V["ws_psi1"][:2]
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="random")
        b = G.synthesis(ws, noise_mode="random")
        c = G.synthesis(ws, noise_mode="const")
    assert float((a - b).abs().max()) > 1e-2
    assert float((a - c).abs().max()) > 1e-2


@pytest.mark.parametrize("resolution", [256, 1024])
def test_official_names_shapes_num_ws(reference: Path, resolution: int) -> None:
    spec = json.loads((reference / "stylegan2" / f"official_keys_ffhq{resolution}.json").read_text())
    assert ffhq_config(resolution) == spec["constructor"]
    G = Generator(**spec["constructor"])
    assert G.num_ws == spec["num_ws"]
    ours = [(k, list(v.shape)) for k, v in G.state_dict().items()]
    official = [(e["name"], e["shape"]) for e in spec["state_dict"]]
    assert ours == official  # same names, shapes and order
    params = {n for n, _ in G.named_parameters()}
    kinds = {e["name"]: e["kind"] for e in spec["state_dict"]}
    assert params == {n for n, k in kinds.items() if k == "parameter"}
    assert sum(p.numel() for p in G.parameters()) == spec["num_parameter_elements"]
    blocks = [
        (b.resolution, b.in_channels, b.use_fp16)
        for b in (getattr(G.synthesis, f"b{r}") for r in G.synthesis.block_resolutions)
    ]
    assert blocks == [(b["resolution"], b["in_channels"], b["use_fp16"]) for b in spec["blocks"]]


@pytest.mark.parametrize("batch", [1, 3])
def test_differentiable_wrt_ws(batch: int) -> None:
    G = tiny_generator(seed=0, resolution=32)
    ws = (torch.randn([batch, G.num_ws, G.w_dim], generator=torch.Generator().manual_seed(0)) * 0.5)
    ws = (ws + G.mapping.w_avg).requires_grad_(True)
    img = G.synthesis(ws, noise_mode="const")
    loss = img.square().mean()
    loss.backward()
    assert ws.grad is not None and float(ws.grad.abs().sum()) > 0
    # the gradient is the real one: a small step against it lowers the loss
    with torch.no_grad():
        stepped = G.synthesis(ws - 1e-2 * ws.grad / ws.grad.norm(), noise_mode="const")
    assert float(stepped.square().mean()) < float(loss.detach())


def test_tiny_generator_is_deterministic_and_not_flat() -> None:
    a, b, c = tiny_generator(0), tiny_generator(0), tiny_generator(1)
    z = torch.randn([2, a.z_dim], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ia, ib, ic = a(z), b(z), c(z)
    assert ia.shape == (2, 3, 64, 64)
    assert torch.equal(ia, ib)
    assert float((ia - ic).abs().max()) > 0.1
    assert float(ia.std()) > 0.1  # structured, not flat
    assert float(ia.abs().max()) < 5.0
    assert float((ia[0] - ia[1]).abs().mean()) > 0.02  # different z -> different images


def test_shape_errors() -> None:
    G = tiny_generator(0, resolution=32)
    with pytest.raises(ShapeError, match=r"mapping: z must be float \[B,64\]"):
        G.mapping(torch.zeros([2, 63]), None)
    with pytest.raises(ShapeError, match="ws must be"):
        G.synthesis(torch.zeros([2, G.num_ws - 1, G.w_dim]))
    with pytest.raises(ShapeError, match="noise_mode"):
        G.synthesis(torch.zeros([1, G.num_ws, G.w_dim]), noise_mode="cnst")
    with pytest.raises(ShapeError, match="float"):
        G.synthesis(torch.zeros([1, G.num_ws, G.w_dim], dtype=torch.int64))


def test_save_load_roundtrip(tmp_path: Path) -> None:
    G = tiny_generator(3, resolution=32)
    path = save_generator(G, tmp_path / "g.safetensors")
    H = load_generator(path)
    assert H.config == G.config
    assert not H.training and not any(p.requires_grad for p in H.parameters())
    z = torch.randn([1, G.z_dim])
    with torch.no_grad():
        assert torch.equal(G(z), H(z))


def test_load_rejects_mismatched_file(tmp_path: Path) -> None:
    G = tiny_generator(0, resolution=32)
    path = save_generator(G, tmp_path / "g.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))

    # a config that asks for a bigger model than the tensors
    cfg = json.loads(meta["reenact_generator"])
    cfg["img_resolution"] = 64
    save_file(state, str(tmp_path / "cfg.safetensors"), metadata={**meta, "reenact_generator": json.dumps(cfg)})
    with pytest.raises(ModelError, match="synthesis.b64"):
        load_generator(tmp_path / "cfg.safetensors")

    missing = dict(state)
    del missing["synthesis.b8.conv0.weight"]
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="synthesis.b8.conv0.weight"):
        load_generator(tmp_path / "missing.safetensors")

    extra = dict(state, **{"synthesis.b8.bogus": torch.zeros(1)})
    save_file(extra, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="synthesis.b8.bogus"):
        load_generator(tmp_path / "extra.safetensors")

    shaped = dict(state, **{"mapping.fc1.weight": torch.zeros(64, 65)})
    save_file(shaped, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match=r"mapping.fc1.weight.*\(64, 65\)"):
        load_generator(tmp_path / "shape.safetensors")

    save_file(state, str(tmp_path / "nometa.safetensors"))
    with pytest.raises(ModelError, match="reenact_generator"):
        load_generator(tmp_path / "nometa.safetensors")

    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01not a file")
    with pytest.raises(ModelError):
        load_generator(tmp_path / "garbage.safetensors")


@pytest.mark.gpu
def test_fp16_blocks_on_cuda(tiny_ref: tuple[Generator, dict[str, torch.Tensor]]) -> None:
    G, V = tiny_ref
    config = dict(G.config)
    config["synthesis_kwargs"] = {**config["synthesis_kwargs"], "num_fp16_res": 2}
    H = generator_from_state_dict(config, G.state_dict()).cuda()
    assert [getattr(H.synthesis, f"b{r}").use_fp16 for r in (4, 8, 16, 32)] == [False, False, True, True]
    ws = V["ws_psi1"].cuda()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        fp32 = H.synthesis(ws, noise_mode="const", force_fp32=True).cpu()
        fp16 = H.synthesis(ws, noise_mode="const").cpu()
    assert fp16.dtype == torch.float32
    assert _err(fp32, V["img_const"]) <= 1e-4
    scale = float(V["img_const"].abs().max())
    assert 0 < _err(fp16, V["img_const"]) <= 2e-2 * scale  # really ran in fp16, and close
