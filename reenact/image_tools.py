"""The paper's inference tools on still images, using a loaded model pack.

* :func:`identity_attribute_grid`: every identity image with every attribute image.
* :func:`attribute_interpolation`: a fixed identity while the attribute code moves
  linearly through a sequence of attribute images.

Faces are found with the pack's detector (largest face per image), embedded with the
pack's identity model, FFHQ-aligned at the generator's resolution for the attribute
encoder, mapped to one w and rendered by the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reenact.errors import InputError, NoFaceError, ShapeError
from reenact.io.atomic import atomic_path
from reenact.io.images import read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; an :class:`InputError` when there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of images")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    return files


@dataclass
class EncodedFaces:
    """Faces of a list of images.

    Conventions: crops float ``[N,3,R,R]`` in [-1,1] (FFHQ-aligned, R = generator
    resolution); identity float ``[N,D]`` unit length; attributes float ``[N,A]``.
    """

    paths: list[Path]
    crops: torch.Tensor
    identity: torch.Tensor
    attributes: torch.Tensor


@torch.no_grad()
def encode_faces(paths: list[Path], pack: Any) -> EncodedFaces:
    """Detect, align and encode the largest face of each image (``NoFaceError`` names the file)."""
    from reenact.faces.align import align_faces, ffhq_template
    from reenact.faces.identity import identity_from_photo

    resolution = int(pack.generator.img_resolution)
    template = ffhq_template(resolution)
    crops, ids = [], []
    for path in paths:
        image = read_image(path)
        try:
            found = identity_from_photo(image, pack.detector, pack.identity)
        except NoFaceError as exc:
            raise NoFaceError(f"{path}: {exc}") from exc
        points = torch.from_numpy(found.detections.points[found.index_used : found.index_used + 1]).float()
        crop, _ = align_faces(image[None], torch.zeros(1, dtype=torch.long), points, template, resolution)
        crops.append(crop)
        ids.append(found.embedding[None])
    crop_t = torch.cat(crops).to(pack.device)
    attributes = pack.attribute_encoder(crop_t)
    return EncodedFaces(list(paths), crop_t, torch.cat(ids).to(pack.device), attributes)


@torch.no_grad()
def render(pack: Any, identity: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """``[N,D]`` identity ++ ``[N,A]`` attribute codes -> images float ``[N,3,R,R]`` in [-1,1]."""
    if identity.shape[0] != attributes.shape[0]:
        raise ShapeError(f"{identity.shape[0]} identity codes but {attributes.shape[0]} attribute codes")
    w = pack.mapper(torch.cat([identity, attributes], dim=1))
    G = pack.generator
    ws = w[:, None, :].expand(w.shape[0], int(G.num_ws), w.shape[1])
    out: torch.Tensor = G.synthesis(ws, noise_mode="const")
    return out


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float ``[N,3,H,W]`` in [-1,1] -> uint8 ``[N,H,W,3]``."""
    return ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


@torch.no_grad()
def identity_attribute_grid(id_paths: list[Path], attr_paths: list[Path], pack: Any) -> torch.Tensor:
    """One grid image: first row the attribute faces, first column the identity faces, cell
    (i, j) identity i with attributes j.

    Conventions: returns uint8 ``[(I+1)*R, (A+1)*R, 3]`` RGB.
    """
    ids = encode_faces(id_paths, pack)
    attrs = encode_faces(attr_paths, pack)
    r = ids.crops.shape[-1]
    n_i, n_a = len(id_paths), len(attr_paths)
    canvas = torch.full((3, (n_i + 1) * r, (n_a + 1) * r), 1.0, device=ids.crops.device)
    for j in range(n_a):
        canvas[:, :r, (j + 1) * r : (j + 2) * r] = attrs.crops[j]
    for i in range(n_i):
        canvas[:, (i + 1) * r : (i + 2) * r, :r] = ids.crops[i]
        row = render(pack, ids.identity[i : i + 1].expand(n_a, -1), attrs.attributes)
        for j in range(n_a):
            canvas[:, (i + 1) * r : (i + 2) * r, (j + 1) * r : (j + 2) * r] = row[j]
    return to_uint8(canvas[None])[0]


@torch.no_grad()
def attribute_interpolation(id_path: Path, attr_paths: list[Path], pack: Any, steps: int = 8) -> torch.Tensor:
    """Frames at a fixed identity while the attribute code moves linearly from each attribute
    image to the next (``steps`` frames per segment, the last image's code included).

    Conventions: returns uint8 ``[T,R,R,3]`` RGB, ``T = steps * (len(attr_paths) - 1) + 1``.
    """
    if len(attr_paths) < 2:
        raise InputError(f"interpolation needs at least two attribute images, got {len(attr_paths)}")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    identity = encode_faces([id_path], pack).identity
    codes = encode_faces(attr_paths, pack).attributes
    mixed = []
    for k in range(len(attr_paths) - 1):
        for s in range(steps):
            t = s / steps
            mixed.append((1 - t) * codes[k] + t * codes[k + 1])
    mixed.append(codes[-1])
    attributes = torch.stack(mixed)
    frames = render(pack, identity.expand(attributes.shape[0], -1), attributes)
    return to_uint8(frames)


#: output formats of the image tools: extension -> Pillow format
IMAGE_OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
#: save_frames also writes an animation
FRAMES_OUTPUT_FORMATS = {**IMAGE_OUTPUT_FORMATS, ".gif": "GIF"}


def image_format(path: str | Path, formats: dict[str, str] = IMAGE_OUTPUT_FORMATS) -> str:
    """The Pillow format of an output path, by its extension; InputError for one we do not write."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise InputError(f"{path}: cannot write {suffix or 'a file without extension'}; "
                         f"use {' or '.join(formats)}")
    return formats[suffix]


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write uint8 ``[H,W,3]`` as PNG/JPEG/WebP (by suffix), atomically."""
    from PIL import Image

    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ShapeError(f"save_image expects uint8 [H,W,3], got {image.dtype} {tuple(image.shape)}")
    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(image.numpy()).save(tmp, format=fmt)
    return path


def save_frames(frames: torch.Tensor, path: str | Path, duration_ms: int = 120) -> Path:
    """uint8 ``[T,H,W,3]`` as an animated GIF (``.gif``) or a horizontal strip (.png/.jpg/.webp)."""
    from PIL import Image

    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ShapeError(f"save_frames expects uint8 [T,H,W,3], got {frames.dtype} {tuple(frames.shape)}")
    path = Path(path)
    if image_format(path, FRAMES_OUTPUT_FORMATS) != "GIF":
        return save_image(torch.cat(list(frames), dim=1), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f.numpy()) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path
