"""Official weight files: crafted NVlabs pickles (safe loading) and rosinality checkpoints."""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from reenact.errors import ModelError, UnsafeModelFileError
from reenact.models.convert import convert_nvlabs_pickle, convert_rosinality, detect_format
from reenact.models.stylegan2 import Generator

# --- an NVlabs-style pickle, built here -----------------------------------------------------


class _FakeModules:
    """Installs fake ``torch_utils.persistence`` / ``dnnlib.util`` so pickle can name them.

    The fake ``_reconstruct_persistent_obj`` does what the official one does with the
    embedded source: it executes it. The modules are removed again before our loader runs.
    """

    def __init__(self) -> None:
        self.persistence = types.ModuleType("torch_utils.persistence")
        self.util = types.ModuleType("dnnlib.util")

        def _reconstruct_persistent_obj(meta: dict[str, Any]) -> Any:
            module = types.ModuleType("_imported_module_test")
            exec(meta["module_src"], module.__dict__)  # the official loader does this
            return meta["class_name"]

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        self.persistence.__dict__["_reconstruct_persistent_obj"] = _reconstruct_persistent_obj
        self.reconstruct = _reconstruct_persistent_obj

        class EasyDict(dict):
            pass

        EasyDict.__module__ = "dnnlib.util"
        EasyDict.__qualname__ = "EasyDict"
        self.util.__dict__["EasyDict"] = EasyDict
        self.EasyDict = EasyDict
        self.names = {
            "torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": self.persistence,
            "dnnlib": types.ModuleType("dnnlib"),
            "dnnlib.util": self.util,
        }

    def __enter__(self) -> _FakeModules:
        assert not any(n in sys.modules for n in self.names)
        sys.modules.update(self.names)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            sys.modules.pop(name, None)


class _Persistent:
    def __init__(self, fake: _FakeModules, meta: dict[str, Any]) -> None:
        self.fake = fake
        self.meta = meta

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.fake.reconstruct, (self.meta,))


def _record(fake: _FakeModules, module: nn.Module, src: str, init_kwargs: Any = None) -> _Persistent:
    state: dict[str, Any] = {
        "training": False,
        "_parameters": collections.OrderedDict(
            (k, nn.Parameter(v.detach().clone(), requires_grad=False))
            for k, v in module._parameters.items()
            if v is not None
        ),
        "_buffers": collections.OrderedDict(
            (k, v.clone()) for k, v in module._buffers.items() if v is not None
        ),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(
            (k, _record(fake, m, src)) for k, m in module._modules.items() if m is not None
        ),
        "_init_args": (),
        "_init_kwargs": init_kwargs if init_kwargs is not None else fake.EasyDict(),
    }
    for key, value in module.__dict__.items():
        if isinstance(value, (bool, int, str)) or value is None:
            state[key] = value
        elif isinstance(value, float):
            state[key] = np.float64(value)  # official gains are numpy float64 scalars
    if "resample_filter" in module._buffers:  # a non-persistent buffer must be skipped
        state["_buffers"]["scratch"] = torch.zeros(2)
        state["_non_persistent_buffers_set"] = {"scratch"}
    meta = {
        "type": "class",
        "version": 6,
        "module_src": src,
        "class_name": type(module).__name__,
        "state": state,
    }
    return _Persistent(fake, meta)


def _crafted_pickle(
    G: Generator,
    marker: Path,
    extra_ema_state: dict[str, Any] | None = None,
    style: str = "ada",
) -> bytes:
    src = (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('the embedded source ran')\n"
        "raise RuntimeError('embedded source executed')\n"
    )
    with _FakeModules() as fake:
        cfg = G.config
        dims = {k: cfg[k] for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
        if style == "ada":  # stylegan2-ada-pytorch train.py
            kwargs = fake.EasyDict(
                **dims,
                mapping_kwargs=fake.EasyDict(cfg["mapping_kwargs"]),
                synthesis_kwargs=fake.EasyDict(cfg["synthesis_kwargs"]),
            )
        elif style == "stylegan3":  # networks_stylegan2 twin: synthesis kwargs flattened
            kwargs = fake.EasyDict(
                **dims, mapping_kwargs=fake.EasyDict(cfg["mapping_kwargs"]), **cfg["synthesis_kwargs"]
            )
        else:  # converted from TensorFlow by legacy.py: every kwarg spelled out
            mapping = fake.EasyDict(
                num_layers=8, embed_features=None, layer_features=None, activation="lrelu",
                lr_multiplier=0.01, w_avg_beta=0.995,
            )
            synthesis = fake.EasyDict(
                channel_base=2048, channel_max=64, num_fp16_res=0, conv_clamp=None, architecture="skip",
                resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu",
            )
            kwargs = fake.EasyDict(**dims, mapping_kwargs=mapping, synthesis_kwargs=synthesis)
        rec = _record(fake, G, src, kwargs)
        if extra_ema_state:
            rec.meta["state"].update(extra_ema_state)
        data = {
            "G": _record(fake, G, src, kwargs),
            "D": None,
            "G_ema": rec,
            "augment_pipe": None,
            "training_set_kwargs": fake.EasyDict(resolution=32),
        }
        blob = pickle.dumps(data, protocol=3)
        # Sanity: the official way of loading would run the source (and write the file).
        with pytest.raises(RuntimeError, match="embedded source executed"):
            pickle.loads(blob)
        assert marker.exists()
        marker.unlink()
    return blob


@pytest.fixture(scope="module")
def crafted(tiny_ref: tuple[Generator, dict[str, torch.Tensor]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pkl")
    marker = folder / "PWNED"
    path = folder / "network-snapshot.pkl"
    path.write_bytes(_crafted_pickle(tiny_ref[0], marker))
    return path, marker


def test_crafted_pickle_converts_exactly_and_never_runs_source(
    crafted: tuple[Path, Path], tiny_ref: tuple[Generator, dict[str, torch.Tensor]]
) -> None:
    path, marker = crafted
    assert "torch_utils.persistence" not in sys.modules
    G = convert_nvlabs_pickle(path)
    assert not marker.exists()
    assert G.config["synthesis_kwargs"]["conv_clamp"] == 256
    ref_G, V = tiny_ref
    for key, value in ref_G.state_dict().items():
        assert torch.equal(G.state_dict()[key], value), key
    with torch.no_grad():
        assert float((G.synthesis(V["ws_psi1"], noise_mode="const") - V["img_const"]).abs().max()) <= 1e-4
        assert float((G.mapping(V["z"], None, truncation_psi=0.7) - V["ws_psi07"]).abs().max()) <= 1e-5
    assert detect_format(path) == "nvlabs-pkl"


@pytest.mark.parametrize("style", ["stylegan3", "tf-converted"])
def test_other_pickle_flavours_convert(
    style: str, tiny_ref: tuple[Generator, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    path = tmp_path / f"{style}.pkl"
    path.write_bytes(_crafted_pickle(tiny_ref[0], tmp_path / "ran", style=style))
    G = convert_nvlabs_pickle(path)
    # conv_clamp comes from the stored layers (256 here), not from constructor defaults
    assert G.config["synthesis_kwargs"]["conv_clamp"] == 256
    V = tiny_ref[1]
    with torch.no_grad():
        img = G.synthesis(V["ws_custom_large"], noise_mode="const")
    assert float((img - V["img_from_ws_custom_large"]).abs().max()) <= 1e-5 * 509
    assert not (tmp_path / "ran").exists()


def test_truncated_pickle_is_a_clear_error(crafted: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = crafted
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 10):
        bad = tmp_path / f"cut{cut}.pkl"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="truncated|corrupt"):
            convert_nvlabs_pickle(bad)
    assert not marker.exists()


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (os.system, (self.command,))


def test_os_system_global_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "OWNED"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Evil(f"touch {marker}")}))
    with pytest.raises(UnsafeModelFileError, match=r"(posix|os)\.system"):
        convert_nvlabs_pickle(bad)
    assert not marker.exists()


def test_evil_global_deep_inside_a_network_is_refused(
    tiny_ref: tuple[Generator, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    marker = tmp_path / "OWNED"
    blob = _crafted_pickle(tiny_ref[0], tmp_path / "src_ran", {"hook": _Evil(f"touch {marker}")})
    bad = tmp_path / "deep.pkl"
    bad.write_bytes(blob)
    with pytest.raises(UnsafeModelFileError, match="system"):
        convert_nvlabs_pickle(bad)
    assert not marker.exists()
    assert not (tmp_path / "src_ran").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_evil_payload_inside_a_tensor_storage_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "OWNED"
    inner = pickle.dumps(_Evil(f"touch {marker}"))
    from torch.storage import _load_from_bytes

    class _Storage:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return (_load_from_bytes, (inner,))

    bad = tmp_path / "storage.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Storage()}))
    with pytest.raises(UnsafeModelFileError):
        convert_nvlabs_pickle(bad)
    assert not marker.exists()


def test_exec_and_eval_builtins_are_refused(tmp_path: Path) -> None:
    for fn in (exec, eval, getattr):
        class _Call:
            def __reduce__(self, fn: Any = fn) -> tuple[Any, tuple[Any, ...]]:
                return (fn, ("1",))

        bad = tmp_path / "b.pkl"
        bad.write_bytes(pickle.dumps(_Call()))
        with pytest.raises(UnsafeModelFileError, match=f"builtins.{fn.__name__}"):
            convert_nvlabs_pickle(bad)


def test_pickle_without_g_ema(tmp_path: Path) -> None:
    bad = tmp_path / "x.pkl"
    bad.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(ModelError, match="G_ema"):
        convert_nvlabs_pickle(bad)


# --- rosinality ---------------------------------------------------------------------------


def _to_rosinality(G: Generator) -> dict[str, Any]:
    """Our tensors under rosinality stylegan2-pytorch names and layouts (written by hand)."""
    sd = G.state_dict()
    out: dict[str, torch.Tensor] = {}
    for i in range(8):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]

    def styled(dst: str, src: str, blur: bool) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        if blur:
            out[f"{dst}.conv.blur.kernel"] = sd[f"{src}.resample_filter"] * 4

    def rgb(dst: str, src: str, up: bool) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = sd["synthesis.b4.resample_filter"] * 4

    styled("conv1", "synthesis.b4.conv1", False)
    rgb("to_rgb1", "synthesis.b4.torgb", False)
    out["noises.noise_0"] = sd["synthesis.b4.conv1.noise_const"][None, None]
    for i, res in enumerate((8, 16, 32)):
        styled(f"convs.{2 * i}", f"synthesis.b{res}.conv0", True)
        styled(f"convs.{2 * i + 1}", f"synthesis.b{res}.conv1", False)
        rgb(f"to_rgbs.{i}", f"synthesis.b{res}.torgb", True)
        out[f"noises.noise_{2 * i + 1}"] = sd[f"synthesis.b{res}.conv0.noise_const"][None, None]
        out[f"noises.noise_{2 * i + 2}"] = sd[f"synthesis.b{res}.conv1.noise_const"][None, None]
    return {"g_ema": out, "latent_avg": sd["mapping.w_avg"].clone()}


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_rosinality_checkpoint_converts(
    tiny_ref: tuple[Generator, dict[str, torch.Tensor]], tmp_path: Path, zipfile_format: bool
) -> None:
    G, V = tiny_ref
    path = tmp_path / "550000.pt"
    torch.save(_to_rosinality(G), path, _use_new_zipfile_serialization=zipfile_format)
    assert detect_format(path) == "rosinality-pt"
    H = convert_rosinality(path)
    assert H.num_ws == 8 and H.config["synthesis_kwargs"]["conv_clamp"] is None
    with torch.no_grad():
        assert float((H.mapping(V["z"], None, truncation_psi=0.7) - V["ws_psi07"]).abs().max()) <= 1e-5
        assert float((H.synthesis(V["ws_psi1"], noise_mode="const") - V["img_const"]).abs().max()) <= 1e-4


def test_rosinality_errors(tiny_ref: tuple[Generator, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    ck = _to_rosinality(tiny_ref[0])
    del ck["g_ema"]["convs.3.conv.weight"]
    torch.save(ck, tmp_path / "missing.pt")
    with pytest.raises(ModelError, match=r"convs\.3\.conv\.weight"):
        convert_rosinality(tmp_path / "missing.pt")
    data = io.BytesIO()
    torch.save(_to_rosinality(tiny_ref[0]), data)
    (tmp_path / "cut.pt").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ModelError):
        convert_rosinality(tmp_path / "cut.pt")
    marker = tmp_path / "OWNED"
    torch.save({"g_ema": _Evil(f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeModelFileError):
        convert_rosinality(tmp_path / "evil.pt")
    assert not marker.exists()


def test_rosinality_without_latent_avg_estimates_it(
    tiny_ref: tuple[Generator, dict[str, torch.Tensor]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ck = _to_rosinality(tiny_ref[0])
    del ck["latent_avg"]
    torch.save(ck, tmp_path / "nolatent.pt")
    H = convert_rosinality(tmp_path / "nolatent.pt")
    assert "latent_avg" in caplog.text
    with torch.no_grad():
        w = H.mapping(torch.randn([2000, H.z_dim]), None)[:, 0].mean(0)
    assert float((H.mapping.w_avg - w).abs().max()) < 0.1
