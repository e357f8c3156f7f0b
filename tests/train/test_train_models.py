"""Attribute encoder, mapper, W discriminator and the differentiable ONNX face networks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reenact.errors import ConfigError, ModelError, ShapeError
from reenact.models.encoders import AttributeEncoder, AttributeEncoderConfig
from reenact.models.mapper import Mapper, MapperConfig, WDiscriminator, WDiscriminatorConfig
from reenact.models.onnx_modules import OnnxIdentity, OnnxLandmarks, OnnxModelSpec
from testing.models import MOBILEFACE, PFLD


def _linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_paper_mapper_and_discriminator_shapes() -> None:
    mapper = Mapper(MapperConfig())
    assert _linear_shapes(mapper) == [(2560, 2048), (2048, 1024), (1024, 512), (512, 512)]
    slopes = [m.negative_slope for m in mapper.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2, 0.2, 0.2]
    disc = WDiscriminator(WDiscriminatorConfig())
    assert _linear_shapes(disc) == [(512, 256), (256, 128), (128, 64), (64, 1)]
    w = mapper.map(torch.randn(3, 512), torch.randn(3, 2048))
    assert w.shape == (3, 512) and disc(w).shape == (3, 1)
    with pytest.raises(ShapeError, match="2560"):
        mapper(torch.randn(3, 2559))


def test_inception_attribute_encoder_is_2048d_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache: must not download
    encoder = AttributeEncoder(AttributeEncoderConfig(input_size=75))
    assert "random initialisation" in caplog.text
    encoder.eval()
    with torch.no_grad():
        code = encoder(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert code.shape == (1, 2048)
    assert not list(tmp_path.rglob("*.pth"))
    with pytest.raises(ConfigError, match="too small for InceptionV3"):
        AttributeEncoderConfig(input_size=32)


def test_small_encoder_shapes_and_gradients() -> None:
    encoder = AttributeEncoder(AttributeEncoderConfig(backbone="small", out_dim=24, input_size=32,
                                                      imagenet_init=False, small_channels=(8, 16)))
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    code = encoder(x)
    assert code.shape == (2, 24)
    code.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    with pytest.raises(ShapeError, match=r"\[B,3,H,W\]"):
        encoder(torch.rand(2, 48, 48, 3))


def _spec(fixtures: Path, which: str) -> OnnxModelSpec:
    return (MOBILEFACE if which == "id" else PFLD).spec(fixtures)


def test_onnx_identity_matches_onnxruntime_and_is_differentiable(fixtures: Path) -> None:
    import onnxruntime as ort

    spec = _spec(fixtures, "id")
    net = OnnxIdentity(spec).train()  # train() must not unfreeze batch norm
    x = (torch.rand(3, 3, 112, 112) * 2 - 1).requires_grad_(True)
    emb = net(x)
    assert emb.shape == (3, 256)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    session = ort.InferenceSession(spec.path, providers=["CPUExecutionProvider"])
    raw = ((x.detach() + 1) * 127.5).numpy()
    ref = np.concatenate([session.run(None, {session.get_inputs()[0].name: raw[i : i + 1]})[0] for i in range(3)])
    ref_t = torch.nn.functional.normalize(torch.from_numpy(ref), dim=1)
    torch.testing.assert_close(emb.detach(), ref_t, atol=1e-4, rtol=1e-4)
    emb[:, 0].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in net.parameters())


def test_onnx_landmarks_pixel_points_match_onnxruntime(fixtures: Path) -> None:
    import onnxruntime as ort

    spec = _spec(fixtures, "lm")
    net = OnnxLandmarks(spec)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    pts = net(x)
    assert pts.shape == (2, 68, 2)
    session = ort.InferenceSession(spec.path, providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: ((x + 1) / 2).numpy()})
    ref_pts = torch.from_numpy(ref[-1]).reshape(2, 68, 2) * 112
    torch.testing.assert_close(pts, ref_pts, atol=1e-3, rtol=1e-4)


def test_onnx_bad_inputs(fixtures: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        OnnxIdentity(OnnxModelSpec(path=str(tmp_path / "missing.onnx")))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="cannot convert"):
        OnnxIdentity(OnnxModelSpec(path=str(bad)))
    net = OnnxIdentity(_spec(fixtures, "id"))
    with pytest.raises(ShapeError, match="112"):
        net(torch.zeros(1, 3, 64, 64))


def test_inception_starts_from_local_imagenet_file(tmp_path: Path) -> None:
    from torchvision.models import Inception3

    torch.manual_seed(1)
    reference = Inception3(aux_logits=True, init_weights=False)
    path = tmp_path / "inception_imagenet.pth"
    torch.save(reference.state_dict(), path)
    encoder = AttributeEncoder(AttributeEncoderConfig(input_size=75, imagenet_weights=str(path)))
    ours = encoder.backbone.state_dict()
    theirs = reference.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    path.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read ImageNet weights"):
        AttributeEncoder(AttributeEncoderConfig(input_size=75, imagenet_weights=str(path)))


def test_pack_component_reference_names_the_missing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reenact.errors import WeightsMissingError

    monkeypatch.setenv("REENACT_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="full/generator"):
        OnnxModelSpec(path="pack:full/generator").resolved_path()
