"""Face tracking: one identity per track, no gaps, no track across scene cuts, smooth points.

:class:`FaceTracker` is streaming with a bounded delay: frames are pushed in chunks and
the faces of frame ``t`` are released once frame ``t + tracker.delay`` has been pushed
(or on :meth:`FaceTracker.flush`), so memory does not grow with the video.
:func:`track_video` is the convenience over a whole clip.

Per frame, in order:

1. **Scene cuts** are detected from the frames: the total-variation distance between
   8x8x8-bin RGB histograms of consecutive (downsampled) frames above
   ``scene_cut_threshold`` starts a new shot; every open track ends there.
2. **Detection** runs on every ``detect_every``-th frame, on the first frame of each shot
   and on the last frame before a cut (so each shot is bracketed by detections).
3. **Association**, per detected frame:

   a. *One detection per face*: with a low score threshold a detector's neighbouring peaks
      on one small face give a second box a quarter to half a face height off. Left to
      itself, each such box started a track of its own or took over the face's track. A
      detection on the same face as a higher-scored one of its frame (:func:`same_face`:
      their overlap covers :data:`~reenact.faces.boxes.DUPLICATE_OVERLAP` of the smaller, or either's centre lies
      inside the other) is that face found twice and is left out, unless appearance says
      two people: their embeddings (given, else taken with the encoder on a full pass, the
      pair only, and only for boxes of comparable score: ``PAIR_SCORE_RATIO``) less similar
      than ``min_similarity``. :func:`distinct_faces` is the rule by
      position alone, for a caller that checks raw detections against the tracks (deidentify
      redacts a detection no track covers; a second find is covered by its twin's track).
   b. *Candidates*: a track may continue with a detection whose IoU with the track's last
      box or its constant-velocity prediction is at least ``iou_threshold``, or whose
      centre lies within ``max_shift`` face heights of either (times the square root of
      the frames since the track's last detection, at most twice) at a similar size (within
      1.5x): a small face moving a third of its size per frame has no IoU left to match by.
   c. *Appearance*: identity embeddings are taken (on full detector passes only) of the
      faces where they can change the answer: a face that starts a track, that more than
      one track could continue or that could continue a track another face could continue
      too, that continues a track after a miss or by ``max_shift`` alone, or whose track's
      running identity is ``APPEARANCE_REFRESH`` detections old. A face that plainly
      continues its track is not embedded (that was the cost of tracking a crowd).
   d. *Matching* (a Hungarian solver, :func:`reenact.faces.boxes.match_boxes`): cost
      ``(1-w)(1 - IoU + shift) + w(1-cos)/2`` (the shift in face heights, at most 1; ``w`` =
      ``appearance_weight``; a pair whose appearance is not known takes the mean of the
      known); pairs less similar than ``min_similarity`` are never matched. Unmatched
      detections start tracks.
4. **Gaps** of up to ``max(max_gap, detect_every - 1)`` frames between two observations
   of a track are filled by linear interpolation of box, points and score (flagged
   ``interpolated``); that is also how ``detect_every > 1`` propagates faces between
   detections. A track unseen for longer is closed.
5. **Confirmation**: every tracked face is released, none is dropped: a face seen in
   one frame only is still a face (a one-frame clip, a person passing by). Each released
   face says whether its track was ``confirmed`` (had ``min_hits`` detections by the time
   the frame was released); the pipeline decides what an unconfirmed face gets (deidentify
   redacts it, reenact replaces it).
6. **Smoothing**: box corners and points go through a causal One-Euro filter per track
   whose speed term is measured in face heights per second (scale-invariant); its
   settings are ``smoothing.points`` (:class:`reenact.temporal.PointSmoothing`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from reenact.errors import ConfigError, ShapeError
from reenact.faces.boxes import box_iou, centre_shift, match_boxes, same_face, similar_size
from reenact.faces.detect import FaceDetections, FaceDetector, check_frames
from reenact.faces.identity import IdentityEncoder
from reenact.faces.shots import frame_histograms, shot_cuts
from reenact.temporal import OneEuroFilter, PointSmoothing

logger = logging.getLogger(__name__)

APPEARANCE_REFRESH = 25
"""Detections after which a track's running identity takes a plainly matched face again
(about a second at 25 fps: a head turns, the light changes)."""

PAIR_SCORE_RATIO = 0.75
"""Two boxes on one face whose scores are this close (the weaker at least this share of the
stronger) are asked to the encoder whether they are two people; a much weaker box is the
face's second peak (on the fixture crowd at threshold 0.2 most second finds score under half
their face's box: asking appearance of every one cost twice the rest of tracking)."""


@dataclass(frozen=True)
class TrackerSettings:
    """Tracker settings (see the module docstring for what each does).

    ``iou_threshold``: least IoU between a track's predicted box and a detection to match.
    ``appearance_weight``: weight of identity distance in the matching cost (0..1; used
    only with an identity encoder or given embeddings). ``min_similarity``: with
    embeddings, a detection whose cosine similarity to a track's running identity is
    below this never continues that track (prevents hand-overs between people who
    occlude each other; the track ends and a new one starts). ``max_shift``: how far (in
    face heights) a detection's centre may lie from a track's to continue it when their IoU
    is under ``iou_threshold`` (small, fast faces). ``max_gap``: longest run of
    frames without detection that is filled. ``min_hits``: detections before a track's
    faces are released (at most ``1 + delay // detect_every``). ``scene_cut_threshold``:
    histogram distance (0..1) that marks a cut. ``detect_every``: run the detector
    on every k-th frame only. The point filter's settings are not here but in
    ``smoothing.points`` (given to :class:`FaceTracker` as ``points``).
    """

    iou_threshold: float = 0.3
    appearance_weight: float = 0.3
    min_similarity: float = 0.25
    max_gap: int = 5
    max_shift: float = 0.5
    min_hits: int = 2
    scene_cut_threshold: float = 0.12
    detect_every: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_threshold < 1.0:
            raise ConfigError(f"iou_threshold must be in [0, 1), got {self.iou_threshold}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")
        if not 0.0 <= self.appearance_weight <= 1.0:
            raise ConfigError(f"appearance_weight must be in [0, 1], got {self.appearance_weight}")
        if not 0.0 <= self.max_shift <= 2.0:
            raise ConfigError(f"max_shift must be in [0, 2] face heights, got {self.max_shift}")
        if self.max_gap < 0:
            raise ConfigError(f"max_gap must be >= 0, got {self.max_gap}")
        if self.detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {self.detect_every}")
        if not 0.0 < self.scene_cut_threshold <= 1.0:
            raise ConfigError(f"scene_cut_threshold must be in (0, 1], got {self.scene_cut_threshold}")
        most = 1 + self.delay // self.detect_every
        if not 1 <= self.min_hits <= most:
            raise ConfigError(
                f"min_hits must be between 1 and {most} (1 + delay // detect_every, with delay "
                f"{self.delay}), got {self.min_hits}; lower min_hits or raise max_gap"
            )

    @property
    def fill_gap(self) -> int:
        """Longest run of undetected frames that is filled by interpolation."""
        return max(self.max_gap, self.detect_every - 1)

    @property
    def delay(self) -> int:
        """Frames between pushing frame t and the release of its faces."""
        return self.fill_gap


@dataclass(frozen=True)
class TrackedFaces:
    """The tracked faces of one frame.

    Conventions:
        frame_index  int, index of the frame in the video (0-based)
        track_ids    int64 [N] (stable per person within a shot)
        boxes        float32 [N,4] (x1,y1,x2,y2) frame pixels, smoothed
        points       float32 [N,5,2] frame pixels, ArcFace order, smoothed
        scores       float32 [N] detector confidence (interpolated for filled frames)
        interpolated bool [N] True where the face was not detected in this frame
        confirmed    bool [N] True where the face's track had ``min_hits`` detections
                     when the frame was released (default: all True)
    """

    frame_index: int
    track_ids: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    scores: np.ndarray
    interpolated: np.ndarray
    confirmed: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.track_ids.shape[0]
        if self.confirmed is None:
            object.__setattr__(self, "confirmed", np.ones((n,), dtype=bool))
        assert self.confirmed is not None
        if self.confirmed.shape != (n,) or self.confirmed.dtype != np.bool_:
            raise ShapeError(f"TrackedFaces.confirmed must be bool [{n}], got {self.confirmed.dtype} "
                             f"{self.confirmed.shape}")
        if (
            self.track_ids.shape != (n,) or self.track_ids.dtype != np.int64
            or self.boxes.shape != (n, 4) or self.points.shape != (n, 5, 2)
            or self.scores.shape != (n,) or self.interpolated.shape != (n,)
            or self.interpolated.dtype != np.bool_
        ):
            raise ShapeError(
                "TrackedFaces wants track_ids int64 [N], boxes [N,4], points [N,5,2], scores [N], "
                f"interpolated bool [N]; got {self.track_ids.shape}/{self.track_ids.dtype}, "
                f"{self.boxes.shape}, {self.points.shape}, {self.scores.shape}, {self.interpolated.shape}"
            )

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])


@dataclass
class _Obs:
    box: np.ndarray
    points: np.ndarray
    score: float
    interpolated: bool


@dataclass
class _Track:
    track_id: int
    obs: dict[int, _Obs] = field(default_factory=dict)
    last: int = -1  # last detected frame
    prev: int = -1  # detected frame before that
    hits: int = 0
    embedding: torch.Tensor | None = None
    open: bool = True
    smoother: OneEuroFilter | None = None
    last_obs: _Obs | None = None  # kept after release, for prediction and gap filling
    prev_box: np.ndarray | None = None
    embedded_at: int = 0  # hits when the running identity last took a face


    def predict(self, t: int) -> np.ndarray:
        assert self.last_obs is not None
        box = self.last_obs.box
        if self.prev_box is not None and self.prev >= 0:
            velocity = (box - self.prev_box) / (self.last - self.prev)
            return box + velocity * (t - self.last)
        return box


class _Geometry(NamedTuple):
    """Track rows x detection columns of one frame: ``cost`` float [R,C] (1 - IoU plus the
    centre shift in face heights, at most 1), ``allowed`` bool [R,C] (IoU at least
    ``iou_threshold``, or the centre within reach and a similar size), ``overlaps`` bool [R,C]
    (by IoU alone), ``gap`` int [R] (frames since each track's last detection)."""

    cost: np.ndarray
    allowed: np.ndarray
    overlaps: np.ndarray
    gap: np.ndarray


def distinct_faces(dets: FaceDetections) -> np.ndarray:
    """Indices (int64, ascending) of the detections that are not a second find of a face by
    position alone: a box that is the same face (:func:`same_face`) as a higher-scored kept box
    is left out."""
    kept: list[int] = []
    for c in np.argsort(-dets.scores, kind="stable").tolist():
        if not any(same_face(dets.boxes[c], dets.boxes[k]) for k in kept):
            kept.append(c)
    return np.asarray(sorted(kept), dtype=np.int64)


class FaceTracker:
    """Streaming face tracker with bounded delay (see the module docstring).

    Give a ``detector`` to let the tracker detect (honouring ``detect_every``), or pass
    the detections of every frame to :meth:`push` yourself. An ``encoder`` adds
    appearance to the matching cost (``settings.appearance_weight`` and
    ``settings.min_similarity``; without one they have no effect). ``points`` sets the
    causal filter of boxes and landmarks.
    """

    def __init__(
        self,
        settings: TrackerSettings = TrackerSettings(),
        detector: FaceDetector | None = None,
        encoder: IdentityEncoder | None = None,
        fps: float = 25.0,
        points: PointSmoothing = PointSmoothing(),
    ):
        if fps <= 0 or not math.isfinite(fps):
            raise ConfigError(f"fps must be a positive number, got {fps}")
        self.settings = settings
        self.points = points
        self.detector = detector
        self.encoder = encoder
        self.fps = float(fps)
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0
        self._next_frame = 0
        self._next_release = 0
        self._prev_frame: torch.Tensor | None = None
        self._prev_detected = False
        self._prev_hist: torch.Tensor | None = None
        self._frame_size: tuple[int, int] | None = None
        self.scene_cuts: list[int] = []
        self.detector_calls = 0
        self.duplicate_faces = 0
        self.embedded_faces = 0

    @property
    def delay(self) -> int:
        """Frames between pushing frame t and the release of its faces."""
        return self.settings.delay

    # -- public -----------------------------------------------------------------------
    def push(
        self,
        frames: torch.Tensor | np.ndarray,
        detections: list[FaceDetections] | None = None,
        embeddings: list[torch.Tensor] | None = None,
    ) -> list[TrackedFaces]:
        """Add consecutive frames; return the frames whose faces are now final.

        Conventions:
            frames uint8 [T,H,W,3] RGB; detections (optional) one FaceDetections per
            frame; embeddings (optional) one float [N_t,D] per frame matching detections.
            Returns TrackedFaces for frames in increasing frame_index, without gaps.
        """
        frames = check_frames(frames)
        t_count = frames.shape[0]
        size = (int(frames.shape[1]), int(frames.shape[2]))
        if self._frame_size is not None and size != self._frame_size:
            raise ShapeError(f"frame size changed from {self._frame_size} to {size} within one video")
        self._frame_size = size
        if detections is None and self.detector is None:
            raise ConfigError("FaceTracker.push needs detections, or a detector given to the tracker")
        if detections is not None and len(detections) != t_count:
            raise ShapeError(f"got {len(detections)} detections for {t_count} frames")
        if embeddings is not None and (detections is None or len(embeddings) != t_count):
            raise ShapeError("embeddings need detections, one [N,D] tensor per frame")
        if t_count == 0:
            return []

        hist = frame_histograms(frames)
        cut = shot_cuts(hist, self._prev_hist, self.settings.scene_cut_threshold)
        base = self._next_frame

        dets: dict[int, FaceDetections] = {}
        embs: dict[int, torch.Tensor | None] = {}
        if detections is not None:
            for i, d in enumerate(detections):
                dets[base + i] = d
                embs[base + i] = embeddings[i] if embeddings is not None else None
        else:
            k = self.settings.detect_every
            need = [
                i for i in range(t_count)
                if (base + i) % k == 0 or bool(cut[i]) or (i + 1 < t_count and bool(cut[i + 1]))
                or (base + i) == 0
            ]
            # a cut on the first frame of this chunk: the previous frame closes its shot
            if bool(cut[0]) and self._prev_frame is not None and not self._prev_detected:
                d_prev = self._run_detector(self._prev_frame[None], [0])
                self._observe(base - 1, d_prev[0], None, self._prev_frame[None], 0)
            for i, d in zip(need, self._run_detector(frames, need), strict=True):
                dets[base + i] = d

        released: list[TrackedFaces] = []
        for i in range(t_count):
            t = base + i
            if bool(cut[i]):
                self.scene_cuts.append(t)
                for track in self._tracks.values():
                    track.open = False
            if t in dets:
                self._observe(t, dets[t], embs.get(t), frames, i)
            self._next_frame = t + 1
            released.extend(self._release_upto(t - self.delay))
        # kept only to detect it later (a cut or the end after a skipped frame): a 1080p frame is 6 MiB
        self._prev_frame = frames[-1].clone() if self.detector is not None else None
        self._prev_detected = (base + t_count - 1) in dets
        self._prev_hist = hist[-1].clone()
        return released

    def flush(self) -> list[TrackedFaces]:
        """End of video: detect the last frame if it was skipped and release everything."""
        if self._prev_frame is not None and not self._prev_detected and self.detector is not None:
            d = self._run_detector(self._prev_frame[None], [0])
            self._observe(self._next_frame - 1, d[0], None, self._prev_frame[None], 0)
            self._prev_detected = True
        return self._release_upto(self._next_frame - 1)

    # -- internals --------------------------------------------------------------------
    def _run_detector(self, frames: torch.Tensor, which: list[int]) -> list[FaceDetections]:
        if not which:
            return []
        assert self.detector is not None
        subset = frames[torch.as_tensor(which, dtype=torch.long, device=frames.device)]
        found = self.detector.detect(subset)
        self.detector_calls += len(which)
        return found

    def _embed(self, frame: torch.Tensor, dets: FaceDetections, which: list[int]) -> dict[int, torch.Tensor]:
        """Identity embeddings (float [D], CPU) of the faces ``which`` of ``dets`` in ``frame`` [1,H,W,3]."""
        if not which or self.encoder is None:
            return {}
        self.embedded_faces += len(which)
        points = torch.from_numpy(dets.points[which].astype(np.float32))
        codes = self.encoder.embed(frame, torch.zeros(len(which), dtype=torch.long), points).float().cpu()
        return dict(zip(which, codes, strict=True))

    def _observe(
        self, t: int, dets: FaceDetections, embs: torch.Tensor | None, frames: torch.Tensor, i: int
    ) -> None:
        s = self.settings
        for track in self._tracks.values():
            if track.open and t - track.last - 1 > s.fill_gap:
                track.open = False
        # 3a. one detection per face
        codes: dict[int, torch.Tensor] = {}
        distinct = self._distinct(dets, embs, codes, frames[i : i + 1])
        if len(distinct) < len(dets):
            self.duplicate_faces += len(dets) - len(distinct)
            codes = {int(k): codes[int(c)] for k, c in enumerate(distinct) if int(c) in codes}
            dets = dets.select(distinct)
            embs = embs[torch.from_numpy(distinct)] if embs is not None else None
        candidates = [tr for tr in self._tracks.values() if tr.open and tr.last < t]
        geometry = self._geometry(t, candidates, dets) if candidates and len(dets) else None
        codes.update(self._codes(candidates, dets, embs, geometry, frames[i : i + 1], set(codes)))
        matched: set[int] = set()
        if geometry is not None:
            for r, c in self._match(candidates, geometry, codes):
                self._extend(candidates[r], t, dets, c, codes.get(c))
                matched.add(c)
        for c in range(len(dets)):
            if c in matched:
                continue
            track = _Track(track_id=self._next_id)
            self._next_id += 1
            self._tracks[track.track_id] = track
            self._extend(track, t, dets, c, codes.get(c))

    def _distinct(self, dets: FaceDetections, embs: torch.Tensor | None, codes: dict[int, torch.Tensor],
                  frame: torch.Tensor) -> np.ndarray:
        """:func:`distinct_faces`, except that a pair whose embeddings (given, else taken with the
        encoder on a full pass, into ``codes``, of pairs whose weaker box scores at least
        ``PAIR_SCORE_RATIO`` of the stronger's) are less similar than ``min_similarity`` is two people."""
        by_position = distinct_faces(dets)
        if len(by_position) == len(dets):
            return by_position
        if embs is None and (self.encoder is None or dets.scale != 1.0):
            return by_position
        scores = dets.scores
        pairs = [(c, k) for c in range(len(dets)) for k in range(c) if same_face(dets.boxes[c], dets.boxes[k])
                 and min(scores[c], scores[k]) >= PAIR_SCORE_RATIO * max(scores[c], scores[k])]
        if embs is not None:
            codes.update({c: embs[c].float().cpu() for c in range(len(dets))})
        else:
            codes.update(self._embed(frame, dets, sorted({c for pair in pairs for c in pair})))
        unit = {c: torch.nn.functional.normalize(code, dim=0) for c, code in codes.items()}
        kept: list[int] = []
        for c in np.argsort(-scores, kind="stable").tolist():
            twins = [k for k in kept if same_face(dets.boxes[c], dets.boxes[k])]
            # a much weaker box on a face is its second peak; two comparable ones ask appearance
            if not any(c not in unit or k not in unit or float(unit[c] @ unit[k]) >= self.settings.min_similarity
                       for k in twins):
                kept.append(c)
        return np.asarray(sorted(kept), dtype=np.int64)

    def _geometry(self, t: int, candidates: list[_Track], dets: FaceDetections) -> _Geometry:
        """Where each detection of frame ``t`` may continue each open track (step 3)."""
        s = self.settings
        # the better of the constant-velocity prediction and the last box: heads that
        # turn back (or detector jitter) make the prediction overshoot
        pred = np.stack([tr.predict(t) for tr in candidates])
        last = np.stack([tr.last_obs.box for tr in candidates if tr.last_obs is not None])
        iou = np.maximum(box_iou(pred, dets.boxes), box_iou(last, dets.boxes))
        shift = np.minimum(centre_shift(pred, dets.boxes), centre_shift(last, dets.boxes))
        # a face may drift further the longer it was unseen (as a random walk: with the root of the gap)
        gap = np.asarray([t - tr.last for tr in candidates], dtype=np.int64)
        reach = np.minimum(s.max_shift * np.sqrt(gap), 2 * s.max_shift)
        near = (shift <= reach[:, None]) & similar_size(last, dets.boxes)
        allowed = (iou >= max(s.iou_threshold, 1e-6)) | near
        return _Geometry(1.0 - iou + np.minimum(shift, 1.0), allowed, iou >= max(s.iou_threshold, 1e-6), gap)

    def _codes(
        self, candidates: list[_Track], dets: FaceDetections, embs: torch.Tensor | None,
        geometry: _Geometry | None, frame: torch.Tensor, known: set[int],
    ) -> dict[int, torch.Tensor]:
        """Identity embeddings of the detections where appearance can matter (step 3):

        all the given ``embs``; else, with an encoder and on a full detector pass only, the
        faces that start a track, that more than one track could continue or that could
        continue a track some other face could continue too, that continue a track after a
        miss or beyond ``iou_threshold`` (where a hand-over between people happens), and
        that continue a track whose running identity is missing or ``APPEARANCE_REFRESH``
        detections old. A face that plainly continues its track is not embedded: most faces
        of most frames, the cost of tracking.
        """
        s = self.settings
        if embs is not None:
            return {c: embs[c].float().cpu() for c in range(len(dets))}
        if self.encoder is None or s.appearance_weight <= 0 or dets.scale != 1.0 or not len(dets):
            return {}
        if geometry is None:
            return self._embed(frame, dets, [c for c in range(len(dets)) if c not in known])
        allowed = geometry.allowed
        shared = (allowed.sum(axis=1) >= 2)[:, None] | (allowed.sum(axis=0) >= 2)[None, :]
        stale = np.asarray([tr.embedding is None or tr.hits - tr.embedded_at >= APPEARANCE_REFRESH
                            for tr in candidates])
        risky = (geometry.gap > 1) | stale
        want = ~allowed.any(axis=0) | (allowed & (shared | ~geometry.overlaps | risky[:, None])).any(axis=0)
        return self._embed(frame, dets, [c for c in np.flatnonzero(want).tolist() if c not in known])

    def _match(self, candidates: list[_Track], geometry: _Geometry, codes: dict[int, torch.Tensor]) -> list[tuple[int, int]]:
        """(track row, detection) pairs: the least total cost ``(1-w) * geometry + w * (1-cos)/2``
        over the allowed pairs (a pair whose appearance is unknown takes the mean of the known)."""
        s = self.settings
        cost = geometry.cost.copy()
        rows = [r for r, tr in enumerate(candidates) if tr.embedding is not None]
        cols = sorted(codes)
        if rows and cols and s.appearance_weight > 0:
            track_e = torch.stack([candidates[r].embedding for r in rows])  # type: ignore[misc]
            known = (torch.nn.functional.normalize(track_e, dim=1) @ torch.stack([codes[c] for c in cols]).T).numpy()
            sim = np.full(cost.shape, float(known.mean()))
            sim[np.ix_(rows, cols)] = known
            cost = (1 - s.appearance_weight) * cost + s.appearance_weight * (1.0 - sim) / 2.0
            veto = np.zeros(cost.shape, dtype=bool)
            veto[np.ix_(rows, cols)] = known < s.min_similarity  # a different person took this place
            cost[veto] = 1e6
        cost[~geometry.allowed] = 1e6
        return [(int(r), int(c)) for r, c in match_boxes(-cost, min_score=-1e5)]  # refused pairs cost 1e6

    def _extend(self, track: _Track, t: int, dets: FaceDetections, c: int, code: torch.Tensor | None) -> None:
        new = _Obs(dets.boxes[c].astype(np.float64), dets.points[c].astype(np.float64), float(dets.scores[c]), False)
        if track.last_obs is not None:
            old = track.last_obs
            span = t - track.last
            for j in range(1, span):
                a = j / span
                track.obs[track.last + j] = _Obs(
                    (1 - a) * old.box + a * new.box,
                    (1 - a) * old.points + a * new.points,
                    (1 - a) * old.score + a * new.score,
                    True,
                )
        track.obs[t] = new
        track.prev_box = track.last_obs.box if track.last_obs is not None else None
        track.last_obs = new
        track.prev, track.last = track.last, t
        track.hits += 1
        if code is not None:
            track.embedding = code if track.embedding is None else torch.nn.functional.normalize(
                0.8 * track.embedding + 0.2 * code, dim=0
            )
            track.embedded_at = track.hits

    def _release_upto(self, upto: int) -> list[TrackedFaces]:
        out = []
        s = self.settings
        while self._next_release <= upto:
            t = self._next_release
            ids, boxes, points, scores, interp, confirmed = [], [], [], [], [], []
            for track in self._tracks.values():
                obs = track.obs.pop(t, None)
                if obs is None:
                    continue
                if track.smoother is None:
                    track.smoother = self.points.make_filter()
                if track.smoother is not None:
                    height = float(obs.box[3] - obs.box[1])
                    packed = np.concatenate([obs.box.reshape(2, 2), obs.points])
                    packed = track.smoother(packed, 1.0 / self.fps, point_scale=height).copy()
                    box, pts = packed[:2].reshape(4), packed[2:]
                else:
                    box, pts = obs.box, obs.points
                ids.append(track.track_id)
                boxes.append(box)
                points.append(pts)
                scores.append(obs.score)
                interp.append(obs.interpolated)
                confirmed.append(track.hits >= s.min_hits)
            # forget tracks that can produce nothing more
            for tid in [tid for tid, tr in self._tracks.items() if not tr.open and not tr.obs]:
                del self._tracks[tid]
            for tr in self._tracks.values():
                for old in [f for f in tr.obs if f < t]:
                    del tr.obs[old]
            n = len(ids)
            out.append(
                TrackedFaces(
                    frame_index=t,
                    track_ids=np.asarray(ids, dtype=np.int64).reshape(n),
                    boxes=np.asarray(boxes, dtype=np.float32).reshape(n, 4),
                    points=np.asarray(points, dtype=np.float32).reshape(n, 5, 2),
                    scores=np.asarray(scores, dtype=np.float32).reshape(n),
                    interpolated=np.asarray(interp, dtype=bool).reshape(n),
                    confirmed=np.asarray(confirmed, dtype=bool).reshape(n),
                )
            )
            self._next_release = t + 1
        return out


def track_video(
    frames: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    detector: FaceDetector | None = None,
    settings: TrackerSettings = TrackerSettings(),
    encoder: IdentityEncoder | None = None,
    fps: float = 25.0,
    detections: list[FaceDetections] | None = None,
    chunk_size: int = 32,
    points: PointSmoothing = PointSmoothing(),
) -> list[TrackedFaces]:
    """Track the faces of a whole clip (convenience over :class:`FaceTracker`).

    Conventions:
        frames uint8 [T,H,W,3] RGB (or an iterable of such chunks); detections
        (optional) one FaceDetections per frame instead of a detector.
        Returns one TrackedFaces per frame, frame_index 0..T-1.
    """
    tracker = FaceTracker(settings, detector=detector, encoder=encoder, fps=fps, points=points)
    out: list[TrackedFaces] = []
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        whole = check_frames(frames)
        chunks: Iterable[torch.Tensor | np.ndarray] = [whole[i : i + chunk_size] for i in range(0, whole.shape[0], chunk_size)]
    else:
        chunks = frames
    start = 0
    for chunk in chunks:
        chunk_t = check_frames(chunk)
        dets = detections[start : start + chunk_t.shape[0]] if detections is not None else None
        out.extend(tracker.push(chunk_t, dets))
        start += chunk_t.shape[0]
    out.extend(tracker.flush())
    return out


__all__ = [
    "FaceTracker", "TrackedFaces", "TrackerSettings", "distinct_faces", "frame_histograms", "shot_cuts",
    "track_video",
]
