"""The CUDA kernels: compiled to PTX with nvcc where it exists; run against the torch
reference on a GPU (``gpu`` marker: skipped without one, see bench/gpu_check.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from blend_cases import SETTINGS, placing, random_case, smooth_faces, textured_frames

from reenact.blend import BlendSettings, available_impls, paste_faces
from reenact.blend.cupy_kernels import SOURCES


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found is None and Path("/usr/local/cuda/bin/nvcc").exists():
        found = "/usr/local/cuda/bin/nvcc"
    return found


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_cuda_source_compiles_to_ptx(name: str, tmp_path: Path) -> None:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not on PATH: cannot compile the CUDA sources here")
    src = tmp_path / f"{name}.cu"
    src.write_text(SOURCES[name])
    ptx = tmp_path / f"{name}.ptx"
    run = subprocess.run(
        [nvcc, "--ptx", "-arch=sm_80", "-std=c++14", "-Werror=all-warnings", "-o", str(ptx), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    text = ptx.read_text()
    kernels = {"blend_sample": ["blend_sample", "blend_params"], "blend_composite": ["blend_composite"]}[name]
    for kernel in kernels:
        assert f".entry {kernel}(" in text, f"{kernel} missing from the PTX"


@pytest.mark.gpu
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.colour_match}-{s.colour_space}-lap{int(s.laplacian)}")
def test_cupy_matches_torch_reference_on_gpu(settings: BlendSettings) -> None:
    assert "cupy" in available_impls("cuda"), "cupy kernels must work on a GPU machine (pip install cupy-cuda13x)"
    for seed in (0, 1):
        frames, faces, frame_index, M = (t.cuda() for t in random_case(seed))
        before = frames.clone()
        ref, _ = paste_faces(frames, faces, frame_index, M, settings=settings, impl="torch")
        got, stats = paste_faces(frames, faces, frame_index, M, settings=settings, impl="cupy")
        assert stats.impl == "cupy" and got.device == frames.device
        assert torch.equal(frames, before)
        assert int((ref.int() - got.int()).abs().max()) <= 1
        cpu, _ = paste_faces(*(t.cpu() for t in (frames, faces, frame_index, M)), settings=settings, impl="numba")
        assert int((cpu.int() - got.cpu().int()).abs().max()) <= 1


@pytest.mark.gpu
def test_cupy_is_auto_on_gpu_and_handles_skip_and_nan() -> None:
    g = torch.Generator().manual_seed(3)
    frames = textured_frames(2, 64, 80, g).cuda()
    faces = smooth_faces(3, 32, g)
    faces[2, 0, 5, 5] = float("nan")
    M = torch.stack([placing(32, 30.0, 0.0, 30.0, 30.0), placing(32, 30.0, 0.0, 900.0, 30.0), placing(32, 30.0, 0.0, 50.0, 30.0)])
    fi = torch.tensor([0, 1, 0])
    out, stats = paste_faces(frames, faces.cuda(), fi.cuda(), M.cuda())
    assert stats.impl == "cupy"
    assert (stats.pasted, stats.skipped, stats.refused) == (1, 1, 1)
    assert torch.equal(out[1], frames[1])


def test_cupy_reports_why_it_cannot_run_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the GPU tests cover the cupy path")
    from reenact.blend import cupy_kernels

    reason = cupy_kernels.unavailable_reason()
    assert reason is not None and ("cupy" in reason or "CUDA" in reason)
    assert available_impls("cuda") == ["torch"], "auto must fall back to the torch reference"
