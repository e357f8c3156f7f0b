"""Blending generated faces back into their frames: soft masks, colour match, feathering.

One operation, :func:`paste_faces`, in three implementations behind ``impl=``: a torch
reference (:mod:`.reference`, defines the result, runs on any device), numba CPU kernels
(:mod:`.numba_kernels`) and cupy CUDA kernels on the same device tensors
(:mod:`.cupy_kernels`). ``impl`` (or ``BlendSettings.impl``) chooses; ``"auto"`` picks
cupy for CUDA tensors when cupy works (warning once when it does not) and the torch
reference everywhere else.

Why auto does not pick numba on CPU: the numba kernels are about 2 ms a face faster than
the torch reference (1.0-3.0 against 2.9-5.6 ms a face for 64-1024 px faces on 720p frames,
2 threads), but loading numba and its LLVM runtime keeps about 100 MiB more resident (peak
memory of ``deidentify`` on 40 frames of the 720p fixture clip: 1083 MiB with numba, 982
MiB with the torch reference, same wall time). Ask for ``impl="numba"``
(``--set blend.impl=numba``) where blending many large faces dominates the run.
"""

from __future__ import annotations

import functools
import logging

import torch

from reenact.blend.common import IMPLS, BlendSettings, BlendStats, Impl, check_inputs, make_plan
from reenact.blend.masks import default_template, face_mask
from reenact.errors import ConfigError, ShapeError
from reenact.shapes import check_shape

__all__ = ["BlendSettings", "BlendStats", "default_template", "face_mask", "paste_faces", "available_impls"]

log = logging.getLogger(__name__)

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


@functools.lru_cache(maxsize=1)
def _numba_problem() -> str | None:
    try:
        from reenact.blend import numba_kernels  # noqa: F401
    except Exception as exc:  # any import failure means: not usable here
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=1)
def _cupy_problem() -> str | None:
    from reenact.blend import cupy_kernels

    return cupy_kernels.unavailable_reason()


def available_impls(device: torch.device | str = "cpu") -> list[str]:
    """The implementations that can run on tensors of ``device`` here, fastest first."""
    device = torch.device(device)
    found = []
    if device.type == "cuda" and _cupy_problem() is None:
        found.append("cupy")
    if device.type == "cpu" and _numba_problem() is None:
        found.append("numba")
    found.append("torch")
    return found


def _resolve(impl: str, device: torch.device) -> str:
    if impl not in IMPLS:
        raise ConfigError(f"impl={impl!r} is not one of {list(IMPLS)}")
    if impl == "torch":
        return impl
    if impl == "numba":
        if device.type != "cpu":
            raise ShapeError(f"impl='numba' runs on CPU tensors, got tensors on {device}; use 'cupy' or 'auto'")
        problem = _numba_problem()
        if problem is not None:
            raise ConfigError(f"impl='numba' is not usable here ({problem}); install numba or use impl='torch'")
        return impl
    if impl == "cupy":
        if device.type != "cuda":
            raise ShapeError(f"impl='cupy' runs on CUDA tensors, got tensors on {device}; use 'numba' or 'auto'")
        problem = _cupy_problem()
        if problem is not None:
            raise ConfigError(f"impl='cupy' is not usable here ({problem}); install cupy (extra 'gpu') or use impl='torch'")
        return impl
    if device.type == "cuda":
        problem = _cupy_problem()
        if problem is None:
            return "cupy"
        _warn_once("cupy", f"blend: cupy kernels unavailable ({problem}); using the torch reference on {device}")
        return "torch"
    if device.type != "cpu":
        _warn_once(device.type, f"blend: no kernel for {device.type} tensors; using the torch reference")
    return "torch"


@functools.lru_cache(maxsize=8)
def _default_mask(size: int, settings: BlendSettings, device: str) -> torch.Tensor:
    """The template mask for crops of ``size`` (built once per size, settings and device)."""
    return face_mask(size, settings).to(device)


def paste_faces(
    frames: torch.Tensor,
    faces: torch.Tensor,
    frame_index: torch.Tensor,
    M: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    settings: BlendSettings = BlendSettings(),
    impl: Impl | str | None = None,
) -> tuple[torch.Tensor, BlendStats]:
    """Paste generated faces back into their frames.

    Each face ``f`` goes into frame ``frame_index[f]``; faces sharing a frame are composited
    in the order given. Only each face's ROI (the warped bounding box of its mask, clipped
    to the frame) is read and written; pixels where the warped mask is 0 are returned
    bit-identical. The face is colour-matched to the original frame inside the mask
    (``settings.colour_match``) and optionally Laplacian-blended. Faces entirely outside
    their frame are skipped and faces containing NaN/inf refused (not written); both are
    counted in the returned :class:`BlendStats`.

    Conventions:
        frames: uint8 ``[T,H,W,3]`` RGB (left untouched; a new tensor is returned).
        faces: float ``[F,3,R,R]`` in [-1,1] (the generator's output).
        frame_index: int64 ``[F]``, values in ``[0, T)``.
        M: float ``[F,2,3]``, maps FRAME pixels (x, y) to CROP pixels (pixel centres at
            integer coordinates, as in ``cv2.warpAffine``/kornia); must be invertible.
        mask: float ``[R,R]`` or ``[F,R,R]`` in [0,1] in crop pixels; ``None`` builds
            :func:`face_mask` ``(R, settings)`` from the aligned template.
        impl: the implementation (module docstring); ``None`` takes ``settings.impl``.
        Returns uint8 ``[T,H,W,3]`` on the frames' device, and the statistics.

    Raises:
        ShapeError: shapes/dtypes/devices that do not fit together (the message names
            them), a singular or non-finite ``M``, a NaN face with ``on_bad_face="raise"``.
        ConfigError: an unknown or unusable ``impl``.
    """
    if not isinstance(settings, BlendSettings):
        raise ConfigError(f"settings must be a BlendSettings, got {type(settings).__name__}")
    if mask is None:
        check_shape(faces, ["F", 3, "R", "R"], "faces", dtype="float", what="in [-1,1]")
        mask = _default_mask(int(faces.shape[-1]), settings, str(faces.device))
    check_inputs(frames, faces, frame_index, M, mask)
    chosen = _resolve(settings.impl if impl is None else impl, frames.device)
    plan = make_plan(frames, faces, frame_index, M, mask, settings)
    masks = mask if mask.dim() == 3 else mask[None]
    if chosen == "numba":
        from reenact.blend.numba_kernels import paste_faces_numba

        out = paste_faces_numba(frames, faces, masks, plan, settings)
    elif chosen == "cupy":
        from reenact.blend.cupy_kernels import paste_faces_cupy

        out = paste_faces_cupy(frames, faces, masks, plan, settings)
    else:
        from reenact.blend.reference import paste_faces_torch

        out = paste_faces_torch(frames, faces, masks, plan, settings)
    return out, plan.stats(chosen)
