"""Reading still images (identity photos) as uint8 RGB, upright as the camera meant."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from reenact.errors import InputError


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file, apply its EXIF orientation, return it as RGB.

    Conventions:
        returns uint8 ``[H,W,3]`` RGB on the CPU (H, W after EXIF rotation); greyscale,
        palette, 16-bit and alpha images are converted to 8-bit RGB (alpha dropped).

    Raises InputError naming the file when it is missing, a folder, or not an image.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: image not found; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image file")
    try:
        with Image.open(p) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = upright.convert("RGB")
    except UnidentifiedImageError as exc:
        raise InputError(f"{p}: is not an image PIL can read (JPEG, PNG, WebP, ...)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{p}: image cannot be decoded ({exc}); the file is truncated or corrupt") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise InputError(f"{p}: decoded to an unusable array of shape {array.shape}")
    return torch.from_numpy(array.copy())
