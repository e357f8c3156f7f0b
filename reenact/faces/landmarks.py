"""68-point facial landmarks with a PFLD ONNX model, from face boxes.

The model takes ``Nx3x112x112`` RGB/255 face crops and returns ``[N,136]`` (x, y) in crop
units (0..1). :class:`PfldLandmarks` cuts a square crop around each detection box, runs
the model with onnxruntime on the CPU and maps the points back to frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import roi_align

from reenact.errors import ModelError, ShapeError

CROP_SIZE = 112


@dataclass(frozen=True)
class LandmarkSettings:
    """How the face crop is cut from a detection box.

    ``crop_scale``: side of the square crop as a multiple of the box's longer side;
    ``shift_y``: vertical shift of the crop centre, as a fraction of the box height
    (detector boxes sit higher on the face than the crops PFLD was trained on).
    """

    crop_scale: float = 1.1
    shift_y: float = 0.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 0.5 <= self.crop_scale <= 3.0:
            raise ValueError(f"crop_scale must be in [0.5, 3], got {self.crop_scale}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def check_landmark_inputs(frames: Any, frame_index: Any, boxes: Any) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Check and convert the arguments every landmark model's ``detect`` takes.

    Conventions: frames uint8 ``[T,H,W,3]``; frame_index int ``[F]`` within ``0..T-1``;
    boxes ``[F,4]`` (x1, y1, x2, y2). Returns them as a tensor, int64 and float64 arrays.
    """
    fr = torch.as_tensor(frames)
    if fr.dtype != torch.uint8 or fr.ndim != 4 or fr.shape[-1] != 3:
        raise ShapeError(f"frames must be uint8 [T,H,W,3], got {tuple(fr.shape)} {fr.dtype}")
    idx = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape != (idx.shape[0], 4):
        raise ShapeError(f"boxes must be [F,4] with F={idx.shape[0]}, got {b.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= fr.shape[0]):
        raise ShapeError(f"frame_index out of range 0..{fr.shape[0] - 1}: {idx}")
    return fr, idx, b


def square_crop_boxes(boxes: np.ndarray, settings: LandmarkSettings) -> np.ndarray:
    """Square crop boxes ``[F,4]`` (x1,y1,x2,y2 frame pixels) around detection ``boxes`` ``[F,4]``."""
    b = np.asarray(boxes, dtype=np.float64)
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2 + settings.shift_y * (b[:, 3] - b[:, 1])
    half = settings.crop_scale * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


class PfldLandmarks:
    """PFLD 68-point landmark model (iBUG 300-W order) on CPU onnxruntime."""

    def __init__(self, path: str | Path, settings: LandmarkSettings | None = None) -> None:
        self.path = Path(path)
        self.settings = settings or LandmarkSettings()
        if not self.path.is_file():
            raise ModelError(f"landmark model not found: {self.path}; pass the path of pfld.onnx")
        try:
            import onnxruntime as ort

            from reenact.faces.onnx_session import session_options

            self._session = ort.InferenceSession(
                str(self.path), sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load landmark model {self.path}: {exc}") from exc
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, CROP_SIZE, CROP_SIZE]:
            raise ModelError(
                f"{self.path} takes {[i.shape for i in inputs]}, expected one Nx3x112x112 input"
            )
        if outputs[0].shape[-1] != 136:
            raise ModelError(f"{self.path} outputs {outputs[0].shape}, expected [N,136]")
        self._input = inputs[0].name

    @property
    def name(self) -> str:
        """Model name for reports: ``pfld68:<file name>``."""
        return f"pfld68:{self.path.name}"

    def detect(self, frames: Any, frame_index: Any, boxes: Any) -> np.ndarray:
        """68 landmarks ``[F,68,2]`` for face ``f`` with box ``boxes[f]`` in ``frames[frame_index[f]]``.

        Conventions:
            ``frames`` uint8 ``[T,H,W,3]`` RGB; ``frame_index`` int ``[F]``; ``boxes`` ``[F,4]``
            (x1, y1, x2, y2) and the returned points are pixel (x, y) of the frame.
        """
        fr, idx, b = check_landmark_inputs(frames, frame_index, boxes)
        if idx.size == 0:
            return np.zeros((0, 68, 2))
        crops_px = square_crop_boxes(b, self.settings)
        out = np.zeros((idx.shape[0], 68, 2))
        bs = self.settings.batch_size
        for start in range(0, idx.shape[0], bs):
            sel = slice(start, start + bs)
            crops = torch.empty((len(idx[sel]), 3, CROP_SIZE, CROP_SIZE))
            for t in np.unique(idx[sel]):  # one frame in float at a time: bounded memory at 4K
                rows = np.nonzero(idx[sel] == t)[0]
                img = fr[int(t)].permute(2, 0, 1)[None].float().div(255.0)
                rois = torch.cat([torch.zeros(len(rows), 1),
                                  torch.as_tensor(crops_px[sel][rows], dtype=torch.float32)], 1)
                crops[torch.as_tensor(rows)] = roi_align(img, rois, output_size=CROP_SIZE, spatial_scale=1.0,
                                                         sampling_ratio=2, aligned=True)
            pred = self._session.run(None, {self._input: crops.numpy().astype(np.float32)})[0]
            pts = np.asarray(pred, dtype=np.float64).reshape(-1, 68, 2)
            side = (crops_px[sel, 2] - crops_px[sel, 0])[:, None]
            out[sel, :, 0] = crops_px[sel, 0][:, None] + pts[..., 0] * side
            out[sel, :, 1] = crops_px[sel, 1][:, None] + pts[..., 1] * side
        return out
