"""Benchmark of the paste-back: numba against the torch reference, and 1080p against 4K.

Everything compared is measured in this one run (best of ``--reps``, the two sides of each ratio measured alternately after a warm-up, so
the numba JIT compile and first-touch costs are excluded). With a CUDA GPU and cupy, the
cupy kernels are measured against the torch reference on the GPU too.

    python bench/blend.py [--reps 7] [--crop 256] [--face-px 240]

Goals (DESIGN.md format, one line each, at the end):
    numba >= 3x faster than torch on 1080p with 1 face and with 8 faces;
    the same 8 faces on a 4K frame take <= 1.3x the time of a 1080p frame (work follows
    the faces, not the frame).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reenact.blend import BlendSettings, paste_faces  # noqa: E402
from testing.goals import goal  # noqa: E402


def _faces(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=g) * 2.0 - 1.0
    faces = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    return (faces + (torch.rand(n, 3, size, size, generator=g) - 0.5) * 0.1).clamp(-1.0, 1.0)


def _frame(height: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 9, 16, generator=g) * 255.0
    smooth = torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear", align_corners=False)
    return smooth.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _transforms(n: int, size: int, face_px: float) -> torch.Tensor:
    """n faces spread over the top-left 1920x1080 area (so the same faces fit a 4K frame)."""
    mats = []
    for i in range(n):
        cx = 200.0 + (i % 4) * 450.0
        cy = 260.0 + (i // 4) * 520.0
        angle = 0.15 * math.sin(i)
        scale = size / face_px
        c, s = math.cos(angle) * scale, math.sin(angle) * scale
        centre = (size - 1) / 2.0
        mats.append([[c, -s, centre - (c * cx - s * cy)], [s, c, centre - (s * cx + c * cy)]])
    return torch.tensor(mats, dtype=torch.float32)


def _best_pair(a: Callable[[], object], b: Callable[[], object], reps: int, device: str) -> tuple[float, float]:
    """Best-of-``reps`` times of ``a`` and ``b``, measured alternately after a warm-up so
    that both see the same machine load (this machine may be shared)."""
    a()  # warm-up: JIT compile, caches, allocator
    b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for fn, bucket in ((a, times[0]), (b, times[1])):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            bucket.append(time.perf_counter() - t0)
    return min(times[0]), min(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--crop", type=int, default=256, help="generated face size R")
    parser.add_argument("--face-px", type=float, default=400.0, help="width of each face crop in frame pixels (the face itself is about half)")
    args = parser.parse_args()
    settings = BlendSettings()
    size = args.crop
    print(f"blend benchmark: crop {size}, {args.face_px:.0f} px per crop in the frame, settings {settings}")
    print(f"torch threads {torch.get_num_threads()}, best of {args.reps}; load average at start {os.getloadavg()[0]:.1f}")

    def runner(frames: torch.Tensor, n: int, impl: str, device: str = "cpu") -> Callable[[], object]:
        faces = _faces(n, size, 1).to(device)
        M = _transforms(n, size, args.face_px).to(device)
        fi = torch.zeros(n, dtype=torch.int64, device=device)
        frames = frames.to(device)
        return lambda: paste_faces(frames, faces, fi, M, settings=settings, impl=impl)

    hd = _frame(1080, 1920, 0)
    uhd = _frame(2160, 3840, 0)
    results: dict[str, float] = {}
    for n in (1, 8):
        t_torch, t_numba = _best_pair(runner(hd, n, "torch"), runner(hd, n, "numba"), args.reps, "cpu")
        results[f"speedup_{n}"] = t_torch / t_numba
        print(f"1080p, {n} face(s): torch {t_torch * 1e3:8.1f} ms  numba {t_numba * 1e3:8.1f} ms  ratio {t_torch / t_numba:5.2f}x")
    t_hd, t_uhd = _best_pair(runner(hd, 8, "numba"), runner(uhd, 8, "numba"), args.reps, "cpu")
    results["res_ratio"] = t_uhd / t_hd
    print(f"8 faces, numba: 1080p {t_hd * 1e3:8.1f} ms  4K {t_uhd * 1e3:8.1f} ms  ratio {t_uhd / t_hd:5.2f}")
    t_hd_t, t_uhd_t = _best_pair(runner(hd, 8, "torch"), runner(uhd, 8, "torch"), max(3, args.reps // 2), "cpu")
    print(f"8 faces, torch: 1080p {t_hd_t * 1e3:8.1f} ms  4K {t_uhd_t * 1e3:8.1f} ms  ratio {t_uhd_t / t_hd_t:5.2f}")

    gpu_goals: list[tuple[str, float, str, float]] = []
    if torch.cuda.is_available():
        from reenact.blend import available_impls

        if "cupy" in available_impls("cuda"):
            for n in (1, 8):
                t_ref, t_cupy = _best_pair(runner(hd, n, "torch", "cuda"), runner(hd, n, "cupy", "cuda"), args.reps, "cuda")
                print(f"GPU 1080p, {n} face(s): torch {t_ref * 1e3:8.2f} ms  cupy {t_cupy * 1e3:8.2f} ms  ratio {t_ref / t_cupy:5.2f}x")
                gpu_goals.append((f"blend_cupy_vs_torch_gpu_1080p_{n}face", t_ref / t_cupy, ">=", 3.0))
            c_hd, c_uhd = _best_pair(runner(hd, 8, "cupy", "cuda"), runner(uhd, 8, "cupy", "cuda"), args.reps, "cuda")
            print(f"GPU 8 faces, cupy: 1080p {c_hd * 1e3:8.2f} ms  4K {c_uhd * 1e3:8.2f} ms  ratio {c_uhd / c_hd:5.2f}")
            gpu_goals.append(("blend_cupy_4k_vs_1080p_time_ratio", c_uhd / c_hd, "<=", 1.3))
        else:
            print("CUDA present but cupy kernels unavailable: GPU numbers not measured")

    print(f"load average at end {os.getloadavg()[0]:.1f} (timings on a shared machine are noisy; ratios are best-of-N)")
    goals = [
        ("blend_numba_vs_torch_1080p_1face", results["speedup_1"], ">=", 3.0),
        ("blend_numba_vs_torch_1080p_8faces", results["speedup_8"], ">=", 3.0),
        ("blend_4k_vs_1080p_time_ratio", results["res_ratio"], "<=", 1.3),
        *gpu_goals,
    ]
    for name, value, op, target in goals:
        print(goal(name, value, op, target, ".2f"))


if __name__ == "__main__":
    main()
