"""StyleGAN v1 synthesis against the authors' TF2 outputs (shared/reference/paper/vectors.npz).

Also: official v1 ``.pkl`` (TF1 dnnlib layout) through the restricted unpickler, our
safetensors format, and the strict-import errors.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reenact.errors import ModelError, ShapeError, UnsafeModelFileError
from reenact.models import stylegan1
from reenact.models.readers.tf_checkpoint import read_checkpoint_by_full_name
from reenact.models.stylegan1 import (
    Generator,
    SynthesisNetwork,
    convert_stylegan1,
    load_stylegan1,
    load_stylegan1_synthesis,
    synthesis_state_from_keras,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def paper(paper_reference: Path) -> Path:
    return paper_reference


@pytest.fixture(scope="module")
def vectors(paper: Path) -> dict[str, np.ndarray]:
    with np.load(paper / "vectors.npz") as v:
        return {k: v[k] for k in v.files}


def _render(S: SynthesisNetwork, dlatents: np.ndarray, noise_mode: str = "const") -> np.ndarray:
    with torch.no_grad():
        out = S(torch.from_numpy(dlatents), noise_mode=noise_mode)
    return out.permute(0, 2, 3, 1).numpy().astype(np.float64)  # NCHW -> the reference's NHWC


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize(
    ("res", "key", "suffix"),
    [(32, "synthesis", ""), (256, "synthesis256", ""), (32, "synthesis", ".h5"), (256, "synthesis256", ".h5")],
)
def test_synthesis_matches_the_authors(paper: Path, vectors: dict, res: int, key: str, suffix: str) -> None:
    S = load_stylegan1_synthesis(f"{paper}/stylegan_G_{res}x{res}_synthesis{suffix}", resolution=res)
    assert S.img_resolution == res and S.num_ws == 2 * int(np.log2(res)) - 2
    out = _render(S, vectors[f"{key}/dlatents"])
    assert out.shape == vectors[f"{key}/images"].shape
    assert _err(out, vectors[f"{key}/images"]) <= TOL
    # the stored noise matters (README: up to 1.06 / 4.30 without it)
    assert _err(_render(S, vectors[f"{key}/dlatents"], "none"), vectors[f"{key}/images"]) > 0.1


def test_widths_are_read_from_the_file(paper: Path) -> None:
    S = load_stylegan1_synthesis(paper / "stylegan_G_256x256_synthesis")
    assert S.channels == [64, 64, 64, 32, 16, 8, 4]
    assert sum(p.numel() for p in S.parameters()) + sum(
        e.noise_const.numel() for e in S.epilogues
    ) == 1_640_703


def test_random_noise_varies_and_shapes_are_checked(paper: Path, vectors: dict) -> None:
    S = load_stylegan1_synthesis(paper / "stylegan_G_32x32_synthesis")
    ws = vectors["synthesis/dlatents"]
    assert _err(_render(S, ws, "random"), _render(S, ws, "random")) > 1e-3
    with pytest.raises(ShapeError, match=r"ws must be \[B, 8, 512\]"):
        S(torch.zeros(1, 14, 512))
    with pytest.raises(ShapeError, match="noise_mode"):
        S(torch.zeros(1, 8, 512), noise_mode="fresh")


def test_converted_file_round_trips_and_the_generator_interface(
    paper: Path, vectors: dict, tmp_path: Path
) -> None:
    dest = tmp_path / "cache" / "stylegan1_256.safetensors"
    convert_stylegan1(paper / "stylegan_G_256x256_synthesis", dest, resolution=256)
    G = load_stylegan1(dest)
    assert isinstance(G, Generator) and not G.has_mapping
    assert (G.num_ws, G.w_dim, G.img_resolution) == (14, 512, 256)
    assert _err(_render(G.synthesis, vectors["synthesis256/dlatents"]), vectors["synthesis256/images"]) <= TOL
    assert getattr(G.mapping, "w_avg", None) is None
    with pytest.raises(ModelError, match="no mapping network"):
        G.mapping(torch.zeros(1, 512), None)
    assert load_stylegan1_synthesis(dest).img_resolution == 256
    with pytest.raises(ModelError, match="not 32"):
        load_stylegan1_synthesis(dest, resolution=32)


def test_checkpoint_at_another_resolution_is_refused(paper: Path) -> None:
    with pytest.raises(ModelError, match=r"32x32 StyleGAN v1 synthesis network, but 256x256 was asked"):
        load_stylegan1_synthesis(paper / "stylegan_G_32x32_synthesis", resolution=256)


@pytest.fixture(scope="module")
def keras32(paper: Path) -> dict[str, np.ndarray]:
    return read_checkpoint_by_full_name(paper / "stylegan_G_32x32_synthesis")


def test_missing_tensor_is_named(keras32: dict) -> None:
    arrays = dict(keras32)
    del arrays["G_synthesis/16x16/Conv1/StyleMod/bias"]
    with pytest.raises(ModelError, match="missing tensor 'G_synthesis/16x16/Conv1/StyleMod/bias'"):
        synthesis_state_from_keras(arrays, "ckpt")


def test_misshaped_tensor_is_named(keras32: dict) -> None:
    arrays = dict(keras32)
    arrays["G_synthesis/8x8/Conv1/Noise/weight"] = np.zeros([65], np.float32)
    with pytest.raises(ModelError, match=r"'G_synthesis/8x8/Conv1/Noise/weight' has shape \(65,\)"):
        synthesis_state_from_keras(arrays, "ckpt")


def test_extra_tensor_is_named(keras32: dict) -> None:
    arrays = dict(keras32)
    arrays["G_synthesis/extra/kernel"] = np.zeros([3], np.float32)
    with pytest.raises(ModelError, match="unexpected tensor.*G_synthesis/extra/kernel"):
        synthesis_state_from_keras(arrays, "ckpt")


def test_other_network_is_refused(paper: Path) -> None:
    with pytest.raises(ModelError, match="not a StyleGAN v1 synthesis network"):
        load_stylegan1_synthesis(paper / "LatentMappingNetwork.h5")


# --- NVIDIA's official v1 pickle -------------------------------------------------------------


def _nvidia_names(keras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The authors' Keras names -> the names inside NVIDIA's G_synthesis component."""
    out = {}
    for name, value in keras.items():
        name = name.removeprefix("G_synthesis/")
        if name.startswith("noise"):
            name = name.split("/")[0]
        elif name.endswith("/bias/bias"):
            name = name[: -len("/bias")]
        elif name.endswith("/kernel"):
            name = name[: -len("kernel")] + "weight"
        out[name] = value
    return out


@pytest.fixture
def dnnlib_modules(monkeypatch: pytest.MonkeyPatch) -> type:
    """Stand-ins for dnnlib's classes, registered under their real names for pickling only."""

    class Network:
        def __init__(self, state: dict[str, Any]) -> None:
            self._state = state

        def __getstate__(self) -> dict[str, Any]:
            return self._state

    class EasyDict(dict):
        pass

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    for mod_name, attrs in (
        ("dnnlib", {}),
        ("dnnlib.tflib", {}),
        ("dnnlib.tflib.network", {"Network": Network}),
        ("dnnlib.util", {"EasyDict": EasyDict}),
    ):
        mod = types.ModuleType(mod_name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, mod_name, mod)
    Network.EasyDict = EasyDict  # type: ignore[attr-defined]
    return Network


def _state(name: str, variables: dict[str, np.ndarray], components: Any) -> dict[str, Any]:
    return {
        "version": 3,
        "name": name,
        "static_kwargs": {"resolution": 32, "structure": "auto"},
        "components": components,
        "build_module_src": "import os\nos.system('touch SHOULD_NOT_EXIST')\n",
        "build_func_name": "training.networks_stylegan." + name,
        "variables": list(variables.items()),
    }


def test_official_v1_pickle_loads_to_the_same_tensors(
    dnnlib_modules: type, keras32: dict, vectors: dict, paper: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Network, EasyDict = dnnlib_modules, dnnlib_modules.EasyDict  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    syn_vars = _nvidia_names(keras32)
    syn_vars["lod"] = np.float32(0.0)  # TF returns numpy scalars for 0-d variables
    syn_vars["ToRGB_lod1/weight"] = rng.standard_normal([1, 1, 64, 3]).astype(np.float32)
    syn_vars["ToRGB_lod1/bias"] = np.zeros([3], np.float32)
    map_vars = {}
    for k in range(8):
        map_vars[f"Dense{k}/weight"] = rng.standard_normal([512, 512]).astype(np.float32)
        map_vars[f"Dense{k}/bias"] = rng.standard_normal([512]).astype(np.float32)
    avg = rng.standard_normal([512]).astype(np.float32)
    syn = Network(_state("G_synthesis", syn_vars, EasyDict()))
    mapping = Network(_state("G_mapping", map_vars, EasyDict()))
    Gs = Network(_state("G_style", {"dlatent_avg": avg}, EasyDict(G_mapping=mapping, G_synthesis=syn)))
    path = tmp_path / "karras2019stylegan-test-32x32.pkl"
    path.write_bytes(pickle.dumps((Gs, Gs, Gs), protocol=3))
    monkeypatch.chdir(tmp_path)

    G = stylegan1._read_foreign(path, 32)
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()
    from_ckpt = load_stylegan1_synthesis(paper / "stylegan_G_32x32_synthesis")
    ref_state = from_ckpt.state_dict()
    for key, value in G.synthesis.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    assert _err(_render(G.synthesis, vectors["synthesis/dlatents"]), vectors["synthesis/images"]) <= TOL
    # the mapping network: v1's formula (pixel norm; gain sqrt(2), lrmul 0.01; lrelu 0.2)
    assert G.has_mapping and torch.equal(G.mapping.w_avg, torch.from_numpy(avg))
    z = rng.standard_normal([2, 512]).astype(np.float32)
    x = z / np.sqrt((z.astype(np.float64) ** 2).mean(1, keepdims=True) + 1e-8)
    for k in range(8):
        x = x @ (map_vars[f"Dense{k}/weight"] * np.sqrt(2) / np.sqrt(512) * 0.01) + map_vars[f"Dense{k}/bias"] * 0.01
        x = np.where(x >= 0, x, 0.2 * x)
    ws = G.mapping(torch.from_numpy(z), None)
    assert ws.shape == (2, 8, 512)
    assert _err(ws[:, 3].numpy(), x) < 1e-4
    ws_t = G.mapping(torch.from_numpy(z), None, truncation_psi=0.5, truncation_cutoff=4)
    assert _err(ws_t[:, 0].numpy(), avg + 0.5 * (x - avg)) < 1e-4
    assert _err(ws_t[:, 5].numpy(), x) < 1e-4
    img = G(torch.from_numpy(z))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    # our format keeps the mapping too
    convert_stylegan1(path, tmp_path / "v1.safetensors")
    G2 = load_stylegan1(tmp_path / "v1.safetensors")
    assert torch.equal(G2(torch.from_numpy(z)), img)


@pytest.mark.parametrize("target", [("os", "system"), ("builtins", "eval")])
def test_malicious_pickle_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: tuple[str, str]
) -> None:
    marker = tmp_path / "PWNED"
    command = f"touch {marker}" if target[0] == "os" else f"open({str(marker)!r}, 'w').close()"

    class Evil:
        def __reduce__(self) -> tuple:
            import builtins
            import os

            return (os.system if target[0] == "os" else builtins.eval, (command,))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps((Evil(),), protocol=3))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafeModelFileError, match=f"{target[0]}.*{target[1]}"):
        load_stylegan1_synthesis(path)
    with pytest.raises(UnsafeModelFileError):
        convert_stylegan1(path, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pkl"]
