"""Detection on every frame at two costs: a full pass on a cadence, a light pass between.

:class:`DetectionCadence` searches **every** frame for faces (deidentify's fail-closed rule),
but runs the detector's full pass only on

* the first frame it sees,
* the first frame of each shot (the tracker's cut rule: the histogram distance of
  :func:`reenact.faces.track.frame_histograms` above ``cut_threshold``),
* and every frame ``full_every`` frames after the last full pass;

the frames between get a light pass, the same model on an input ``light_scale`` times as
large on each side (about ``light_scale**2`` of the cost).

A face of the previous frame that the light pass does not find again (no light box overlaps
it by ``FOUND_IOU``: small, dim or turned faces near the threshold) is **held**: reported
in this frame with its previous box, points and score, and the next frame gets the full
pass. A frame after one with a face too small for the light pass (its box's shorter side
under ``light_min_face`` pixels of the light pass's input) gets the full pass too. So a lost
face is covered where it just was for one frame, then looked for at full cost; nothing the full pass would have found goes uncovered for longer than a frame, and
at worst a weak face's frames alternate between the two passes. A face found by full passes
on either side of light frames is also covered by the tracker's interpolation (gaps of up
to ``tracker.max_gap`` frames, so ``full_every - 1`` must not exceed it: :meth:`check`).
What the light pass finds, and costs, on the fixture clips is measured by
``bench/light_pass.py``.

Light-pass detections carry their ``scale`` (:attr:`FaceDetections.scale`); the tracker
takes appearance (identity embeddings) only from full passes.
"""

from __future__ import annotations

import numpy as np
import torch

from reenact.errors import ConfigError
from reenact.faces.boxes import box_iou
from reenact.faces.detect import FaceDetections, FaceDetector, check_frames
from reenact.faces.track import frame_histograms

FOUND_IOU = 0.3
"""Overlap with a light-pass box at which a face of the previous frame counts as found again."""


class DetectionCadence:
    """Full and light detector passes over a stream of frame chunks (see the module docstring).

    ``detector``: any :class:`FaceDetector` (its ``detect(frames, scale)``). ``full_every``
    1 runs the full pass on every frame (the light pass never runs). Counts:
    :attr:`full_frames`, :attr:`light_frames`, :attr:`held_faces`.
    """

    def __init__(self, detector: FaceDetector, full_every: int, light_scale: float, cut_threshold: float,
                 light_min_face: float = 0.0) -> None:
        if full_every < 1:
            raise ConfigError(f"full_every must be >= 1, got {full_every}")
        if not 0.0 < light_scale <= 1.0:
            raise ConfigError(f"light_scale must be in (0, 1], got {light_scale}")
        self.detector = detector
        self.full_every, self.light_scale, self.cut_threshold = full_every, light_scale, cut_threshold
        self.light_min_face = light_min_face
        self.name = detector.name
        self._since_full: int | None = None  # frames since the last full pass; None: none yet
        self._prev_hist: torch.Tensor | None = None
        self._prev: FaceDetections | None = None  # the last frame's faces
        self.full_frames = 0
        self.light_frames = 0
        self.held_faces = 0
        self._lost = False  # the last light pass lost a face: the next frame gets the full pass

    @staticmethod
    def check(full_every: int, max_gap: int) -> None:
        """Raise ConfigError when the tracker could not cover a face the light passes miss
        between two full passes (``full_every - 1`` frames above ``max_gap``)."""
        if full_every - 1 > max_gap:
            raise ConfigError(
                f"detector.full_every {full_every} leaves {full_every - 1} frames between full detector passes, "
                f"more than tracker.max_gap {max_gap} fills; lower detector.full_every to at most {max_gap + 1} "
                "or raise tracker.max_gap"
            )

    def _plan(self, frames: torch.Tensor) -> list[bool]:
        """Which frames get the full pass by the clock and by cuts (a lost face adds more
        in :meth:`detect`). Conventions: frames uint8 [T,H,W,3]; returns T booleans."""
        hist = frame_histograms(frames)
        prev = torch.cat([self._prev_hist[None], hist[:-1]]) if self._prev_hist is not None else None
        cut = [False] * frames.shape[0]
        if prev is not None:
            cut = (0.5 * (hist - prev).abs().sum(dim=1) > self.cut_threshold).tolist()
        self._prev_hist = hist[-1].clone()
        return cut

    def detect(self, frames: torch.Tensor | np.ndarray) -> list[FaceDetections]:
        """Detect faces in every frame: the full pass or the light one (see the module docstring).

        Conventions: frames uint8 [T,H,W,3] RGB (consecutive, after the previous call's);
        returns one FaceDetections per frame, in order.
        """
        frames = check_frames(frames)
        cut = self._plan(frames)
        # frame pixels of the smallest face the light pass may be trusted with
        smallest = self.light_min_face / (self.detector.input_scale(frames.shape[1], frames.shape[2]) * self.light_scale)
        light: dict[int, FaceDetections] = {}
        out: list[FaceDetections] = []
        for i in range(frames.shape[0]):
            full = (self._since_full is None or cut[i] or self._lost or self._has_smaller(smallest)
                    or self._since_full + 1 >= self.full_every)
            if full:
                dets = self.detector.detect(frames[i : i + 1], 1.0)[0]
                self._since_full, self._lost = 0, False
                self.full_frames += 1
            else:
                assert self._since_full is not None and self._prev is not None
                if i not in light:  # one call for the light frames up to the next full one by clock or cut
                    end = min(frames.shape[0], i + self.full_every - 1 - self._since_full)
                    end = next((k for k in range(i + 1, end) if cut[k]), end)
                    light.update(zip(range(i, end), self.detector.detect(frames[i:end], self.light_scale),
                                     strict=True))
                dets = self._hold_lost(light[i], self._prev)
                self._since_full += 1
                self.light_frames += 1
            out.append(dets)
            self._prev = dets
        return out

    def _has_smaller(self, side: float) -> bool:
        """Whether the last frame had a face whose box's shorter side is under ``side`` pixels."""
        if self._prev is None or not len(self._prev):
            return False
        return bool(((self._prev.boxes[:, 2:] - self._prev.boxes[:, :2]).min(axis=1) < side).any())

    def _hold_lost(self, light: FaceDetections, prev: FaceDetections) -> FaceDetections:
        """``light`` plus the faces of ``prev`` it does not find again (held where they
        were; the next frame then gets the full pass)."""
        if not len(prev):
            return light
        lost = box_iou(prev.boxes, light.boxes).max(axis=1) < FOUND_IOU if len(light) else np.ones(len(prev), bool)
        if not lost.any():
            return light
        self._lost = True
        self.held_faces += int(lost.sum())
        held = prev.select(lost)
        return FaceDetections(
            np.concatenate([light.boxes, held.boxes]), np.concatenate([light.points, held.points]),
            np.concatenate([light.scores, held.scores]), light.scale,
        )
