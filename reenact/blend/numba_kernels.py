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


@njit(cache=True)
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


@njit(cache=True)
def _clamp255(v: float) -> float:
    return min(max(v, 0.0), 255.0)


@njit(cache=True)
def _gamma(lin: float) -> float:
    lin = min(max(lin, 0.0), 1.0)
    s = 12.92 * lin if lin <= 0.0031308 else 1.055 * math.pow(lin, 1.0 / 2.4) - 0.055
    return _clamp255(s * 255.0)


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _down_into(x: np.ndarray, out: np.ndarray) -> None:
    """Gaussian 5-tap [1 4 6 4 1]/16 downsample by 2 of ``x`` [C,h,w] into ``out``."""
    ch, h, w = x.shape
    hn = out.shape[1]
    wn = out.shape[2]
    tmp = np.empty((hn, w))
    for c in range(ch):
        for i in range(hn):
            for xx in range(w):
                acc = 0.0
                for k in range(5):
                    yy = min(max(2 * i + k - 2, 0), h - 1)
                    acc += _TAPS[k] * x[c, yy, xx]
                tmp[i, xx] = acc
        for i in range(hn):
            for j in range(wn):
                acc = 0.0
                for k in range(5):
                    xx = min(max(2 * j + k - 2, 0), w - 1)
                    acc += _TAPS[k] * tmp[i, xx]
                out[c, i, j] = acc


@njit(cache=True)
def _up_into(x: np.ndarray, out: np.ndarray) -> None:
    """Gaussian upsample by 2 (polyphase [1 4 6 4 1]/8) of ``x`` [C,h',w'] into ``out`` [C,h,w]."""
    ch, hs, ws = x.shape
    h = out.shape[1]
    w = out.shape[2]
    tmp = np.empty((h, ws))
    for c in range(ch):
        for o in range(h):
            i = o // 2
            a = max(i - 1, 0)
            b = min(i + 1, hs - 1)
            for xx in range(ws):
                if o % 2 == 0:
                    tmp[o, xx] = (x[c, a, xx] + 6.0 * x[c, i, xx] + x[c, b, xx]) / 8.0
                else:
                    tmp[o, xx] = (x[c, i, xx] + x[c, b, xx]) / 2.0
        for yy in range(h):
            for o in range(w):
                i = o // 2
                a = max(i - 1, 0)
                b = min(i + 1, ws - 1)
                if o % 2 == 0:
                    out[c, yy, o] = (tmp[yy, a] + 6.0 * tmp[yy, i] + tmp[yy, b]) / 8.0
                else:
                    out[c, yy, o] = (tmp[yy, i] + tmp[yy, b]) / 2.0


_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


@njit(cache=True)
def _pyramid_delta(delta: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    """Collapse of Gaussian(alpha) x Laplacian(delta), ``delta`` [3,h,w], ``alpha`` [1,h,w].

    Levels live in two flat buffers (no lists: quicker to compile); serial, since faces
    run in parallel."""
    hs = np.empty(levels, dtype=np.int64)
    ws = np.empty(levels, dtype=np.int64)
    off = np.zeros(levels + 1, dtype=np.int64)
    hs[0] = delta.shape[1]
    ws[0] = delta.shape[2]
    for lvl in range(levels):
        if lvl > 0:
            hs[lvl] = (hs[lvl - 1] + 1) // 2
            ws[lvl] = (ws[lvl - 1] + 1) // 2
        off[lvl + 1] = off[lvl] + hs[lvl] * ws[lvl]
    ga = np.empty(off[levels])
    gd = np.empty(3 * off[levels])
    ga[: off[1]] = alpha.ravel()
    gd[: 3 * off[1]] = delta.ravel()
    for lvl in range(1, levels):
        h0, w0, h1, w1 = hs[lvl - 1], ws[lvl - 1], hs[lvl], ws[lvl]
        _down_into(ga[off[lvl - 1] : off[lvl]].reshape((1, h0, w0)), ga[off[lvl] : off[lvl + 1]].reshape((1, h1, w1)))
        _down_into(
            gd[3 * off[lvl - 1] : 3 * off[lvl]].reshape((3, h0, w0)),
            gd[3 * off[lvl] : 3 * off[lvl + 1]].reshape((3, h1, w1)),
        )
    last = levels - 1
    result = np.empty((3, hs[last], ws[last]))
    for c in range(3):
        for i in range(hs[last]):
            for j in range(ws[last]):
                k = i * ws[last] + j
                result[c, i, j] = gd[3 * off[last] + c * hs[last] * ws[last] + k] * ga[off[last] + k]
    for lvl in range(levels - 2, -1, -1):
        h, w = hs[lvl], ws[lvl]
        coarse = gd[3 * off[lvl + 1] : 3 * off[lvl + 2]].reshape((3, hs[lvl + 1], ws[lvl + 1]))
        up_d = np.empty((3, h, w))
        _up_into(coarse, up_d)
        up_r = np.empty((3, h, w))
        _up_into(result, up_r)
        for c in range(3):
            for i in range(h):
                for j in range(w):
                    k = i * w + j
                    fine = gd[3 * off[lvl] + c * h * w + k]
                    up_r[c, i, j] += ga[off[lvl] + k] * (fine - up_d[c, i, j])
        result = up_r
    return result


@njit(cache=True, parallel=True)
def _sample_pass(
    frames: np.ndarray, faces: np.ndarray, masks: np.ndarray, M: np.ndarray, roi: np.ndarray,
    fidx: np.ndarray, mask_of: np.ndarray, offsets: np.ndarray, items: np.ndarray,
    alpha_buf: np.ndarray, gen_buf: np.ndarray, sums: np.ndarray, hist: np.ndarray,
    match: int, space: int, bins: int, ranges: np.ndarray,
) -> None:
    """Pass 1, all faces at once: sample mask and face over each ROI, convert to the colour
    space, accumulate alpha-weighted statistics (or histograms) per work item."""
    size = faces.shape[2]
    for it in prange(items.shape[0]):
        f = items[it, 0]
        x0 = roi[f, 0]
        y0 = roi[f, 1]
        w = roi[f, 2] - x0 + 1
        t = fidx[f]
        km = mask_of[f]
        base = offsets[f]
        m00 = M[f, 0, 0]
        m01 = M[f, 0, 1]
        m02 = M[f, 0, 2]
        m10 = M[f, 1, 0]
        m11 = M[f, 1, 1]
        m12 = M[f, 1, 2]
        for r in range(items[it, 1], items[it, 2]):
            yy = y0 + r
            for cidx in range(w):
                p = base + r * w + cidx
                xx = x0 + cidx
                u = m00 * xx + m01 * yy + m02
                v = m10 * xx + m11 * yy + m12
                a = _sample_mask(masks, km, size, u, v)
                alpha_buf[p] = a
                if a <= 0.0:
                    continue
                gr = _sample_face(faces, f, 0, size, u, v)
                gg = _sample_face(faces, f, 1, size, u, v)
                gb = _sample_face(faces, f, 2, size, u, v)
                if match == 0:
                    gen_buf[0, p] = gr
                    gen_buf[1, p] = gg
                    gen_buf[2, p] = gb
                    continue
                g0, g1, g2 = _to_space(gr, gg, gb, space)
                gen_buf[0, p] = g0
                gen_buf[1, p] = g1
                gen_buf[2, p] = g2
                o0, o1, o2 = _to_space(
                    float(frames[t, yy, xx, 0]), float(frames[t, yy, xx, 1]), float(frames[t, yy, xx, 2]), space
                )
                sums[it, 0] += a
                if match == 1:
                    sums[it, 1] += a * g0
                    sums[it, 2] += a * g1
                    sums[it, 3] += a * g2
                    sums[it, 4] += a * g0 * g0
                    sums[it, 5] += a * g1 * g1
                    sums[it, 6] += a * g2 * g2
                    sums[it, 7] += a * o0
                    sums[it, 8] += a * o1
                    sums[it, 9] += a * o2
                    sums[it, 10] += a * o0 * o0
                    sums[it, 11] += a * o1 * o1
                    sums[it, 12] += a * o2 * o2
                else:
                    for ch in range(3):
                        lo = ranges[ch, 0]
                        scale = bins / (ranges[ch, 1] - lo)
                        gv = g0 if ch == 0 else (g1 if ch == 1 else g2)
                        ov = o0 if ch == 0 else (o1 if ch == 1 else o2)
                        bg = min(max(math.floor((gv - lo) * scale), 0.0), bins - 1.0)
                        bo = min(max(math.floor((ov - lo) * scale), 0.0), bins - 1.0)
                        hist[it, 0, ch, int(bg)] += a
                        hist[it, 1, ch, int(bo)] += a


@njit(cache=True)
def _colour_params(
    nfaces: int, items: np.ndarray, sums: np.ndarray, hist: np.ndarray, match: int, bins: int,
    max_gain: float, mu_g: np.ndarray, mu_o: np.ndarray, gain: np.ndarray, do_match: np.ndarray,
    p_g: np.ndarray, left_g: np.ndarray, nz: np.ndarray, nz_n: np.ndarray, right: np.ndarray,
    left: np.ndarray, p_nz: np.ndarray,
) -> None:
    """Per face: reduce the work items' partial sums into the colour mapping parameters."""
    fsums = np.zeros((nfaces, 13))
    fhist = np.zeros((nfaces, 2, 3, hist.shape[3]))
    for it in range(items.shape[0]):
        f = items[it, 0]
        fsums[f] += sums[it]
        if match == 2:
            fhist[f] += hist[it]
    for f in range(nfaces):
        total = fsums[f, 0]
        do_match[f] = match != 0 and total > 0.0
        if not do_match[f]:
            continue
        if match == 1:
            for ch in range(3):
                mg = fsums[f, 1 + ch] / total
                mo = fsums[f, 7 + ch] / total
                sg = math.sqrt(max(fsums[f, 4 + ch] / total - mg * mg, 0.0))
                so = math.sqrt(max(fsums[f, 10 + ch] / total - mo * mo, 0.0))
                mu_g[f, ch] = mg
                mu_o[f, ch] = mo
                gain[f, ch] = min(max(so / max(sg, 1e-6), 1.0 / max_gain), max_gain)
            continue
        for ch in range(3):
            acc = 0.0
            for k in range(bins):
                pg = fhist[f, 0, ch, k] / total
                p_g[f, ch, k] = pg
                acc += pg
                left_g[f, ch, k] = acc - pg
            n = 0
            acc = 0.0
            for k in range(bins):
                po = fhist[f, 1, ch, k] / total
                if po > 0.0:
                    acc += po
                    nz[f, ch, n] = k
                    right[f, ch, n] = acc
                    left[f, ch, n] = acc - po
                    p_nz[f, ch, n] = po
                    n += 1
            nz_n[f, ch] = n


@njit(cache=True, parallel=True)
def _composite_pass(
    out: np.ndarray, roi: np.ndarray, fidx: np.ndarray, offsets: np.ndarray, items: np.ndarray,
    alpha_buf: np.ndarray, gen_buf: np.ndarray, delta_buf: np.ndarray,
    mu_g: np.ndarray, mu_o: np.ndarray, gain: np.ndarray, do_match: np.ndarray,
    p_g: np.ndarray, left_g: np.ndarray, nz: np.ndarray, nz_n: np.ndarray, right: np.ndarray,
    left: np.ndarray, p_nz: np.ndarray,
    match: int, space: int, bins: int, ranges: np.ndarray, laplacian: bool,
) -> None:
    """Pass 2, the faces of one layer (disjoint ROIs): correct colours, blend, write (or,
    with the pyramid, store ``corrected - current`` for :func:`_pyramid_pass`)."""
    for it in prange(items.shape[0]):
        f = items[it, 0]
        x0 = roi[f, 0]
        y0 = roi[f, 1]
        w = roi[f, 2] - x0 + 1
        t = fidx[f]
        base = offsets[f]
        matched = do_match[f]
        for r in range(items[it, 1], items[it, 2]):
            yy = y0 + r
            for cidx in range(w):
                p = base + r * w + cidx
                a = alpha_buf[p]
                if a <= 0.0:
                    continue
                xx = x0 + cidx
                c0 = float(gen_buf[0, p])
                c1 = float(gen_buf[1, p])
                c2 = float(gen_buf[2, p])
                if match == 0:
                    cr, cg, cb = c0, c1, c2
                elif not matched:
                    cr, cg, cb = _from_space(c0, c1, c2, space)
                elif match == 1:
                    cr, cg, cb = _from_space(
                        (c0 - mu_g[f, 0]) * gain[f, 0] + mu_o[f, 0],
                        (c1 - mu_g[f, 1]) * gain[f, 1] + mu_o[f, 1],
                        (c2 - mu_g[f, 2]) * gain[f, 2] + mu_o[f, 2],
                        space,
                    )
                else:
                    s0 = _hist_map(c0, 0, ranges[0, 0], bins / (ranges[0, 1] - ranges[0, 0]), bins,
                                   p_g[f], left_g[f], nz[f], nz_n[f], right[f], left[f], p_nz[f])
                    s1 = _hist_map(c1, 1, ranges[1, 0], bins / (ranges[1, 1] - ranges[1, 0]), bins,
                                   p_g[f], left_g[f], nz[f], nz_n[f], right[f], left[f], p_nz[f])
                    s2 = _hist_map(c2, 2, ranges[2, 0], bins / (ranges[2, 1] - ranges[2, 0]), bins,
                                   p_g[f], left_g[f], nz[f], nz_n[f], right[f], left[f], p_nz[f])
                    cr, cg, cb = _from_space(s0, s1, s2, space)
                cur0 = float(out[t, yy, xx, 0])
                cur1 = float(out[t, yy, xx, 1])
                cur2 = float(out[t, yy, xx, 2])
                if laplacian:
                    delta_buf[0, p] = cr - cur0
                    delta_buf[1, p] = cg - cur1
                    delta_buf[2, p] = cb - cur2
                else:
                    out[t, yy, xx, 0] = np.uint8(_clamp255(math.floor(cur0 + a * (cr - cur0) + 0.5)))
                    out[t, yy, xx, 1] = np.uint8(_clamp255(math.floor(cur1 + a * (cg - cur1) + 0.5)))
                    out[t, yy, xx, 2] = np.uint8(_clamp255(math.floor(cur2 + a * (cb - cur2) + 0.5)))


@njit(cache=True)
def _pyramid_pass(
    out: np.ndarray, roi: np.ndarray, fidx: np.ndarray, offsets: np.ndarray, layer: np.ndarray,
    levels: np.ndarray, alpha_buf: np.ndarray, delta_buf: np.ndarray,
) -> None:
    """Laplacian-pyramid blend of the faces of one layer (serial: a parallel version costs
    more compile time than this optional mode saves)."""
    for k in range(layer.shape[0]):
        f = layer[k]
        x0 = roi[f, 0]
        y0 = roi[f, 1]
        w = roi[f, 2] - x0 + 1
        h = roi[f, 3] - y0 + 1
        t = fidx[f]
        base = offsets[f]
        alpha = alpha_buf[base : base + h * w].astype(np.float64).reshape((1, h, w))
        delta = np.empty((3, h, w))
        for ch in range(3):
            delta[ch] = delta_buf[ch, base : base + h * w].reshape((h, w))
        pyramid = levels[f] > 1
        res = _pyramid_delta(delta, alpha, levels[f]) if pyramid else delta
        for r in range(h):
            yy = y0 + r
            for cidx in range(w):
                a = alpha[0, r, cidx]
                if a <= 0.0:
                    continue
                xx = x0 + cidx
                for ch in range(3):
                    cur = float(out[t, yy, xx, ch])
                    step = res[ch, r, cidx] if pyramid else a * res[ch, r, cidx]
                    out[t, yy, xx, ch] = np.uint8(_clamp255(math.floor(cur + step + 0.5)))


_ROWS_PER_ITEM = 8


def _layers(plan: Plan, faces: np.ndarray) -> list[np.ndarray]:
    """Split the pasted faces into layers of disjoint ROIs, keeping the compositing order:
    a face goes one layer above the last earlier face of its frame that it overlaps."""
    layer_of: dict[int, int] = {}
    for f in faces:
        x0, y0, x1, y1 = plan.roi[f]
        above = -1
        for g, lg in layer_of.items():
            if plan.frame_index[g] != plan.frame_index[f]:
                continue
            gx0, gy0, gx1, gy1 = plan.roi[g]
            if gx0 <= x1 and x0 <= gx1 and gy0 <= y1 and y0 <= gy1:
                above = max(above, lg)
        layer_of[int(f)] = above + 1
    count = max(layer_of.values()) + 1
    return [np.array([f for f, lg in layer_of.items() if lg == k], dtype=np.int64) for k in range(count)]


def _items(plan: Plan, faces: np.ndarray) -> np.ndarray:
    """Work items (face, first row, end row) over the ROIs of ``faces``."""
    rows = []
    for f in faces:
        h = int(plan.roi[f, 3] - plan.roi[f, 1] + 1)
        for r in range(0, h, _ROWS_PER_ITEM):
            rows.append((int(f), r, min(h, r + _ROWS_PER_ITEM)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


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
    frames_np = frames.contiguous().numpy()
    out = torch.empty_like(frames, memory_format=torch.contiguous_format)
    out_np = out.numpy()
    np.copyto(out_np, frames_np)  # one memcpy: cheaper than a threaded clone
    pasted = np.flatnonzero(plan.status == PASTE)
    if pasted.size == 0:
        return out
    nfaces = faces.shape[0]
    faces_np = faces.detach().to(torch.float32).contiguous().numpy()
    masks_np = masks.detach().to(torch.float32).contiguous().numpy()
    ranges = np.asarray(SPACE_RANGES[settings.colour_space], dtype=np.float64)
    match = MATCH_CODES[settings.colour_match]
    space = SPACE_CODES[settings.colour_space]
    bins = int(settings.histogram_bins)
    roi = np.ascontiguousarray(plan.roi)
    areas = np.zeros(nfaces, dtype=np.int64)
    areas[pasted] = (roi[pasted, 2] - roi[pasted, 0] + 1) * (roi[pasted, 3] - roi[pasted, 1] + 1)
    offsets = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype(np.int64)
    total = int(areas.sum())
    items = _items(plan, pasted)
    alpha_buf = np.empty(total, dtype=np.float32)
    gen_buf = np.empty((3, total), dtype=np.float32)
    sums = np.zeros((items.shape[0], 13))
    hist = np.zeros((items.shape[0], 2, 3, bins if match == 2 else 1))
    fidx = np.ascontiguousarray(plan.frame_index)
    _sample_pass(
        frames_np, faces_np, masks_np, np.ascontiguousarray(plan.M), roi, fidx,
        np.ascontiguousarray(plan.mask_of), offsets, items, alpha_buf, gen_buf, sums, hist,
        match, space, bins, ranges,
    )
    nb = bins if match == 2 else 1
    mu_g = np.zeros((nfaces, 3))
    mu_o = np.zeros((nfaces, 3))
    gain = np.ones((nfaces, 3))
    do_match = np.zeros(nfaces, dtype=np.bool_)
    p_g = np.zeros((nfaces, 3, nb))
    left_g = np.zeros((nfaces, 3, nb))
    nz = np.zeros((nfaces, 3, nb))
    nz_n = np.zeros((nfaces, 3), dtype=np.int64)
    right = np.zeros((nfaces, 3, nb))
    left = np.zeros((nfaces, 3, nb))
    p_nz = np.zeros((nfaces, 3, nb))
    _colour_params(
        nfaces, items, sums, hist, match, bins, float(settings.max_gain),
        mu_g, mu_o, gain, do_match, p_g, left_g, nz, nz_n, right, left, p_nz,
    )
    laplacian = bool(settings.laplacian)
    delta_buf = np.zeros((3, total if laplacian else 1), dtype=np.float64)
    levels = np.ascontiguousarray(plan.levels)
    for layer in _layers(plan, pasted):
        _composite_pass(
            out_np, roi, fidx, offsets, _items(plan, layer), alpha_buf, gen_buf, delta_buf,
            mu_g, mu_o, gain, do_match, p_g, left_g, nz, nz_n, right, left, p_nz,
            match, space, bins, ranges, laplacian,
        )
        if laplacian:
            _pyramid_pass(out_np, roi, fidx, offsets, layer, levels, alpha_buf, delta_buf)
    return out
