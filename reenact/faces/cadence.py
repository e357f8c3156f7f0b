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
face is covered where it just was for one frame, then looked for at full cost, and at worst
a weak face's frames alternate between the two passes. A face found by full passes on either
side of light frames is also covered by the tracker's interpolation (gaps of up to
``tracker.max_gap`` frames, so ``full_every - 1`` must not exceed it: :meth:`check`). What
the cadence does not promise: a face that *appears* during light frames and that the light
pass misses is found by the next full pass, up to ``full_every - 1`` frames later.
``bench/light_pass.py`` measures what it finds, and costs, on the fixture clips against the
full pass on every frame.

Light-pass detections carry their ``scale`` (:attr:`FaceDetections.scale`); the tracker
takes appearance (identity embeddings) only from full passes.

Frames may be torch tensors or numpy arrays; numpy frames never load torch (the cadence runs
before torch is imported in :mod:`reenact.faces.early`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from reenact.errors import ConfigError
from reenact.faces.boxes import box_iou
from reenact.faces.detect import FaceDetections, FaceDetector, checked_frames
from reenact.faces.shots import frame_histograms, shot_cuts

if TYPE_CHECKING:
    import torch

FOUND_IOU = 0.25
"""Overlap (IoU) with a light-pass box at which a face of the previous frame counts as found again."""


class DetectionCadence:
    """Full and light detector passes over a stream of frame chunks (see the module docstring).

    ``detector``: any :class:`FaceDetector` (its ``detect(frames, scale)``). ``full_every``
    1 runs the full pass on every frame (the light pass never runs). Counts:
    :attr:`full_frames`, :attr:`light_frames`, :attr:`held_faces`.
    """

    def __init__(self, detector: FaceDetector, full_every: int, light_scale: float, cut_threshold: float,
                 light_min_face: float) -> None:
        if full_every < 1:
            raise ConfigError(f"full_every must be >= 1, got {full_every}")
        if not 0.0 < light_scale <= 1.0:
            raise ConfigError(f"light_scale must be in (0, 1], got {light_scale}")
        self.detector = detector
        self.full_every, self.light_scale, self.cut_threshold = full_every, light_scale, cut_threshold
        self.light_min_face = light_min_face
        self._full_next = True  # the first frame, and the frame after a light pass lost a face
        self._since_full: int  # frames since the last full pass: set by the first frame's
        self._prev: FaceDetections  # the last frame's faces: set by the first frame
        self._prev_hist: torch.Tensor | np.ndarray | None = None
        self.full_frames = 0
        self.light_frames = 0
        self.held_faces = 0

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

    def _cuts(self, frames: torch.Tensor | np.ndarray) -> list[bool]:
        """Which frames start a shot (the tracker's rule; the video's first frame does not).
        Conventions: frames uint8 [T,H,W,3] (tensor or numpy); returns T booleans."""
        before = self._prev_hist
        if isinstance(frames, np.ndarray):
            hist = frame_histograms(frames)
            if before is not None and not isinstance(before, np.ndarray):
                before = before.cpu().numpy()
            cuts = shot_cuts(hist, before, self.cut_threshold).tolist()
            self._prev_hist = hist[-1].copy()
            return cuts
        import torch

        hist_t = frame_histograms(frames)
        if isinstance(before, np.ndarray):
            before = torch.from_numpy(before).to(hist_t.device)
        cuts = shot_cuts(hist_t, before, self.cut_threshold).tolist()
        self._prev_hist = hist_t[-1].clone()
        return cuts

    def detect(self, frames: torch.Tensor | np.ndarray) -> list[FaceDetections]:
        """Detect faces in every frame: the full pass or the light one (see the module docstring).

        Conventions: frames uint8 [T,H,W,3] RGB (consecutive, after the previous call's);
        returns one FaceDetections per frame, in order.
        """
        frames = checked_frames(frames)
        cuts = self._cuts(frames)
        # frame pixels of the smallest face the light pass is trusted with
        smallest = self.light_min_face / (self.detector.input_scale(frames.shape[1], frames.shape[2]) * self.light_scale)
        out: list[FaceDetections] = []
        for i, frame in enumerate(frames):
            last = i == len(frames) - 1  # the detector keeps its working memory until then
            if (self._full_next or cuts[i] or self._since_full + 1 >= self.full_every
                    or self._has_smaller(smallest)):
                (dets,) = self.detector.detect(frame[None], 1.0, release=last)
                self._full_next, self._since_full = False, 0
                self.full_frames += 1
            else:
                (light,) = self.detector.detect(frame[None], self.light_scale, release=last)
                dets = self._hold_lost(light)
                self._since_full += 1
                self.light_frames += 1
            out.append(dets)
            self._prev = dets
        return out

    def _has_smaller(self, side: float) -> bool:
        """Whether a face of the last frame has a box side under ``side`` pixels."""
        return bool((self._prev.boxes[:, 2:] - self._prev.boxes[:, :2] < side).any())

    def _hold_lost(self, light: FaceDetections) -> FaceDetections:
        """``light`` plus the last frame's faces it does not find again (held where they
        were; the next frame then gets the full pass)."""
        prev = self._prev
        lost = box_iou(prev.boxes, light.boxes).max(axis=1) < FOUND_IOU if len(light) else np.ones(len(prev), bool)
        if not lost.any():
            return light
        self._full_next = True
        self.held_faces += int(lost.sum())
        held = prev.select(lost)
        return FaceDetections(
            np.concatenate([light.boxes, held.boxes]), np.concatenate([light.points, held.points]),
            np.concatenate([light.scores, held.scores]), light.scale,
        )


__all__ = ["DetectionCadence"]
