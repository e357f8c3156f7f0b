"""CUDA kernels of the paste-back, as cupy RawKernels on the caller's torch CUDA tensors.

The same definition as the torch reference (:mod:`reenact.blend.reference`): kernels in
CUDA C below sample mask and face over every face's ROI and accumulate the colour
statistics or histograms (``blend_sample``), turn them into per-face colour mappings
(``blend_params``) and colour-correct, blend and write one layer of non-overlapping faces
at a time (``blend_composite``). Frames, faces and masks are shared with torch through
DLPack (no copies); kernels run on torch's current stream. The optional Laplacian pyramid
filtering of the blend runs as torch operations on the same device, between the composite
kernel (which then stores ``corrected - current``) and the final write.

``SOURCES`` holds every CUDA source string, so that tests can compile each one with
``nvcc --ptx`` on machines without a GPU.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from reenact.blend.common import MATCH_CODES, PASTE, SPACE_CODES, SPACE_RANGES, BlendSettings, Plan

_COMMON = r"""
#define BLEND_DELTA (6.0 / 29.0)

__device__ __forceinline__ double clamp255(double v) { return fmin(fmax(v, 0.0), 255.0); }

__device__ void to_space(double r, double g, double b, int space, double* o) {
    if (space == 0) { o[0] = r; o[1] = g; o[2] = b; return; }
    if (space == 1) {
        o[0] = 0.299 * r + 0.587 * g + 0.114 * b;
        o[1] = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b;
        o[2] = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b;
        return;
    }
    double c[3] = {r / 255.0, g / 255.0, b / 255.0};
    for (int i = 0; i < 3; ++i)
        c[i] = c[i] <= 0.04045 ? c[i] / 12.92 : pow((c[i] + 0.055) / 1.055, 2.4);
    double x = (0.4124564 * c[0] + 0.3575761 * c[1] + 0.1804375 * c[2]) / 0.95047;
    double y = 0.2126729 * c[0] + 0.7151522 * c[1] + 0.0721750 * c[2];
    double z = (0.0193339 * c[0] + 0.1191920 * c[1] + 0.9503041 * c[2]) / 1.08883;
    const double e = BLEND_DELTA * BLEND_DELTA * BLEND_DELTA;
    const double k = 3.0 * BLEND_DELTA * BLEND_DELTA;
    double fx = x > e ? pow(fmax(x, 0.0), 1.0 / 3.0) : x / k + 4.0 / 29.0;
    double fy = y > e ? pow(fmax(y, 0.0), 1.0 / 3.0) : y / k + 4.0 / 29.0;
    double fz = z > e ? pow(fmax(z, 0.0), 1.0 / 3.0) : z / k + 4.0 / 29.0;
    o[0] = 116.0 * fy - 16.0;
    o[1] = 500.0 * (fx - fy);
    o[2] = 200.0 * (fy - fz);
}

__device__ __forceinline__ double gamma_encode(double lin) {
    lin = fmin(fmax(lin, 0.0), 1.0);
    double s = lin <= 0.0031308 ? 12.92 * lin : 1.055 * pow(lin, 1.0 / 2.4) - 0.055;
    return clamp255(s * 255.0);
}

__device__ void from_space(double c0, double c1, double c2, int space, double* o) {
    if (space == 0) { o[0] = clamp255(c0); o[1] = clamp255(c1); o[2] = clamp255(c2); return; }
    if (space == 1) {
        double cb = c1 - 128.0, cr = c2 - 128.0;
        o[0] = clamp255(c0 + 1.402 * cr);
        o[1] = clamp255(c0 - 0.344136 * cb - 0.714136 * cr);
        o[2] = clamp255(c0 + 1.772 * cb);
        return;
    }
    double fy = (c0 + 16.0) / 116.0;
    double fx = fy + c1 / 500.0;
    double fz = fy - c2 / 200.0;
    const double k = 3.0 * BLEND_DELTA * BLEND_DELTA;
    double x = (fx > BLEND_DELTA ? fx * fx * fx : k * (fx - 4.0 / 29.0)) * 0.95047;
    double y = fy > BLEND_DELTA ? fy * fy * fy : k * (fy - 4.0 / 29.0);
    double z = (fz > BLEND_DELTA ? fz * fz * fz : k * (fz - 4.0 / 29.0)) * 1.08883;
    o[0] = gamma_encode(3.2404542 * x - 1.5371385 * y - 0.4985314 * z);
    o[1] = gamma_encode(-0.9692660 * x + 1.8760108 * y + 0.0415560 * z);
    o[2] = gamma_encode(0.0556434 * x - 0.2040259 * y + 1.0572252 * z);
}
"""

SAMPLE_SOURCE = _COMMON + r"""
__device__ double sample_mask(const float* masks, long long k, int size, double u, double v) {
    if (u <= -1.0 || v <= -1.0 || u >= size || v >= size) return 0.0;
    double fu = floor(u), fv = floor(v);
    double ax = u - fu, ay = v - fv;
    int ix = (int)fu, iy = (int)fv;
    double acc = 0.0;
    for (int dy = 0; dy < 2; ++dy) {
        int yy = iy + dy;
        if (yy < 0 || yy >= size) continue;
        double wy = dy ? ay : 1.0 - ay;
        for (int dx = 0; dx < 2; ++dx) {
            int xx = ix + dx;
            if (xx < 0 || xx >= size) continue;
            double wx = dx ? ax : 1.0 - ax;
            acc += wx * wy * (double)masks[(k * size + yy) * size + xx];
        }
    }
    return acc;
}

__device__ double sample_face(const float* faces, long long f, int ch, int size, double u, double v) {
    u = fmin(fmax(u, 0.0), size - 1.0);
    v = fmin(fmax(v, 0.0), size - 1.0);
    double fu = floor(u), fv = floor(v);
    double ax = u - fu, ay = v - fv;
    int ix = (int)fu, iy = (int)fv;
    int ix1 = min(ix + 1, size - 1), iy1 = min(iy + 1, size - 1);
    const float* img = faces + (f * 3 + ch) * (long long)size * size;
    double top = img[iy * size + ix] * (1.0 - ax) + img[iy * size + ix1] * ax;
    double bottom = img[iy1 * size + ix] * (1.0 - ax) + img[iy1 * size + ix1] * ax;
    return clamp255((top * (1.0 - ay) + bottom * ay + 1.0) * 127.5);
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// Pass 1 over all pasted faces: blockIdx.y picks the face, threads cover its ROI.
extern "C" __global__ void blend_sample(
    const unsigned char* frames, const float* faces, const float* masks,
    const double* M, const long long* roi, const long long* fidx, const long long* mask_of,
    const long long* offsets, const long long* face_list,
    int H, int W, int size,
    float* alpha_buf, float* gen_buf, long long total,
    double* sums, double* hist, int match, int space, int bins, const double* ranges)
{
    extern __shared__ float shist[];
    const long long f = face_list[blockIdx.y];
    const long long x0 = roi[f * 4 + 0], y0 = roi[f * 4 + 1];
    const long long w = roi[f * 4 + 2] - x0 + 1, h = roi[f * 4 + 3] - y0 + 1;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int nh = (match == 2) ? 6 * bins : 0;
    for (int j = threadIdx.x; j < nh; j += blockDim.x) shist[j] = 0.0f;
    if (match == 2) __syncthreads();
    double vals[13];
    for (int q = 0; q < 13; ++q) vals[q] = 0.0;
    if (i < w * h) {
        const long long r = i / w, c = i % w;
        const long long yy = y0 + r, xx = x0 + c;
        const long long p = offsets[f] + i;
        const double* m = M + f * 6;
        double u = m[0] * xx + m[1] * yy + m[2];
        double v = m[3] * xx + m[4] * yy + m[5];
        double a = sample_mask(masks, mask_of[f], size, u, v);
        alpha_buf[p] = (float)a;
        if (a > 0.0) {
            double g[3], o[3];
            double gr = sample_face(faces, f, 0, size, u, v);
            double gg = sample_face(faces, f, 1, size, u, v);
            double gb = sample_face(faces, f, 2, size, u, v);
            if (match == 0) {
                g[0] = gr; g[1] = gg; g[2] = gb;
            } else {
                to_space(gr, gg, gb, space, g);
                const unsigned char* px = frames + ((fidx[f] * H + yy) * W + xx) * 3;
                to_space((double)px[0], (double)px[1], (double)px[2], space, o);
                vals[0] = a;
                if (match == 1) {
                    for (int ch = 0; ch < 3; ++ch) {
                        vals[1 + ch] = a * g[ch];
                        vals[4 + ch] = a * g[ch] * g[ch];
                        vals[7 + ch] = a * o[ch];
                        vals[10 + ch] = a * o[ch] * o[ch];
                    }
                } else {
                    for (int ch = 0; ch < 3; ++ch) {
                        double lo = ranges[ch * 2], scale = bins / (ranges[ch * 2 + 1] - lo);
                        int bg = (int)fmin(fmax(floor((g[ch] - lo) * scale), 0.0), bins - 1.0);
                        int bo = (int)fmin(fmax(floor((o[ch] - lo) * scale), 0.0), bins - 1.0);
                        atomicAdd(&shist[(0 * 3 + ch) * bins + bg], (float)a);
                        atomicAdd(&shist[(1 * 3 + ch) * bins + bo], (float)a);
                    }
                }
            }
            gen_buf[p] = (float)g[0];
            gen_buf[total + p] = (float)g[1];
            gen_buf[2 * total + p] = (float)g[2];
        }
    }
    if (match != 0) {
        const int nq = (match == 1) ? 13 : 1;
        for (int q = 0; q < nq; ++q) {
            double s = warp_sum(vals[q]);
            if ((threadIdx.x & 31) == 0 && s != 0.0) atomicAdd(&sums[f * 13 + q], s);
        }
    }
    if (match == 2) {
        __syncthreads();
        for (int j = threadIdx.x; j < nh; j += blockDim.x)
            if (shist[j] != 0.0f) atomicAdd(&hist[f * 6 * bins + j], (double)shist[j]);
    }
}

// Colour mapping per (face, channel): mean/gain, or the CDFs for histogram matching.
extern "C" __global__ void blend_params(
    const long long* face_list, int n_list, const double* sums, const double* hist,
    int match, int bins, double max_gain,
    double* mu_g, double* mu_o, double* gain, int* do_match,
    double* p_g, double* left_g, double* nz, int* nz_n, double* right, double* left, double* p_nz)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_list * 3) return;
    const long long f = face_list[idx / 3];
    const int ch = idx % 3;
    const double total = sums[f * 13];
    const int dm = (match != 0 && total > 0.0) ? 1 : 0;
    if (ch == 0) do_match[f] = dm;
    if (!dm) return;
    if (match == 1) {
        double mg = sums[f * 13 + 1 + ch] / total, mo = sums[f * 13 + 7 + ch] / total;
        double sg = sqrt(fmax(sums[f * 13 + 4 + ch] / total - mg * mg, 0.0));
        double so = sqrt(fmax(sums[f * 13 + 10 + ch] / total - mo * mo, 0.0));
        mu_g[f * 3 + ch] = mg;
        mu_o[f * 3 + ch] = mo;
        gain[f * 3 + ch] = fmin(fmax(so / fmax(sg, 1e-6), 1.0 / max_gain), max_gain);
        return;
    }
    const long long base = (f * 3 + ch) * bins;
    const double* hg = hist + (f * 6 + ch) * bins;
    const double* ho = hist + (f * 6 + 3 + ch) * bins;
    double acc = 0.0;
    for (int k = 0; k < bins; ++k) {
        double pg = hg[k] / total;
        p_g[base + k] = pg;
        acc += pg;
        left_g[base + k] = acc - pg;
    }
    int n = 0;
    acc = 0.0;
    for (int k = 0; k < bins; ++k) {
        double po = ho[k] / total;
        if (po > 0.0) {
            acc += po;
            nz[base + n] = k;
            right[base + n] = acc;
            left[base + n] = acc - po;
            p_nz[base + n] = po;
            ++n;
        }
    }
    nz_n[f * 3 + ch] = n;
}
"""

COMPOSITE_SOURCE = _COMMON + r"""
__device__ double hist_map(double c, long long base, double lo, double scale, int bins,
                           const double* p_g, const double* left_g, const double* nz, int n,
                           const double* right, const double* left, const double* p_nz) {
    double t = fmin(fmax((c - lo) * scale, 0.0), (double)bins);
    double k = fmin(floor(t), bins - 1.0);
    double frac = t - k;
    int ki = (int)k;
    double q = left_g[base + ki] + frac * p_g[base + ki];
    int a = 0, b = n;
    while (a < b) {
        int mid = (a + b) / 2;
        if (right[base + mid] < q) a = mid + 1; else b = mid;
    }
    int j = min(a, n - 1);
    double fo = fmin(fmax((q - left[base + j]) / p_nz[base + j], 0.0), 1.0);
    return lo + (nz[base + j] + fo) / scale;
}

// Pass 2 over one layer of faces with disjoint ROIs: correct colours, blend, write.
extern "C" __global__ void blend_composite(
    unsigned char* out, const long long* roi, const long long* fidx, const long long* offsets,
    const long long* face_list, int H, int W,
    const float* alpha_buf, const float* gen_buf, float* delta_buf, long long total,
    const double* mu_g, const double* mu_o, const double* gain, const int* do_match,
    const double* p_g, const double* left_g, const double* nz, const int* nz_n,
    const double* right, const double* left, const double* p_nz,
    int match, int space, int bins, const double* ranges, int laplacian)
{
    const long long f = face_list[blockIdx.y];
    const long long x0 = roi[f * 4 + 0], y0 = roi[f * 4 + 1];
    const long long w = roi[f * 4 + 2] - x0 + 1, h = roi[f * 4 + 3] - y0 + 1;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w * h) return;
    const long long p = offsets[f] + i;
    const double a = alpha_buf[p];
    if (a <= 0.0) return;
    const long long yy = y0 + i / w, xx = x0 + i % w;
    double c0 = gen_buf[p], c1 = gen_buf[total + p], c2 = gen_buf[2 * total + p];
    double rgb[3];
    if (match == 0) {
        rgb[0] = c0; rgb[1] = c1; rgb[2] = c2;
    } else if (!do_match[f]) {
        from_space(c0, c1, c2, space, rgb);
    } else if (match == 1) {
        from_space((c0 - mu_g[f * 3]) * gain[f * 3] + mu_o[f * 3],
                   (c1 - mu_g[f * 3 + 1]) * gain[f * 3 + 1] + mu_o[f * 3 + 1],
                   (c2 - mu_g[f * 3 + 2]) * gain[f * 3 + 2] + mu_o[f * 3 + 2], space, rgb);
    } else {
        double s[3];
        double cs[3] = {c0, c1, c2};
        for (int ch = 0; ch < 3; ++ch) {
            double lo = ranges[ch * 2], scale = bins / (ranges[ch * 2 + 1] - lo);
            s[ch] = hist_map(cs[ch], (f * 3 + ch) * bins, lo, scale, bins, p_g, left_g, nz,
                             nz_n[f * 3 + ch], right, left, p_nz);
        }
        from_space(s[0], s[1], s[2], space, rgb);
    }
    unsigned char* px = out + ((fidx[f] * H + yy) * W + xx) * 3;
    for (int ch = 0; ch < 3; ++ch) {
        double cur = (double)px[ch];
        if (laplacian) delta_buf[ch * total + p] = (float)(rgb[ch] - cur);
        else px[ch] = (unsigned char)clamp255(floor(cur + a * (rgb[ch] - cur) + 0.5));
    }
}
"""

SOURCES = {"blend_sample": SAMPLE_SOURCE, "blend_composite": COMPOSITE_SOURCE}
_BLOCK = 256


@functools.lru_cache(maxsize=1)
def _modules() -> tuple[Any, Any]:
    import cupy

    sample = cupy.RawModule(code=SAMPLE_SOURCE, options=("--std=c++14",))
    composite = cupy.RawModule(code=COMPOSITE_SOURCE, options=("--std=c++14",))
    return sample, composite


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """``None`` when the cupy kernels can run here, else why not (for the fallback warning)."""
    try:
        import cupy
    except Exception as exc:
        return f"cannot import cupy: {exc}"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        sample, composite = _modules()
        sample.get_function("blend_sample")
        composite.get_function("blend_composite")
    except Exception as exc:
        return f"cupy cannot run the blend kernels: {type(exc).__name__}: {exc}"
    return None


def _pyramid_write(out: torch.Tensor, plan: Plan, layer: np.ndarray, offsets: np.ndarray,
                   alpha_buf: torch.Tensor, delta_buf: torch.Tensor) -> None:
    from reenact.blend.reference import _pyramid_delta

    for f in layer:
        x0, y0, x1, y1 = (int(v) for v in plan.roi[f])
        h, w = y1 - y0 + 1, x1 - x0 + 1
        base = int(offsets[f])
        alpha = alpha_buf[base : base + h * w].view(h, w)
        delta = delta_buf[:, base : base + h * w].reshape(3, h, w)
        res = _pyramid_delta(delta, alpha, int(plan.levels[f])) if plan.levels[f] > 1 else delta * alpha[None]
        t = int(plan.frame_index[f])
        cur = out[t, y0 : y1 + 1, x0 : x1 + 1].permute(2, 0, 1).to(torch.float32)
        new = torch.floor(cur + res + 0.5).clamp(0.0, 255.0)
        new = torch.where((alpha > 0)[None], new, cur).to(torch.uint8)
        out[t, y0 : y1 + 1, x0 : x1 + 1] = new.permute(1, 2, 0)


def paste_faces_cupy(
    frames: torch.Tensor,
    faces: torch.Tensor,
    masks: torch.Tensor,
    plan: Plan,
    settings: BlendSettings,
) -> torch.Tensor:
    """cupy paste-back of CUDA tensors (shared via DLPack); inputs already checked and planned.

    Conventions: frames uint8 [T,H,W,3]; faces float [F,3,R,R] in [-1,1]; masks float
    [K,R,R]; all on one CUDA device. Returns a new uint8 [T,H,W,3] on that device.
    """
    import cupy

    from reenact.blend.numba_kernels import _layers

    device = frames.device
    out = frames.contiguous().clone()
    pasted = np.flatnonzero(plan.status == PASTE)
    if pasted.size == 0:
        return out
    sample_mod, composite_mod = _modules()
    nfaces = faces.shape[0]
    size = int(faces.shape[2])
    H, W = int(frames.shape[1]), int(frames.shape[2])
    match = MATCH_CODES[settings.colour_match]
    space = SPACE_CODES[settings.colour_space]
    bins = int(settings.histogram_bins)
    nb = bins if match == 2 else 1
    roi = plan.roi
    areas = np.zeros(nfaces, dtype=np.int64)
    areas[pasted] = (roi[pasted, 2] - roi[pasted, 0] + 1) * (roi[pasted, 3] - roi[pasted, 1] + 1)
    offsets = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype(np.int64)
    total = int(areas.sum())

    with torch.cuda.device(device), cupy.cuda.Device(device.index or 0):
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        with stream:
            frames_c = frames.contiguous()
            faces_c = faces.detach().to(torch.float32).contiguous()
            masks_c = masks.detach().to(torch.float32).contiguous()
            alpha_t = torch.empty(total, dtype=torch.float32, device=device)
            gen_t = torch.empty(3, total, dtype=torch.float32, device=device)
            delta_t = torch.zeros(3, total if settings.laplacian else 1, dtype=torch.float32, device=device)
            fr, fa, ma = (cupy.from_dlpack(t) for t in (frames_c, faces_c, masks_c))
            oc, al, ge, de = (cupy.from_dlpack(t) for t in (out, alpha_t, gen_t, delta_t))
            M = cupy.asarray(plan.M.reshape(nfaces, 6))
            roi_c = cupy.asarray(roi)
            fidx = cupy.asarray(plan.frame_index)
            mask_of = cupy.asarray(plan.mask_of)
            offs = cupy.asarray(offsets)
            ranges = cupy.asarray(np.asarray(SPACE_RANGES[settings.colour_space], dtype=np.float64).reshape(-1))
            sums = cupy.zeros((nfaces, 13), dtype=cupy.float64)
            hist = cupy.zeros((nfaces, 6, nb), dtype=cupy.float64)
            plist = cupy.asarray(pasted.astype(np.int64))
            grid_x = int((int(areas.max()) + _BLOCK - 1) // _BLOCK)
            sample_mod.get_function("blend_sample")(
                (grid_x, int(pasted.size)), (_BLOCK,),
                (fr, fa, ma, M, roi_c, fidx, mask_of, offs, plist, np.int32(H), np.int32(W),
                 np.int32(size), al, ge, np.int64(total), sums, hist, np.int32(match),
                 np.int32(space), np.int32(bins), ranges),
                shared_mem=(6 * bins * 4) if match == 2 else 0,
            )
            mu_g = cupy.zeros((nfaces, 3))
            mu_o = cupy.zeros((nfaces, 3))
            gain = cupy.ones((nfaces, 3))
            do_match = cupy.zeros(nfaces, dtype=cupy.int32)
            p_g, left_g, nz, right, left, p_nz = (cupy.zeros((nfaces, 3, nb)) for _ in range(6))
            nz_n = cupy.zeros((nfaces, 3), dtype=cupy.int32)
            n3 = int(pasted.size) * 3
            sample_mod.get_function("blend_params")(
                ((n3 + 127) // 128,), (128,),
                (plist, np.int32(pasted.size), sums, hist, np.int32(match), np.int32(bins),
                 np.float64(settings.max_gain), mu_g, mu_o, gain, do_match, p_g, left_g, nz,
                 nz_n, right, left, p_nz),
            )
            composite = composite_mod.get_function("blend_composite")
            for layer in _layers(plan, pasted):
                lgrid = int((int(areas[layer].max()) + _BLOCK - 1) // _BLOCK)
                composite(
                    (lgrid, int(layer.size)), (_BLOCK,),
                    (oc, roi_c, fidx, offs, cupy.asarray(layer), np.int32(H), np.int32(W), al, ge, de,
                     np.int64(total), mu_g, mu_o, gain, do_match, p_g, left_g, nz, nz_n, right,
                     left, p_nz, np.int32(match), np.int32(space), np.int32(bins), ranges,
                     np.int32(1 if settings.laplacian else 0)),
                )
                if settings.laplacian:
                    _pyramid_write(out, plan, layer, offsets, alpha_t, delta_t)
    return out
