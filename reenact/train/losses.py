"""Losses of the recipe: identity, landmarks, masked MS-SSIM + L1 pixel loss, and the
non-saturating logistic adversarial loss on W with the R1 penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reenact.errors import ShapeError


def _check_images(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.ndim != 4 or a.shape != b.shape or a.shape[1] != 3:
        raise ShapeError(f"{name} expects two float [B,3,H,W] images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def identity_loss(emb_target: torch.Tensor, emb_output: torch.Tensor) -> torch.Tensor:
    """L1 between identity embeddings (mean over batch and dimensions); both ``[B,D]``."""
    if emb_target.shape != emb_output.shape or emb_target.ndim != 2:
        raise ShapeError(f"identity_loss expects two [B,D], got {tuple(emb_target.shape)}, {tuple(emb_output.shape)}")
    return (emb_target - emb_output).abs().mean()


def landmark_loss(points_target: torch.Tensor, points_output: torch.Tensor, size: int, first: int = 17) -> torch.Tensor:
    """MSE over landmarks ``first..`` (17: the 51 non-jaw points of 68), in crop-normalised units.

    Conventions: points ``[B,68,2]`` pixel (x, y) of a ``size`` x ``size`` crop.
    """
    if points_target.shape != points_output.shape or points_target.ndim != 3 or points_target.shape[-1] != 2:
        raise ShapeError(f"landmark_loss expects two [B,N,2], got {tuple(points_target.shape)}, {tuple(points_output.shape)}")
    diff = (points_target[:, first:] - points_output[:, first:]) / float(size)
    return (diff**2).mean()


def _gauss_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    k = window.numel()
    wx = window.view(1, 1, 1, k).expand(c, 1, 1, k)
    wy = window.view(1, 1, k, 1).expand(c, 1, k, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = 0.01**2, 0.03**2  # data range 1
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs
    return ssim.mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ms_ssim(a: torch.Tensor, b: torch.Tensor, weights: tuple[float, ...], window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM per image, ``[B]``, of images in [-1,1] (``len(weights)`` scales).

    The window shrinks at coarse scales to fit (images down to 4 px work), and contrast
    terms are clamped above zero so gradients stay finite.
    """
    _check_images(a, b, "ms_ssim")
    x, y = (a + 1) / 2, (b + 1) / 2
    values = []
    for level, _ in enumerate(weights):
        k = min(window, min(x.shape[-2:]))
        k = k if k % 2 == 1 else k - 1
        win = _gauss_window(k, sigma * k / window, x.device, x.dtype)
        ssim, cs = _ssim_parts(x, y, win)
        values.append((ssim if level == len(weights) - 1 else cs).clamp_min(1e-6))
        if level < len(weights) - 1:
            if min(x.shape[-2:]) < 2:
                raise ShapeError(f"images of {tuple(a.shape[-2:])} px are too small for {len(weights)} MS-SSIM scales")
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=0)
    w = torch.tensor(weights, device=a.device, dtype=a.dtype).view(-1, 1)
    return torch.prod(stacked**w, dim=0)


def inverse_gaussian_mask(size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """``[1,1,size,size]`` weights ``1 - exp(-r^2 / 2 sigma^2)`` (r: distance from the centre in
    half-frame units), normalised to mean 1: the background counts, the face centre (left to
    the identity and landmark losses) less."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 - 1
    r2 = coords.view(1, -1) ** 2 + coords.view(-1, 1) ** 2
    mask = 1 - torch.exp(-r2 / (2 * sigma**2))
    return (mask / mask.mean()).view(1, 1, size, size)


def pixel_loss(
    target: torch.Tensor,
    output: torch.Tensor,
    mask: torch.Tensor,
    ms_ssim_weight: float,
    l1_weight: float,
    scales: tuple[float, ...],
    window: int,
) -> torch.Tensor:
    """``ms_ssim_weight * (1 - MS-SSIM) + l1_weight * mean(mask * |target - output|)``.

    Conventions: images float ``[B,3,R,R]`` in [-1,1]; ``mask`` ``[1,1,R,R]``.
    """
    _check_images(target, output, "pixel_loss")
    l1 = (mask * (target - output).abs()).mean()
    return ms_ssim_weight * (1 - ms_ssim(target, output, scales, window)).mean() + l1_weight * l1


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic discriminator loss."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator (mapper) loss."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_w: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma / 2 * E ||d D(w) / d w||^2`` on real w (``real_w`` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_w, create_graph=True)
    return 0.5 * gamma * grad.pow(2).sum(dim=1).mean()


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Fraction of real w scored > 0 and mapped w scored < 0 (chance: 0.5)."""
    correct = (real_logits > 0).float().sum() + (fake_logits < 0).float().sum()
    return float(correct) / float(real_logits.numel() + fake_logits.numel())


__all__ = [
    "identity_loss",
    "landmark_loss",
    "ms_ssim",
    "inverse_gaussian_mask",
    "pixel_loss",
    "d_logistic_loss",
    "g_nonsaturating_loss",
    "r1_penalty",
    "discriminator_accuracy",
]
