"""The recipe's losses behave as a user of the trainer relies on."""

from __future__ import annotations

import torch

from reenact.train import losses as L


def test_ms_ssim_is_one_for_identical_and_drops_with_noise() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    weights = (0.2, 0.4, 0.4)
    same = L.ms_ssim(img, img, weights, window=5)
    torch.testing.assert_close(same, torch.ones(2), atol=1e-4, rtol=0)
    light = L.ms_ssim(img, (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(-1, 1), weights, 5)
    heavy = L.ms_ssim(img, (img + 0.8 * torch.randn(img.shape, generator=g)).clamp(-1, 1), weights, 5)
    assert (heavy < light).all() and (light < 1).all()


def test_pixel_loss_zero_when_equal_and_gradients_finite() -> None:
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = L.inverse_gaussian_mask(32, 0.5)
    assert abs(float(mask.mean()) - 1) < 1e-5 and float(mask[0, 0, 16, 16]) < float(mask[0, 0, 0, 0])
    zero = L.pixel_loss(img, img, mask, 0.84, 0.16, (0.2, 0.4, 0.4), 5)
    assert float(zero) < 1e-4
    out = torch.zeros_like(img, requires_grad=True)  # flat output: contrast terms near zero
    loss = L.pixel_loss(img, out, mask, 0.84, 0.16, (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 11)
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all() and float(loss.detach()) > 0.1


def test_landmark_loss_ignores_the_jaw() -> None:
    a = torch.rand(2, 68, 2) * 112
    b = a.clone()
    b[:, :17] += 20.0  # jaw points moved
    assert float(L.landmark_loss(a, b, 112, first=17)) == 0.0
    b[:, 30] += 11.2
    assert float(L.landmark_loss(a, b, 112, first=17)) > 0


def test_identity_loss_and_adversarial_terms() -> None:
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    assert float(L.identity_loss(e, e)) == 0.0
    assert float(L.identity_loss(e, -e)) > 0
    real, fake = torch.tensor([[3.0], [2.0]]), torch.tensor([[-3.0], [1.0]])
    assert L.discriminator_accuracy(real, fake) == 0.75
    assert float(L.d_logistic_loss(real, fake)) < float(L.d_logistic_loss(fake, real))
    w = torch.randn(5, 4, requires_grad=True)
    logits = (w * torch.tensor([1.0, 2.0, 0.0, 0.0])).sum(1, keepdim=True)
    torch.testing.assert_close(L.r1_penalty(logits, w, 10.0), torch.tensor(5.0 * 5.0))
