"""Numba CPU kernels of the paste-back (parallel over ROI rows; same result as the torch
reference in :mod:`reenact.blend.reference`, to within one uint8 level).

One compiled function does all faces in order; per face it makes one parallel pass that
samples mask and face and accumulates alpha-weighted colour statistics or histograms, and
one that colour-corrects, blends and writes. Only the face's ROI is touched. Compiled
functions are cached on disk (``cache=True``), so only the first run on a machine pays
the JIT compile.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

from reenact.blend.common import MATCH_CODES, PASTE, SPACE_CODES, SPACE_RANGES, BlendSettings, Plan

_DELTA = 6.0 / 29.0


@njit(cache=True, inline="always")
def _to_space(r: float, g: float, b: float, space: int) -> tuple[float, float, float]:
    if space == 0:
        return r, g, b
    if space == 1:
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
        return y, cb, cr
    lin0 = r / 255.0
    lin1 = g / 255.0
    lin2 = b / 255.0
    lin0 = lin0 / 12.92 if lin0 <= 0.04045 else math.pow((lin0 + 0.055) / 1.055, 2.4)
    lin1 = lin1 / 12.92 if lin1 <= 0.04045 else math.pow((lin1 + 0.055) / 1.055, 2.4)
    lin2 = lin2 / 12.92 if lin2 <= 0.04045 else math.pow((lin2 + 0.055) / 1.055, 2.4)
    x = (0.4124564 * lin0 + 0.3575761 * lin1 + 0.1804375 * lin2) / 0.95047
    yy = 0.2126729 * lin0 + 0.7151522 * lin1 + 0.0721750 * lin2
    z = (0.0193339 * lin0 + 0.1191920 * lin1 + 0.9503041 * lin2) / 1.08883
    e = _DELTA * _DELTA * _DELTA
    k = 3.0 * _DELTA * _DELTA
    fx = math.pow(max(x, 0.0), 1.0 / 3.0) if x > e else x / k + 4.0 / 29.0
    fy = math.pow(max(yy, 0.0), 1.0 / 3.0) if yy > e else yy / k + 4.0 / 29.0
    fz = math.pow(max(z, 0.0), 1.0 / 3.0) if z > e else z / k + 4.0 / 29.0
    return 116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)


@njit(cache=True, inline="always")
def _clamp255(v: float) -> float:
    return min(max(v, 0.0), 255.0)


@njit(cache=True, inline="always")
def _gamma(lin: float) -> float:
    lin = min(max(lin, 0.0), 1.0)
    s = 12.92 * lin if lin <= 0.0031308 else 1.055 * math.pow(lin, 1.0 / 2.4) - 0.055
    return _clamp255(s * 255.0)


@njit(cache=True, inline="always")
def _from_space(c0: float, c1: float, c2: float, space: int) -> tuple[float, float, float]:
    if space == 0:
        return _clamp255(c0), _clamp255(c1), _clamp255(c2)
    if space == 1:
        cb = c1 - 128.0
        cr = c2 - 128.0
        return (
            _clamp255(c0 + 1.402 * cr),
            _clamp255(c0 - 0.344136 * cb - 0.714136 * cr),
            _clamp255(c0 + 1.772 * cb),
        )
    fy = (c0 + 16.0) / 116.0
    fx = fy + c1 / 500.0
    fz = fy - c2 / 200.0
    k = 3.0 * _DELTA * _DELTA
    x = (fx * fx * fx if fx > _DELTA else k * (fx - 4.0 / 29.0)) * 0.95047
    y = fy * fy * fy if fy > _DELTA else k * (fy - 4.0 / 29.0)
    z = (fz * fz * fz if fz > _DELTA else k * (fz - 4.0 / 29.0)) * 1.08883
    r = 3.2404542 * x - 1.5371385 * y - 0.4985314 * z
    g = -0.9692660 * x + 1.8760108 * y + 0.0415560 * z
    b = 0.0556434 * x - 0.2040259 * y + 1.0572252 * z
    return _gamma(r), _gamma(g), _gamma(b)


@njit(cache=True, inline="always")
def _sample_mask(mask: np.ndarray, k: int, size: int, u: float, v: float) -> float:
    if u <= -1.0 or v <= -1.0 or u >= size or v >= size:
        return 0.0
    fu = math.floor(u)
    fv = math.floor(v)
    ax = u - fu
    ay = v - fv
    ix = int(fu)
    iy = int(fv)
    acc = 0.0
    for dy in range(2):
        yy = iy + dy
        if yy < 0 or yy >= size:
            continue
        wy = ay if dy == 1 else 1.0 - ay
        for dx in range(2):
            xx = ix + dx
            if xx < 0 or xx >= size:
                continue
            wx = ax if dx == 1 else 1.0 - ax
            acc += wx * wy * mask[k, yy, xx]
    return acc


@njit(cache=True, inline="always")
def _sample_face(faces: np.ndarray, f: int, ch: int, size: int, u: float, v: float) -> float:
    u = min(max(u, 0.0), size - 1.0)
    v = min(max(v, 0.0), size - 1.0)
    fu = math.floor(u)
    fv = math.floor(v)
    ax = u - fu
    ay = v - fv
    ix = int(fu)
    iy = int(fv)
    ix1 = min(ix + 1, size - 1)
    iy1 = min(iy + 1, size - 1)
    top = faces[f, ch, iy, ix] * (1.0 - ax) + faces[f, ch, iy, ix1] * ax
    bottom = faces[f, ch, iy1, ix] * (1.0 - ax) + faces[f, ch, iy1, ix1] * ax
    val = (top * (1.0 - ay) + bottom * ay + 1.0) * 127.5
    return _clamp255(val)


@njit(cache=True, inline="always")
def _hist_map(
    c: float, ch: int, lo: float, scale: float, bins: int,
    p_g: np.ndarray, left_g: np.ndarray, nz: np.ndarray, nz_n: np.ndarray,
    right: np.ndarray, left: np.ndarray, p_nz: np.ndarray,
) -> float:
    t = min(max((c - lo) * scale, 0.0), float(bins))
    k = min(math.floor(t), bins - 1.0)
    frac = t - k
    ki = int(k)
    q = left_g[ch, ki] + frac * p_g[ch, ki]
    n = nz_n[ch]
    a = 0
    b = n
    while a < b:
        mid = (a + b) // 2
        if right[ch, mid] < q:
            a = mid + 1
        else:
            b = mid
    j = min(a, n - 1)
    fo = (q - left[ch, j]) / p_nz[ch, j]
    fo = min(max(fo, 0.0), 1.0)
    return lo + (nz[ch, j] + fo) / scale


@njit(cache=True, parallel=True)
def _down(x: np.ndarray) -> np.ndarray:
    ch, h, w = x.shape
    hn = (h + 1) // 2
    wn = (w + 1) // 2
    taps = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    tmp = np.empty((ch, hn, w))
    for i in prange(hn):
        for c in range(ch):
            for xx in range(w):
                acc = 0.0
                for k in range(5):
                    yy = min(max(2 * i + k - 2, 0), h - 1)
                    acc += taps[k] * x[c, yy, xx]
                tmp[c, i, xx] = acc
    out = np.empty((ch, hn, wn))
    for i in prange(hn):
        for c in range(ch):
            for j in range(wn):
                acc = 0.0
                for k in range(5):
                    xx = min(max(2 * j + k - 2, 0), w - 1)
                    acc += taps[k] * tmp[c, i, xx]
                out[c, i, j] = acc
    return out


@njit(cache=True, parallel=True)
def _up(x: np.ndarray, h: int, w: int) -> np.ndarray:
    ch, hs, ws = x.shape
    tmp = np.empty((ch, h, ws))
    for o in prange(h):
        i = o // 2
        a = max(i - 1, 0)
        c1 = min(i + 1, hs - 1)
        for c in range(ch):
            for xx in range(ws):
                if o % 2 == 0:
                    tmp[c, o, xx] = (x[c, a, xx] + 6.0 * x[c, i, xx] + x[c, c1, xx]) / 8.0
                else:
                    tmp[c, o, xx] = (x[c, i, xx] + x[c, c1, xx]) / 2.0
    out = np.empty((ch, h, w))
    for yy in prange(h):
        for c in range(ch):
            for o in range(w):
                i = o // 2
                a = max(i - 1, 0)
                c1 = min(i + 1, ws - 1)
                if o % 2 == 0:
                    out[c, yy, o] = (tmp[c, yy, a] + 6.0 * tmp[c, yy, i] + tmp[c, yy, c1]) / 8.0
                else:
                    out[c, yy, o] = (tmp[c, yy, i] + tmp[c, yy, c1]) / 2.0
    return out


@njit(cache=True)
def _pyramid_delta(delta: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    gauss_a = [alpha]
    gauss_d = [delta]
    for _ in range(1, levels):
        gauss_a.append(_down(gauss_a[-1]))
        gauss_d.append(_down(gauss_d[-1]))
    result = gauss_a[levels - 1] * gauss_d[levels - 1]
    for lvl in range(levels - 2, -1, -1):
        h = gauss_d[lvl].shape[1]
        w = gauss_d[lvl].shape[2]
        lap = gauss_d[lvl] - _up(gauss_d[lvl + 1], h, w)
        result = gauss_a[lvl] * lap + _up(result, h, w)
    return result


@njit(cache=True, parallel=True)
def _paste_all(
    out: np.ndarray, frames: np.ndarray, faces: np.ndarray, masks: np.ndarray,
    M: np.ndarray, roi: np.ndarray, status: np.ndarray, mask_of: np.ndarray,
    fidx: np.ndarray, levels: np.ndarray, match: int, space: int, max_gain: float,
    bins: int, laplacian: bool, ranges: np.ndarray,
) -> None:
    size = faces.shape[2]
    nfaces = faces.shape[0]
    for f in range(nfaces):
        if status[f] != 0:
            continue
        x0 = roi[f, 0]
        y0 = roi[f, 1]
        x1 = roi[f, 2]
        y1 = roi[f, 3]
        h = y1 - y0 + 1
        w = x1 - x0 + 1
        t = fidx[f]
        km = mask_of[f]
        m00 = M[f, 0, 0]
        m01 = M[f, 0, 1]
        m02 = M[f, 0, 2]
        m10 = M[f, 1, 0]
        m11 = M[f, 1, 1]
        m12 = M[f, 1, 2]
        alpha = np.zeros((h, w))
        gen = np.zeros((3, h, w))
        nchunk = min(h, 64)
        sums = np.zeros((nchunk, 13))
        hist = np.zeros((nchunk, 2, 3, bins))
        # Pass 1: sample, convert, accumulate (per chunk of rows, no races).
        for chunk in prange(nchunk):
            r_start = chunk * h // nchunk
            r_end = (chunk + 1) * h // nchunk
            for r in range(r_start, r_end):
                yy = y0 + r
                for cidx in range(w):
                    xx = x0 + cidx
                    u = m00 * xx + m01 * yy + m02
                    v = m10 * xx + m11 * yy + m12
                    a = _sample_mask(masks, km, size, u, v)
                    alpha[r, cidx] = a
                    if a <= 0.0:
                        continue
                    gr = _sample_face(faces, f, 0, size, u, v)
                    gg = _sample_face(faces, f, 1, size, u, v)
                    gb = _sample_face(faces, f, 2, size, u, v)
                    if match == 0:
                        gen[0, r, cidx] = gr
                        gen[1, r, cidx] = gg
                        gen[2, r, cidx] = gb
                        continue
                    g0, g1, g2 = _to_space(gr, gg, gb, space)
                    gen[0, r, cidx] = g0
                    gen[1, r, cidx] = g1
                    gen[2, r, cidx] = g2
                    o0, o1, o2 = _to_space(
                        float(frames[t, yy, xx, 0]), float(frames[t, yy, xx, 1]), float(frames[t, yy, xx, 2]), space
                    )
                    if match == 1:
                        sums[chunk, 0] += a
                        sums[chunk, 1] += a * g0
                        sums[chunk, 2] += a * g1
                        sums[chunk, 3] += a * g2
                        sums[chunk, 4] += a * g0 * g0
                        sums[chunk, 5] += a * g1 * g1
                        sums[chunk, 6] += a * g2 * g2
                        sums[chunk, 7] += a * o0
                        sums[chunk, 8] += a * o1
                        sums[chunk, 9] += a * o2
                        sums[chunk, 10] += a * o0 * o0
                        sums[chunk, 11] += a * o1 * o1
                        sums[chunk, 12] += a * o2 * o2
                    else:
                        sums[chunk, 0] += a
                        for ch in range(3):
                            lo = ranges[ch, 0]
                            scale = bins / (ranges[ch, 1] - lo)
                            gv = g0 if ch == 0 else (g1 if ch == 1 else g2)
                            ov = o0 if ch == 0 else (o1 if ch == 1 else o2)
                            bg = min(max(math.floor((gv - lo) * scale), 0.0), bins - 1.0)
                            bo = min(max(math.floor((ov - lo) * scale), 0.0), bins - 1.0)
                            hist[chunk, 0, ch, int(bg)] += a
                            hist[chunk, 1, ch, int(bo)] += a
        total_s = sums.sum(axis=0)
        total = total_s[0]
        # Colour mapping parameters.
        mu_g = np.zeros(3)
        mu_o = np.zeros(3)
        gain = np.ones(3)
        p_g = np.zeros((3, bins))
        left_g = np.zeros((3, bins))
        nz = np.zeros((3, bins))
        nz_n = np.zeros(3, dtype=np.int64)
        right = np.zeros((3, bins))
        left = np.zeros((3, bins))
        p_nz = np.zeros((3, bins))
        do_match = match != 0 and total > 0.0
        if do_match and match == 1:
            for ch in range(3):
                mg = total_s[1 + ch] / total
                mo = total_s[7 + ch] / total
                sg = math.sqrt(max(total_s[4 + ch] / total - mg * mg, 0.0))
                so = math.sqrt(max(total_s[10 + ch] / total - mo * mo, 0.0))
                mu_g[ch] = mg
                mu_o[ch] = mo
                gain[ch] = min(max(so / max(sg, 1e-6), 1.0 / max_gain), max_gain)
        elif do_match:
            htot = hist.sum(axis=0) / total
            for ch in range(3):
                acc = 0.0
                for k in range(bins):
                    p_g[ch, k] = htot[0, ch, k]
                    acc += htot[0, ch, k]
                    left_g[ch, k] = acc - htot[0, ch, k]
                n = 0
                acc = 0.0
                for k in range(bins):
                    p = htot[1, ch, k]
                    if p > 0.0:
                        acc += p
                        nz[ch, n] = k
                        right[ch, n] = acc
                        left[ch, n] = acc - p
                        p_nz[ch, n] = p
                        n += 1
                nz_n[ch] = n
        # Pass 2: correct, blend, write.
        delta = np.zeros((3, h, w)) if laplacian else np.zeros((3, 1, 1))
        for r in prange(h):
            yy = y0 + r
            for cidx in range(w):
                a = alpha[r, cidx]
                if a <= 0.0:
                    continue
                xx = x0 + cidx
                c0 = gen[0, r, cidx]
                c1 = gen[1, r, cidx]
                c2 = gen[2, r, cidx]
                if match == 0:
                    cr, cg, cb = c0, c1, c2
                elif not do_match:
                    cr, cg, cb = _from_space(c0, c1, c2, space)
                elif match == 1:
                    cr, cg, cb = _from_space(
                        (c0 - mu_g[0]) * gain[0] + mu_o[0],
                        (c1 - mu_g[1]) * gain[1] + mu_o[1],
                        (c2 - mu_g[2]) * gain[2] + mu_o[2],
                        space,
                    )
                else:
                    s0 = _hist_map(c0, 0, ranges[0, 0], bins / (ranges[0, 1] - ranges[0, 0]), bins,
                                   p_g, left_g, nz, nz_n, right, left, p_nz)
                    s1 = _hist_map(c1, 1, ranges[1, 0], bins / (ranges[1, 1] - ranges[1, 0]), bins,
                                   p_g, left_g, nz, nz_n, right, left, p_nz)
                    s2 = _hist_map(c2, 2, ranges[2, 0], bins / (ranges[2, 1] - ranges[2, 0]), bins,
                                   p_g, left_g, nz, nz_n, right, left, p_nz)
                    cr, cg, cb = _from_space(s0, s1, s2, space)
                cur0 = float(out[t, yy, xx, 0])
                cur1 = float(out[t, yy, xx, 1])
                cur2 = float(out[t, yy, xx, 2])
                if laplacian:
                    delta[0, r, cidx] = cr - cur0
                    delta[1, r, cidx] = cg - cur1
                    delta[2, r, cidx] = cb - cur2
                else:
                    out[t, yy, xx, 0] = np.uint8(_clamp255(math.floor(cur0 + a * (cr - cur0) + 0.5)))
                    out[t, yy, xx, 1] = np.uint8(_clamp255(math.floor(cur1 + a * (cg - cur1) + 0.5)))
                    out[t, yy, xx, 2] = np.uint8(_clamp255(math.floor(cur2 + a * (cb - cur2) + 0.5)))
        if laplacian:
            nlev = levels[f]
            if nlev > 1:
                res = _pyramid_delta(delta, alpha.reshape((1, h, w)), nlev)
            else:
                res = delta * alpha.reshape((1, h, w))
            for r in prange(h):
                yy = y0 + r
                for cidx in range(w):
                    if alpha[r, cidx] <= 0.0:
                        continue
                    xx = x0 + cidx
                    for ch in range(3):
                        cur = float(out[t, yy, xx, ch])
                        out[t, yy, xx, ch] = np.uint8(_clamp255(math.floor(cur + res[ch, r, cidx] + 0.5)))


def paste_faces_numba(
    frames: torch.Tensor,
    faces: torch.Tensor,
    masks: torch.Tensor,
    plan: Plan,
    settings: BlendSettings,
) -> torch.Tensor:
    """Numba paste-back of CPU tensors; inputs already checked and planned.

    Conventions: frames uint8 [T,H,W,3]; faces float [F,3,R,R] in [-1,1]; masks float
    [K,R,R]. Returns a new uint8 [T,H,W,3] on the CPU.
    """
    out = frames.contiguous().clone()
    if not bool((plan.status == PASTE).any()):
        return out
    frames_np = frames.contiguous().numpy()
    faces_np = faces.detach().to(torch.float32).contiguous().numpy()
    masks_np = masks.detach().to(torch.float32).contiguous().numpy()
    ranges = np.asarray(SPACE_RANGES[settings.colour_space], dtype=np.float64)
    _paste_all(
        out.numpy(), frames_np, faces_np, masks_np,
        np.ascontiguousarray(plan.M), np.ascontiguousarray(plan.roi), np.ascontiguousarray(plan.status),
        np.ascontiguousarray(plan.mask_of), np.ascontiguousarray(plan.frame_index),
        np.ascontiguousarray(plan.levels),
        MATCH_CODES[settings.colour_match], SPACE_CODES[settings.colour_space],
        float(settings.max_gain), int(settings.histogram_bins), bool(settings.laplacian), ranges,
    )
    return out
