"""The frozen identity and landmark networks applied to generator frames (differentiably).

Generated images are FFHQ-aligned, so the identity network's input is one fixed similarity
crop (FFHQ 5-point template -> ArcFace template) and the landmark network's a fixed box.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.errors import ShapeError
from reenact.faces.align import arcface_template, ffhq_template, similarity_from_points, warp_affine
from reenact.models.onnx_modules import OnnxIdentity, OnnxLandmarks
from reenact.train.config import FaceModelsConfig


def box_affine(box: tuple[float, float, float, float], resolution: int, size: int) -> torch.Tensor:
    """``[1,2,3]`` affine taking the box (fractions of a ``resolution`` frame) to a ``size`` crop."""
    x0, y0, x1, y1 = (v * resolution for v in box)
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return torch.tensor([[[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]]], dtype=torch.float32)


class FaceCritics(nn.Module):
    """Identity embedding and landmarks of FFHQ-aligned generator frames.

    Conventions:
        input frames float ``[B,3,R,R]`` in [-1,1] (``R`` = ``resolution``);
        :meth:`embed` -> ``[B,D]`` unit-norm; :meth:`points` -> ``[B,68,2]`` pixel (x, y) of
        the landmark crop (``landmarks.input_size`` square).
    """

    m_id: torch.Tensor
    m_lm: torch.Tensor

    def __init__(self, config: FaceModelsConfig, resolution: int) -> None:
        super().__init__()
        self.config = config
        self.resolution = resolution
        self.identity = OnnxIdentity(config.identity)
        self.landmarks = OnnxLandmarks(config.landmarks)
        s_id = config.identity.input_size
        m_id = similarity_from_points(ffhq_template(resolution)[None], arcface_template(s_id))
        self.register_buffer("m_id", m_id, persistent=False)
        self.register_buffer("m_lm", box_affine(config.landmark_box, resolution, config.landmarks.input_size),
                             persistent=False)
        self.id_dim = self.identity.dim

    def _check(self, img: torch.Tensor) -> None:
        r = self.resolution
        if img.ndim != 4 or img.shape[1] != 3 or tuple(img.shape[-2:]) != (r, r):
            raise ShapeError(f"FaceCritics expects float [B,3,{r},{r}] in [-1,1], got {tuple(img.shape)}")

    def _crop(self, img: torch.Tensor, M: torch.Tensor, size: int) -> torch.Tensor:
        return warp_affine(img, M.expand(img.shape[0], 2, 3), (size, size), padding_mode="border")

    def identity_crop(self, img: torch.Tensor) -> torch.Tensor:
        """The ArcFace-aligned crop the identity network sees, ``[B,3,S,S]`` in [-1,1]."""
        self._check(img)
        return self._crop(img, self.m_id, self.config.identity.input_size)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.identity(self.identity_crop(img))
        return out

    def points(self, img: torch.Tensor) -> torch.Tensor:
        self._check(img)
        out: torch.Tensor = self.landmarks(self._crop(img, self.m_lm, self.config.landmarks.input_size))
        return out
