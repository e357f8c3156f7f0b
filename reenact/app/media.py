"""Video helpers of the app: frame counts, cutting a short clip around one frame, images.

Conventions: frames uint8 ``[H,W,3]`` RGB numpy arrays as decoded by PyAV; boxes
``[N,4]`` float ``(x0, y0, x1, y1)`` in pixels of the frame they refer to.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np

from reenact.errors import ShapeError, VideoReadError


def cut_clip(source: Path, dest: Path, frame: int, before: int = 1, after: int = 1) -> tuple[np.ndarray, int]:
    """Write frames ``frame - before .. frame + after`` of ``source`` to ``dest`` (H.264, no audio).

    Returns the chosen frame as decoded from ``source`` (uint8 ``[H,W,3]`` RGB) and its
    index inside the clip. Raises :class:`VideoReadError` when the video cannot be decoded
    or has no frame ``frame``.
    """
    import av

    if frame < 0:
        raise VideoReadError(f"frame {frame} does not exist: frames are numbered from 0")
    first = max(0, frame - before)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(source)) as inp:
            stream = inp.streams.video[0]
            rate = stream.average_rate or Fraction(25)
            for i, decoded in enumerate(inp.decode(stream)):
                if i < first:
                    continue
                if i > frame + after:
                    break
                frames.append(decoded.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, IndexError) as exc:
        raise VideoReadError(f"{source.name} cannot be decoded as a video: {exc}") from exc
    if len(frames) <= frame - first:
        raise VideoReadError(f"{source.name} has no frame {frame} (it has {first + len(frames)} frames)")
    height, width = frames[0].shape[:2]
    with av.open(str(dest), "w") as out:
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        vout.options = {"crf": "10", "preset": "ultrafast"}
        for array in frames:
            array = array[: vout.height, : vout.width]
            for packet in vout.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return frames[frame - first], frame - first


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of the video ``path`` as uint8 ``[H,W,3]`` RGB."""
    import av

    with av.open(str(path)) as inp:
        for i, decoded in enumerate(inp.decode(video=0)):
            if i == index:
                return np.asarray(decoded.to_ndarray(format="rgb24"))
    raise VideoReadError(f"{path.name} has no frame {index}")


def outlined_png(frame: np.ndarray, boxes: np.ndarray, labels: list[str]) -> bytes:
    """PNG bytes of ``frame`` with each box drawn and labelled.

    Conventions: ``frame`` uint8 ``[H,W,3]`` RGB; ``boxes`` float ``[N,4]`` (x0, y0, x1, y1)
    in frame pixels; one label per box.
    """
    from PIL import Image, ImageDraw

    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ShapeError(f"frame must be uint8 [H,W,3], got {frame.dtype} {list(frame.shape)}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if len(boxes) else np.zeros((0, 4), np.float32)
    if len(labels) != len(boxes):
        raise ShapeError(f"one label per box: {len(labels)} labels for {len(boxes)} boxes")
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(frame.shape[:2]) / 200))
    for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels, strict=True):
        draw.rectangle((x0, y0, x1, y1), outline=(0, 255, 120), width=width)
        tx, ty = x0 + width, max(0.0, y0 - 14 - width)
        draw.rectangle((tx - 2, ty, tx + 8 * len(label) + 4, ty + 14), fill=(0, 0, 0))
        draw.text((tx, ty + 1), label, fill=(0, 255, 120))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
