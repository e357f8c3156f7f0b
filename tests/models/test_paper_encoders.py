"""The paper's encoders and mapper against the authors' TF2 outputs (shared/reference/paper).

Each component is converted from the authors' Keras file, stored in our format, loaded back
from it, and compared with the recorded outputs: max |ours - reference| <= 1e-4 (float64).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from reenact.errors import ModelError, ShapeError
from reenact.models.component_io import COMPONENT_FORMAT
from reenact.models.inception_attr import (
    PaperAttributeEncoder,
    attr_encoder_from_keras_h5,
    load_attr_encoder,
    save_attr_encoder,
)
from reenact.models.mapper import Mapper
from reenact.models.paper_mapper import (
    broadcast_w,
    load_paper_mapper,
    mapper_from_keras_h5,
    num_ws_for_resolution,
    save_paper_mapper,
)
from reenact.models.readers.keras_h5 import read_keras_layers
from reenact.models.vggface2 import (
    PaperIdentityEncoder,
    id_encoder_from_keras_h5,
    load_id_encoder,
    save_id_encoder,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def paper(paper_reference: Path) -> Path:
    return paper_reference


@pytest.fixture(scope="module")
def vectors(paper: Path) -> dict[str, np.ndarray]:
    with np.load(paper / "vectors.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def stored(paper: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each component converted once from the authors' file into our format."""
    out = tmp_path_factory.mktemp("paper")
    return {
        "mapper": save_paper_mapper(mapper_from_keras_h5(paper / "LatentMappingNetwork.h5"),
                                    out / "mapper.safetensors"),
        "attr": save_attr_encoder(attr_encoder_from_keras_h5(paper / "AttrEncoder.h5"),
                                  out / "attr.safetensors"),
        "id": save_id_encoder(id_encoder_from_keras_h5(paper / "vggface2.h5"),
                              out / "id.safetensors"),
    }


@pytest.fixture(scope="module")
def mapper(stored: dict[str, Path]) -> Mapper:
    return load_paper_mapper(stored["mapper"])


@pytest.fixture(scope="module")
def attr(stored: dict[str, Path]) -> PaperAttributeEncoder:
    return load_attr_encoder(stored["attr"])


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _err(ours: torch.Tensor, ref: np.ndarray) -> float:
    assert tuple(ours.shape) == ref.shape, (tuple(ours.shape), ref.shape)
    return float(np.abs(ours.detach().double().numpy() - ref.astype(np.float64)).max())


def _fills(paper: Path, name: str) -> dict[str, dict[str, Any]]:
    data = json.loads((paper / f"{name}.variables.json").read_text())
    return {w["weight_name"]: w["fill"] for layer in data["layers_in_file_order"] for w in layer["weights"]}


def test_mapper_matches_reference(mapper: Mapper, vectors: dict[str, np.ndarray]) -> None:
    z = torch.from_numpy(vectors["mapper/z"][:, 0])
    with torch.no_grad():
        w = broadcast_w(mapper(z), num_ws_for_resolution(32))
    assert _err(w, vectors["mapper/w"]) <= TOL
    assert num_ws_for_resolution(256) == 14


@pytest.mark.parametrize(("images", "features"), [("attr/images", "attr/features"),
                                                   ("res256/images", "attr256/features")])
def test_attribute_features_match_reference(
    attr: PaperAttributeEncoder, vectors: dict[str, np.ndarray], images: str, features: str
) -> None:
    with torch.no_grad():
        out = attr(_nchw(vectors[images]))
    assert _err(out, vectors[features][:, 0]) <= TOL


@pytest.mark.parametrize(("resolution", "images", "embedding"), [
    (32, "id/images", "id/embedding"), (256, "res256/images", "id256/embedding")])
def test_identity_embedding_matches_reference(
    stored: dict[str, Path], vectors: dict[str, np.ndarray], resolution: int, images: str,
    embedding: str,
) -> None:
    encoder = load_id_encoder(stored["id"], resolution=resolution)
    with torch.no_grad():
        out = encoder(_nchw(vectors[images]))
    assert _err(out, vectors[embedding][:, 0]) <= TOL
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_end_to_end_codes_and_w(
    stored: dict[str, Path], mapper: Mapper, attr: PaperAttributeEncoder,
    vectors: dict[str, np.ndarray],
) -> None:
    """G.call up to the synthesis: id(x1), attr(x2), w = mapper(id ++ attr)[:, 0]."""
    id_encoder = load_id_encoder(stored["id"], resolution=32)
    with torch.no_grad():
        id_code = id_encoder(_nchw(vectors["e2e/id_images"]))
        attr_code = attr(_nchw(vectors["e2e/attr_images"]))
        w = mapper.map(id_code, attr_code)
    assert _err(id_code, vectors["e2e/id_embedding"][:, 0]) <= TOL
    assert _err(attr_code, vectors["e2e/attr_embedding"][:, 0]) <= TOL
    assert _err(w, vectors["e2e/w"]) <= TOL


def test_imported_tensors_have_the_recorded_scales(
    paper: Path, stored: dict[str, Path]
) -> None:
    """Every tensor sits where its fill recipe says (catches swapped same-shaped tensors)."""
    def check(value: torch.Tensor, fill: dict[str, Any], gamma: bool = False) -> None:
        got = float((value - 1 if gamma else value).abs().max())
        assert got == pytest.approx(fill["scale"], rel=1e-5), fill

    fills = _fills(paper, "LatentMappingNetwork.h5")
    state = load_file(str(stored["mapper"]))
    for ours, keras in [("0", "dense"), ("2", "dense_1"), ("4", "dense_2"), ("6", "dense_3")]:
        check(state[f"net.{ours}.weight"], fills[f"{keras}/kernel:0"])
        check(state[f"net.{ours}.bias"], fills[f"{keras}/bias:0"])

    fills = _fills(paper, "AttrEncoder.h5")  # a fresh process: conv2d_i is creation number i
    state = load_file(str(stored["attr"]))
    for i in range(94):
        suffix = f"_{i}" if i else ""
        check(state[f"net.convs.{i}.conv.weight"], fills[f"conv2d{suffix}/kernel:0"])
        check(state[f"net.convs.{i}.bn.bias"], fills[f"batch_normalization{suffix}/beta:0"])
        check(state[f"net.convs.{i}.bn.running_mean"], fills[f"batch_normalization{suffix}/moving_mean:0"])
        assert float(state[f"net.convs.{i}.bn.weight"].sub(1).abs().max()) == 0.0  # scale=False

    fills = _fills(paper, "vggface2.h5")
    state = load_file(str(stored["id"]))
    net = PaperIdentityEncoder().net
    prefix = {id(m): n for n, m in net.named_modules()}
    for keras, module in net.keras_names().items():
        if isinstance(module, torch.nn.BatchNorm2d):
            check(state[f"net.{prefix[id(module)]}.weight"], fills[f"{keras}/gamma:0"], gamma=True)
            check(state[f"net.{prefix[id(module)]}.bias"], fills[f"{keras}/beta:0"])
        else:
            check(state[f"net.{prefix[id(module)]}.weight"], fills[f"{keras}/kernel:0"])


def _rewrite(src: Path, dest: Path, rename: Any = None, reshape: str | None = None) -> None:
    """Copy a Keras weights file, renaming layers/weights or corrupting one tensor's shape."""
    layers = read_keras_layers(src)
    rename = rename or (lambda name: name)
    with h5py.File(dest, "w") as f:
        f.attrs["layer_names"] = np.array([rename(la.name) for la in layers], dtype=h5py.string_dtype())
        for layer in layers:
            group = f.create_group(rename(layer.name))
            names = [rename(n.split("/")[0]) + "/" + n.split("/", 1)[1] for n, _ in layer.weights]
            group.attrs["weight_names"] = (
                np.array([n.encode() for n in names], dtype="S64") if names else np.zeros((0,))
            )
            for new, (old, value) in zip(names, layer.weights, strict=True):
                group.create_dataset(new, data=value[..., :-1] if old == reshape else value)


def test_offset_auto_names_load_the_same_tensors(paper: Path, tmp_path: Path) -> None:
    """A file from a process whose name counters were offset (and with byte-string attributes)."""
    def offset(name: str) -> str:
        for base in ("conv2d", "batch_normalization", "dense"):
            if name == base:
                return f"{base}_7"
            if name.startswith(base + "_") and name[len(base) + 1:].isdigit():
                return f"{base}_{int(name[len(base) + 1:]) + 7}"
        return name

    _rewrite(paper / "AttrEncoder.h5", tmp_path / "a.h5", offset)
    assert any(la.name == "conv2d_100" for la in read_keras_layers(tmp_path / "a.h5"))
    ours = attr_encoder_from_keras_h5(tmp_path / "a.h5").state_dict()
    ref = attr_encoder_from_keras_h5(paper / "AttrEncoder.h5").state_dict()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    _rewrite(paper / "LatentMappingNetwork.h5", tmp_path / "m.h5", offset)
    ours = mapper_from_keras_h5(tmp_path / "m.h5").state_dict()
    ref = mapper_from_keras_h5(paper / "LatentMappingNetwork.h5").state_dict()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_files_from_other_networks_are_refused(paper: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="another network"):
        mapper_from_keras_h5(paper / "AttrEncoder.h5")
    with pytest.raises(ModelError, match="another network"):
        attr_encoder_from_keras_h5(paper / "LatentMappingNetwork.h5")
    with pytest.raises(ModelError, match="not the VGGFace2 ResNet-50"):
        id_encoder_from_keras_h5(paper / "AttrEncoder.h5")
    _rewrite(paper / "LatentMappingNetwork.h5", tmp_path / "m.h5", reshape="dense_2/kernel:0")
    with pytest.raises(ModelError, match=r"dense_2/kernel:0.*\[1024, 511\]"):
        mapper_from_keras_h5(tmp_path / "m.h5")


def test_stored_components_are_loaded_strictly(stored: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="expected a reenact 'paper_mapper'"):
        load_paper_mapper(stored["attr"])
    state = load_file(str(stored["mapper"]))
    del state["net.6.bias"]
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken), metadata={"format": COMPONENT_FORMAT,
                                            "reenact_component": "paper_mapper", "config": "{}"})
    with pytest.raises(ModelError, match=r"net\.6\.bias"):
        load_paper_mapper(broken)
    with pytest.raises(ModelError, match="does not exist"):
        load_id_encoder(tmp_path / "missing.safetensors")


def test_input_shapes_are_checked(attr: PaperAttributeEncoder) -> None:
    with pytest.raises(ShapeError, match=r"\[B,3,H,W\]"):
        attr(torch.zeros(1, 32, 32, 3))
    with pytest.raises(ShapeError, match="H, W >= 230"):
        PaperIdentityEncoder(256)(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ShapeError):
        broadcast_w(torch.zeros(2, 1, 512), 8)


@pytest.mark.parametrize("resolution", [32, 256])
def test_end_to_end_image(
    paper: Path, stored: dict[str, Path], mapper: Mapper, attr: PaperAttributeEncoder,
    vectors: dict[str, np.ndarray], resolution: int,
) -> None:
    """The authors' ``G.call``: (synthesis(mapper(id(x1) ++ attr(x2))) + 1) / 2, NHWC."""
    from reenact.models.stylegan1 import load_stylegan1_synthesis

    key = "e2e" if resolution == 32 else "e2e256"
    x1 = vectors["e2e/id_images" if resolution == 32 else "res256/images"]  # [A, B]
    x2 = x1[[1, 0]]  # [B, A]
    synthesis = load_stylegan1_synthesis(
        paper / f"stylegan_G_{resolution}x{resolution}_synthesis", resolution=resolution
    )
    id_encoder = load_id_encoder(stored["id"], resolution=resolution)
    with torch.no_grad():
        w = mapper.map(id_encoder(_nchw(x1)), attr(_nchw(x2)))
        images = (synthesis(broadcast_w(w, num_ws_for_resolution(resolution))) + 1) / 2
    assert _err(w, vectors[f"{key}/w"]) <= TOL
    assert _err(images.permute(0, 2, 3, 1), vectors[f"{key}/images"]) <= TOL
