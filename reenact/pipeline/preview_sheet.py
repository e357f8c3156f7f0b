"""The preview sheet (``--preview``): kept frames before | after, labelled for a reader.

Each row is one kept frame: a strip that names the frame number and each face (``face K``
is track K-1, as in the web app's table, with the rung that made its output face), then the
frame before and after with every face's box drawn and labelled on both sides.

Conventions: kept frames uint8 ``[H,W,3]`` RGB torch tensors on the CPU; boxes float
``(x0, y0, x1, y1)`` in pixels of the frame they belong to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reenact.errors import ShapeError
from reenact.io.atomic import atomic_path
from reenact.summary import RUNG_WORDS

__all__ = ["face_labels", "write_sheet"]

#: a face kept with a preview frame: (track id, box [4] float, failure reason or None)
KeptFace = tuple[int, np.ndarray, "str | None"]

BOX = (0, 255, 120)
STRIP = (24, 28, 38)


def face_labels(kept_faces: Mapping[int, list[KeptFace]], tracks: Mapping[int, Any],
                ladder: bool) -> dict[int, list[dict[str, Any]]]:
    """Per kept frame, each face: ``{"face": K or None, "track": id, "box": [x0,y0,x1,y1], "rung": words}``.

    ``tracks``: the run's track reports (their ``privacy_frames`` name the rung of each
    frame when ``ladder``); without a ladder (``reenact``) a face is replaced, or blurred
    when it could not be replaced. ``face`` is the track id + 1 (None: an untracked detection).
    """
    out: dict[int, list[dict[str, Any]]] = {}
    for index, faces in sorted(kept_faces.items()):
        rows = []
        for track_id, box, failed in sorted(faces, key=lambda f: (f[0] < 0, f[0])):
            if track_id < 0:
                rung = "redacted (untracked detection)"
            elif ladder:
                found = [r for r in getattr(tracks.get(track_id), "privacy_frames", []) if r[0] == index]
                rung = RUNG_WORDS.get(found[-1][1], str(found[-1][1]).replace("_", " ")) if found else "redacted"
            else:
                rung = "replaced" if failed is None else f"blurred ({failed})"
            rows.append({"face": track_id + 1 if track_id >= 0 else None, "track": track_id,
                         "box": [round(float(v), 1) for v in np.asarray(box).reshape(-1)[:4]], "rung": rung})
        out[index] = rows
    return out


def _name(face: dict[str, Any]) -> str:
    return f"face {face['face']}" if face["face"] is not None else "untracked"


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _draw_boxes(image: Any, faces: list[dict[str, Any]], font: Any, line: int) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        draw.rectangle((x0, y0, x1, y1), outline=BOX, width=line)
        label = _name(face)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        ty = max(0.0, y0 - (bottom - top) - 2 * line)
        draw.rectangle((x0, ty, x0 + right - left + 2 * line, ty + bottom - top + line), fill=(0, 0, 0))
        draw.text((x0 + line, ty - top), label, fill=BOX, font=font)


def write_sheet(kept: Mapping[int, tuple[torch.Tensor, torch.Tensor]], labels: Mapping[int, list[dict[str, Any]]],
                path: Path, mode: int = 0o644, max_side: int = 1600) -> None:
    """Write the labelled sheet to ``path`` (PNG, atomically, with ``mode``); nothing when ``kept`` is empty."""
    from PIL import Image, ImageDraw

    if not kept:
        return
    rows = []
    for index, (before, after) in sorted(kept.items()):
        if before.ndim != 3 or before.shape[2] != 3 or before.shape != after.shape or before.dtype != torch.uint8:
            raise ShapeError(f"kept frames must be uint8 [H,W,3] pairs, got {tuple(before.shape)}, {tuple(after.shape)}")
        height, width = before.shape[:2]
        faces = labels.get(index, [])
        size = max(11, round(height / 28))
        font, line = _font(size), max(1, round(height / 200))
        pair = Image.new("RGB", (2 * width, height))
        for k, frame in enumerate((before, after)):
            image = Image.fromarray(frame.numpy())
            _draw_boxes(image, faces, font, line)
            pair.paste(image, (k * width, 0))
        words = f"frame {index}: " + ("; ".join(f"{_name(f)} {f['rung']}" for f in faces) if faces else "no faces")
        strip = Image.new("RGB", (2 * width, size * 2), STRIP)
        draw = ImageDraw.Draw(strip)
        draw.text((line * 4, size // 2), words, fill=(255, 255, 255), font=font)
        draw.text((2 * width - line * 4, size // 2), "before | after", fill=(170, 176, 190), font=font, anchor="ra")
        row = Image.new("RGB", (2 * width, height + strip.height))
        row.paste(strip, (0, 0))
        row.paste(pair, (0, strip.height))
        rows.append(row)
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)))
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    scale = min(1.0, max_side / max(sheet.width, sheet.height))
    if scale < 1:
        sheet = sheet.resize((max(1, math.floor(sheet.width * scale)), max(1, math.floor(sheet.height * scale))),
                             Image.Resampling.LANCZOS)
    with atomic_path(path, mode=mode) as tmp:
        sheet.save(tmp, format="PNG")
