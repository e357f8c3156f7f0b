"""Torch reference of the paste-back: the definition the numba and cupy kernels follow.

Per face, in the order given, inside its ROI only (see :mod:`reenact.blend.common`):

1. For each frame pixel (x, y) of the ROI, ``(u, v) = M @ (x, y, 1)`` is its crop position
   (pixel centres at integer coordinates). The mask is sampled bilinearly with zeros
   outside the crop (``alpha``), the face bilinearly with clamped borders and turned into
   RGB 0..255 (``gen``); ``orig`` is the input frame's pixel.
2. Colour match of ``gen`` to ``orig`` inside the mask, in the chosen colour space:
   "stats" maps each channel ``c -> (c - mean_gen) * gain + mean_orig`` with
   ``gain = clamp(std_orig / std_gen, 1/max_gain, max_gain)`` (alpha-weighted statistics,
   accumulated in float64); "histogram" maps each channel through the alpha-weighted CDF of
   ``gen`` and the inverse CDF of ``orig`` (piecewise linear inside bins).
3. ``out = cur + alpha * (corrected - cur)`` where ``cur`` is the output so far (faces
   pasted earlier in the same frame show through), or, with ``laplacian``, ``cur`` plus
   the collapse of the Laplacian pyramid of ``corrected - cur`` weighted by the Gaussian
   pyramid of ``alpha`` (5-tap [1 4 6 4 1]/16, replicated borders).
4. Rounded half up, clamped to 0..255, written only where ``alpha > 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reenact.blend.common import PASTE, SPACE_RANGES, BlendSettings, Plan

_RGB2XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_XYZ2RGB = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)
_WHITE = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0


def _mat(m: tuple[tuple[float, ...], ...], c: torch.Tensor) -> torch.Tensor:
    return torch.stack([m[i][0] * c[0] + m[i][1] * c[1] + m[i][2] * c[2] for i in range(3)])


def rgb_to_space(rgb: torch.Tensor, space: str) -> torch.Tensor:
    """RGB 0..255 ``[3,...]`` to the colour space ``space`` ("rgb", "ycbcr", "lab")."""
    if space == "rgb":
        return rgb
    r, g, b = rgb[0], rgb[1], rgb[2]
    if space == "ycbcr":
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
        return torch.stack([y, cb, cr])
    c = rgb / 255.0
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = _mat(_RGB2XYZ, lin)
    t = torch.stack([xyz[i] / _WHITE[i] for i in range(3)])
    f = torch.where(t > _DELTA**3, t.clamp_min(0.0) ** (1.0 / 3.0), t / (3 * _DELTA**2) + 4.0 / 29.0)
    return torch.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def space_to_rgb(c: torch.Tensor, space: str) -> torch.Tensor:
    """Inverse of :func:`rgb_to_space`, clamped to RGB 0..255."""
    if space == "rgb":
        return c.clamp(0.0, 255.0)
    if space == "ycbcr":
        y, cb, cr = c[0], c[1] - 128.0, c[2] - 128.0
        rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb])
        return rgb.clamp(0.0, 255.0)
    fy = (c[0] + 16.0) / 116.0
    f = torch.stack([fy + c[1] / 500.0, fy, fy - c[2] / 200.0])
    t = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))
    xyz = torch.stack([t[i] * _WHITE[i] for i in range(3)])
    lin = _mat(_XYZ2RGB, xyz).clamp(0.0, 1.0)
    srgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1.0 / 2.4) - 0.055)
    return (srgb * 255.0).clamp(0.0, 255.0)


def _weighted_stats(c: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    c64, w64 = c.to(torch.float64), w.to(torch.float64)
    total = float(w64.sum())
    if total <= 0.0:
        return torch.zeros(3, dtype=torch.float64, device=c.device), torch.ones(3, dtype=torch.float64, device=c.device), 0.0
    mean = (c64 * w64).sum(dim=1) / total
    var = (c64 * c64 * w64).sum(dim=1) / total - mean * mean
    return mean, var.clamp_min(0.0).sqrt(), total


def _match_stats(gen: torch.Tensor, orig: torch.Tensor, w: torch.Tensor, settings: BlendSettings) -> torch.Tensor:
    mu_g, sd_g, total = _weighted_stats(gen, w)
    mu_o, sd_o, _ = _weighted_stats(orig, w)
    if total <= 0.0:
        return gen
    gain = (sd_o / sd_g.clamp_min(1e-6)).clamp(1.0 / settings.max_gain, settings.max_gain)
    return (gen - mu_g.to(gen.dtype)[:, None]) * gain.to(gen.dtype)[:, None] + mu_o.to(gen.dtype)[:, None]


def _match_histogram(gen: torch.Tensor, orig: torch.Tensor, w: torch.Tensor, settings: BlendSettings) -> torch.Tensor:
    bins = settings.histogram_bins
    w64 = w.to(torch.float64)
    total = float(w64.sum())
    if total <= 0.0:
        return gen
    out = torch.empty_like(gen)
    for ch, (lo, hi) in enumerate(SPACE_RANGES[settings.colour_space]):
        scale = bins / (hi - lo)
        hists = []
        for src in (gen[ch], orig[ch]):
            idx = torch.floor((src.to(torch.float64) - lo) * scale).clamp(0, bins - 1).to(torch.int64)
            h = torch.zeros(bins, dtype=torch.float64, device=gen.device).scatter_add_(0, idx, w64)
            hists.append(h / total)
        p_g, p_o = hists
        left_g = torch.cumsum(p_g, 0) - p_g
        t = ((gen[ch].to(torch.float64) - lo) * scale).clamp(0.0, float(bins))
        k = torch.floor(t).clamp(max=bins - 1)
        frac = t - k
        k = k.to(torch.int64)
        q = left_g[k] + frac * p_g[k]
        nz = torch.nonzero(p_o > 0).flatten()
        p_nz = p_o[nz]
        right = torch.cumsum(p_nz, 0)
        left = right - p_nz
        j = torch.searchsorted(right, q.contiguous(), side="left").clamp(max=nz.numel() - 1)
        frac_o = ((q - left[j]) / p_nz[j]).clamp(0.0, 1.0)
        out[ch] = (lo + (nz[j].to(torch.float64) + frac_o) / scale).to(gen.dtype)
    return out


def _down(x: torch.Tensor) -> torch.Tensor:
    """Gaussian 5-tap downsample by 2 of ``[C,h,w]`` (replicated borders)."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16.0
    offsets = torch.arange(-2, 3, device=x.device)
    h, w = x.shape[1], x.shape[2]
    ri = (2 * torch.arange((h + 1) // 2, device=x.device)[:, None] + offsets).clamp(0, h - 1)
    x = (x[:, ri, :] * taps[None, None, :, None]).sum(dim=2)
    ci = (2 * torch.arange((w + 1) // 2, device=x.device)[:, None] + offsets).clamp(0, w - 1)
    return (x[:, :, ci] * taps).sum(dim=3)


def _up_axis(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    m = x.shape[dim]
    o = torch.arange(n, device=x.device)
    i = o // 2
    odd = (o % 2 == 1).to(x.dtype)
    a = x.index_select(dim, (i - 1).clamp(0, m - 1))
    b = x.index_select(dim, i)
    c = x.index_select(dim, (i + 1).clamp(0, m - 1))
    shape = [1, 1, 1]
    shape[dim] = n
    odd = odd.view(shape)
    even_val = (a + 6.0 * b + c) / 8.0
    odd_val = (b + c) / 2.0
    return even_val * (1.0 - odd) + odd_val * odd


def _up(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Gaussian upsample by 2 of ``[C,h',w']`` to ``[C,h,w]`` (polyphase [1 4 6 4 1]/8)."""
    return _up_axis(_up_axis(x, h, 1), w, 2)


def _pyramid_delta(delta: torch.Tensor, alpha: torch.Tensor, levels: int) -> torch.Tensor:
    """Collapse of Gaussian(alpha) x Laplacian(delta) over ``levels`` levels."""
    gauss_a = [alpha[None]]
    gauss_d = [delta]
    for _ in range(1, levels):
        gauss_a.append(_down(gauss_a[-1]))
        gauss_d.append(_down(gauss_d[-1]))
    result = gauss_a[-1] * gauss_d[-1]
    for lvl in range(levels - 2, -1, -1):
        h, w = gauss_d[lvl].shape[1], gauss_d[lvl].shape[2]
        lap = gauss_d[lvl] - _up(gauss_d[lvl + 1], h, w)
        result = gauss_a[lvl] * lap + _up(result, h, w)
    return result


def paste_faces_torch(
    frames: torch.Tensor,
    faces: torch.Tensor,
    masks: torch.Tensor,
    plan: Plan,
    settings: BlendSettings,
) -> torch.Tensor:
    """Reference paste-back; inputs already checked and planned (see ``paste_faces``).

    Conventions: frames uint8 [T,H,W,3]; faces float [F,3,R,R] in [-1,1]; masks float
    [K,R,R] (row ``plan.mask_of[f]`` for face f). Returns a new uint8 [T,H,W,3].
    """
    out = frames.clone()
    size = faces.shape[2]
    device = frames.device
    norm = 2.0 / (size - 1)
    for f in range(faces.shape[0]):
        if plan.status[f] != PASTE:
            continue
        x0, y0, x1, y1 = (int(v) for v in plan.roi[f])
        t = int(plan.frame_index[f])
        m = torch.as_tensor(plan.M[f], dtype=torch.float64, device=device)
        ys = torch.arange(y0, y1 + 1, dtype=torch.float64, device=device)[:, None]
        xs = torch.arange(x0, x1 + 1, dtype=torch.float64, device=device)[None, :]
        u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        grid = torch.stack([u * norm - 1.0, v * norm - 1.0], dim=-1).to(torch.float32)[None]
        mask = masks[int(plan.mask_of[f])].to(torch.float32)[None, None]
        alpha = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
        face = faces[f].to(torch.float32)[None]
        gen = F.grid_sample(face, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
        gen = ((gen + 1.0) * 127.5).clamp(0.0, 255.0)
        orig = frames[t, y0 : y1 + 1, x0 : x1 + 1].permute(2, 0, 1).to(torch.float32)
        cur = out[t, y0 : y1 + 1, x0 : x1 + 1].permute(2, 0, 1).to(torch.float32)

        if settings.colour_match != "none":
            space = settings.colour_space
            h, w = gen.shape[1], gen.shape[2]
            weights = alpha.reshape(-1)
            g_s = rgb_to_space(gen.reshape(3, -1), space)
            o_s = rgb_to_space(orig.reshape(3, -1), space)
            if settings.colour_match == "stats":
                matched = _match_stats(g_s, o_s, weights, settings)
            else:
                matched = _match_histogram(g_s, o_s, weights, settings)
            corrected = space_to_rgb(matched, space).reshape(3, h, w)
        else:
            corrected = gen

        inside = alpha > 0
        if settings.laplacian and plan.levels[f] > 1:
            delta = torch.where(inside[None], corrected - cur, torch.zeros_like(cur))
            result = cur + _pyramid_delta(delta, alpha, int(plan.levels[f]))
        else:
            result = cur + alpha[None] * (corrected - cur)
        result = torch.floor(result + 0.5).clamp(0.0, 255.0)
        result = torch.where(inside[None], result, cur).to(torch.uint8)
        out[t, y0 : y1 + 1, x0 : x1 + 1] = result.permute(1, 2, 0)
    return out
