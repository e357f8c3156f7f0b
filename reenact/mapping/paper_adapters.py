"""The paper's encoders behind the interfaces the pipeline and image tools call.

The pipeline hands the attribute encoder FFHQ-aligned crops in [-1, 1] at the generator's
resolution and asks the pack's identity model for codes from a frame and five points. The
authors' encoders take RGB in [0, 1], so these adapters convert and align:

* :class:`PaperIdentityCode`: the VGGFace2 ResNet-50 identity encoder
  (:class:`reenact.models.vggface2.PaperIdentityEncoder`, the authors' crop
  ``[int(0.1 R) : int(0.9 R)]`` with R = 256) applied to the FFHQ-aligned R x R crop of a face,
  as the authors' inference applies it to their dlib-68 FFHQ-aligned 256 images. It implements
  :class:`reenact.faces.identity.IdentityEncoder`, so it serves as a pack's ``identity``.
* :class:`PaperAttributeAdapter`: the Keras InceptionV3 attribute encoder on the same crops.

Their outputs feed :class:`reenact.models.mapper.Mapper` (the converted
``LatentMappingNetwork``) exactly as the authors' ``G.call`` feeds theirs: identity first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reenact.errors import ShapeError
from reenact.faces.align import ffhq_template, similarity_from_points, warp_to_crop
from reenact.models.inception_attr import PaperAttributeEncoder
from reenact.models.vggface2 import PaperIdentityEncoder

__all__ = ["PAPER_IDENTITY_NAME", "PAPER_ID_THRESHOLD", "PaperIdentityCode", "PaperAttributeAdapter"]

PAPER_IDENTITY_NAME = "vggface2-paper"
#: Cosine similarity of two VGGFace2 codes at or above which they count as one person. NOT
#: calibrated: the published VGGFace2 weights are not available here (only synthetic ones);
#: override with ``models.match_threshold`` once measured (bench/calibrate_privacy.py).
PAPER_ID_THRESHOLD = 0.5


def _check_unit_crops(crops: torch.Tensor, size: int, what: str) -> None:
    if not isinstance(crops, torch.Tensor) or crops.ndim != 4 or tuple(crops.shape[1:]) != (3, size, size) \
            or not crops.is_floating_point():
        raise ShapeError(
            f"{what}: crops must be float [F,3,{size},{size}] in [-1,1] (FFHQ-aligned), got "
            f"{getattr(crops, 'dtype', type(crops))} {tuple(getattr(crops, 'shape', ()))}"
        )


class PaperIdentityCode:
    """The mapper's identity code: VGGFace2 on the FFHQ-aligned ``resolution`` crop of a face.

    ``name`` is ``vggface2-paper``, ``dim`` 512, ``crop_size`` the generator resolution.
    """

    name = PAPER_IDENTITY_NAME
    dim = 512

    def __init__(self, encoder: PaperIdentityEncoder, device: torch.device | str = "cpu") -> None:
        self.encoder = encoder.to(device).eval().requires_grad_(False)
        self.crop_size = encoder.resolution
        self.device = torch.device(device)

    def template(self) -> torch.Tensor:
        """FFHQ five-point template at ``crop_size`` (the frame the generator draws faces in)."""
        return ffhq_template(self.crop_size)

    @torch.no_grad()
    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        """Embed FFHQ-aligned crops.

        Conventions:
            crops float [F,3,S,S] RGB in [-1,1] with S = crop_size; returns float32 [F,512]
            unit-length rows on the crops' device
        """
        _check_unit_crops(crops, self.crop_size, "paper identity encoder")
        if crops.shape[0] == 0:
            return torch.zeros((0, self.dim), device=crops.device)
        x = ((crops.float() + 1.0) * 0.5).to(self.device)
        return self.encoder(x).to(crops.device)

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """FFHQ-align each face at ``crop_size`` and embed it.

        Conventions:
            frames uint8 [T,H,W,3] RGB; frame_index long [F]; points float [F,5,2] frame
            pixels (ArcFace order); returns float32 [F,512] unit-length rows
        """
        if not isinstance(points, torch.Tensor) or points.ndim != 3 or tuple(points.shape[1:]) != (5, 2):
            raise ShapeError(f"points must be float [F,5,2], got {tuple(getattr(points, 'shape', ()))}")
        if points.shape[0] == 0:
            return torch.zeros((0, self.dim), device=frames.device)
        M = similarity_from_points(points.float().to(frames.device), self.template().to(frames.device))
        crops = warp_to_crop(frames, torch.as_tensor(frame_index, device=frames.device), M, self.crop_size)
        return self.embed_aligned(crops)


@dataclass(frozen=True)
class _AttrConfig:
    backbone: str = "keras-inceptionv3 (paper)"
    out_dim: int = 2048


class PaperAttributeAdapter(nn.Module):
    """The authors' attribute encoder on the pipeline's crops.

    Conventions: input float ``[F,3,R,R]`` RGB in [-1,1] (FFHQ-aligned); output float
    ``[F,2048]`` (pooled InceptionV3 features, the authors' ``[F,1,2048]`` without the axis).
    """

    def __init__(self, encoder: PaperAttributeEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = _AttrConfig()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if not isinstance(crops, torch.Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
            raise ShapeError(f"paper attribute encoder: crops must be [F,3,R,R], got {tuple(crops.shape)}")
        out: torch.Tensor = self.encoder((crops.float() + 1.0) * 0.5)
        return out
