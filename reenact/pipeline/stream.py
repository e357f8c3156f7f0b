"""Steps 3-10 as one streaming transform over decoded chunks (see :mod:`reenact.pipeline.run`).

:class:`FaceReplacer` wires the named parts: the tracker, face selection, the identity
policy, the two smoothers, the latent mapper, the generator, the blender, the privacy
check and redaction; the run report counts what happened.

Conventions: frames uint8 ``[T,H,W,3]`` RGB; crops and generated faces float
``[F,3,R,R]`` in [-1,1]; affine matrices ``[F,2,3]`` map frame pixels to crop pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from reenact.blend import paste_faces
from reenact.blend.masks import grown_mask_settings
from reenact.faces import (
    FaceDetections,
    FaceDetector,
    ffhq_template,
    similarity_from_points,
    warp_to_crop,
)
from reenact.faces.cadence import DetectionCadence
from reenact.faces.track import FaceTracker, TrackedFaces
from reenact.io import FrameChunk
from reenact.packs import LoadedPack
from reenact.pipeline.identity import (
    ClassicRedaction,
    IdentityPolicy,
    TrackIdentity,
    classic_method,
    policy_class,
)
from reenact.pipeline.mapping import make_mapping
from reenact.pipeline.privacy import (
    Checker,
    PrivacyGuard,
    check_identities,
    checkers_for,
    ladder_for,
    redact,
    run_recognisers,
    untracked_faces,
)
from reenact.pipeline.report import RunReport
from reenact.pipeline.selection import FaceSelection
from reenact.pipeline.settings import Mode, PipelineConfig
from reenact.pipeline.slots import FaceRecord, FrameSlot, FrameSlots
from reenact.temporal import AlignmentSmoother, TrackSmoother


class ThresholdedDetector:
    """A detector whose faces below ``score_threshold`` (or with a box side under
    ``min_face_size`` pixels) are dropped after detection.

    The model stays loaded once whatever the threshold (greedy NMS keeps a face only against
    higher-scored ones, so thresholding after it gives the faces thresholding before would).
    Wrapping a ThresholdedDetector wraps the model it wraps (the new limits replace the old).
    """

    def __init__(self, detector: FaceDetector, score_threshold: float, min_face_size: float = 0.0) -> None:
        inner: FaceDetector = detector.detector if isinstance(detector, ThresholdedDetector) else detector
        self.detector: FaceDetector = inner
        self.score_threshold, self.min_face_size = score_threshold, min_face_size
        self.name = inner.name

    def input_scale(self, height: int, width: int) -> float:
        return self.detector.input_scale(height, width)

    def detect(self, frames: torch.Tensor | np.ndarray, scale: float = 1.0,
               release: bool = True) -> list[FaceDetections]:
        """Conventions: frames uint8 [T,H,W,3]; one FaceDetections per frame (``scale`` and
        ``release``: as :meth:`FaceDetector.detect`)."""
        out = []
        for d in self.detector.detect(frames, scale, release):
            sides = (d.boxes[:, 2:] - d.boxes[:, :2]).min(axis=1) if len(d) else np.zeros((0,), np.float32)
            out.append(d.select((d.scores >= self.score_threshold) & (sides >= self.min_face_size)))
        return out


def too_small(box: np.ndarray, min_face_size: float) -> bool:
    """Whether a face box (float [4], frame pixels) has a side under ``min_face_size`` pixels."""
    return bool(min(box[2] - box[0], box[3] - box[1]) < min_face_size)


def build_tracker(config: PipelineConfig, pack: Any, fps: float, detector: FaceDetector | None = None) -> FaceTracker:
    """The tracker as the pipeline runs it: the pack's identity model for the appearance term
    (``tracker.appearance_weight``, ``tracker.min_similarity``), ``smoothing.points`` for its
    point filter, and the detector (``detector``, else the pack's) only when it detects on a
    subset of frames itself."""
    detector = None if config.tracker.detect_every == 1 else (detector or pack.detector)
    return FaceTracker(config.tracker, detector=detector, encoder=pack.identity, fps=fps,
                       points=config.smoothing.points)


def identity_threshold(config: PipelineConfig, pack: LoadedPack) -> float:
    """Similarity at which two faces count as one person (``deidentify.threshold`` or the pack's)."""
    return config.deidentify.threshold if config.deidentify.threshold is not None else pack.match_threshold


class FaceReplacer:
    """Steps 3-10 as an iterator transform over FrameChunks.

    ``policy``: the identity policy (built for ``mode`` from ``target`` when not given).
    ``keep_frames``: frame indices kept (before, after) in ``kept`` for a preview.

    Detection follows the mode (:meth:`DetectorSettings.for_mode`): ``deidentify`` is
    recall-first: its lower default threshold, and faces too small to replace (a box side
    under ``detector.min_face_size``) are tracked and redacted, never dropped; faces of
    tracks seen in fewer than ``tracker.min_hits`` frames are redacted too. ``reenact``
    keeps the precision default, drops faces too small to replace, and replaces the faces
    of every track, a face seen in one frame included. Every frame is detected, through
    :class:`DetectionCadence` (``deidentify``: the full pass on every
    ``detector.full_every``-th frame, a light pass between; ``reenact``: the full pass on
    every frame).
    """

    def __init__(
        self,
        pack: LoadedPack,
        config: PipelineConfig,
        mode: Mode,
        fps: float,
        *,
        target: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        keep_frames: set[int] | None = None,
        policy: IdentityPolicy | None = None,
        checkers: list[Checker] | None = None,
    ) -> None:
        self.pack, self.config = pack, config
        self.device = pack.device
        # --method blur|pixelate|solid run without a generator: the alignment is only smoothed
        self.size = pack.generator.img_resolution if pack.generator is not None else 256
        self.template = ffhq_template(self.size).to(self.device)
        self.threshold = identity_threshold(config, pack)
        if policy is None and classic_method(mode, config.deidentify.method):
            policy = ClassicRedaction(config.deidentify.method)
        if policy is None:
            policy = policy_class(mode).build(pack, config, self.threshold, target)
        self.policy = policy
        policy.check_tracker(config.tracker)
        self.report = RunReport(policy.similarity_key)
        self.select = FaceSelection(
            config.faces, reference=reference.to(self.device) if reference is not None else None,
            threshold=self.threshold, embed=self._embed_faces,
        )
        synthetic = not (policy.redacts and config.deidentify.method != "synthetic")
        self.mapping = make_mapping(pack, config) if synthetic else None
        self.guard: PrivacyGuard | None = None
        if policy.redacts:
            s = config.deidentify
            if checkers is None:
                checkers = checkers_for(run_recognisers(pack.identity, pack.recogniser), s.privacy_threshold)
            self.guard = PrivacyGuard(
                checkers, ladder_for(s.method, s.head_redaction, s.redraws), self.report, head_margin=s.head_margin,
                render=self._rerender if synthetic else None, redraw=getattr(policy, "redraw", None),
                redraws=s.redraws,
            )
        self._frames_in: torch.Tensor | None = None
        self.detector_settings = config.detector.for_mode(mode)
        self.recall_first = policy.redacts  # deidentify: every face found is covered, however small
        self.min_face_size = self.detector_settings.min_face_size
        #: deidentify synthetic: faces under this side go to the head-box rung (settings)
        self.synthetic_min_face = config.deidentify.synthetic_min_face if policy.redacts and synthetic else 0.0
        self.detector = ThresholdedDetector(pack.detector, self.detector_settings.threshold,
                                            0.0 if self.recall_first else self.min_face_size)
        self.tracker = build_tracker(config, pack, fps, self.detector)
        full_every = self.detector_settings.full_every or 1
        DetectionCadence.check(full_every, config.tracker.fill_gap)
        self.cadence = DetectionCadence(self.detector, full_every, self.detector_settings.light_scale,
                                        config.tracker.scene_cut_threshold, self.detector_settings.light_min_face)
        self.smooth_M = AlignmentSmoother(config.smoothing.alignment, fps, self.size)
        self.smooth_w = TrackSmoother(config.smoothing.latent, fps)
        self.slots = FrameSlots(config.max_batch)
        self.identities: dict[int, TrackIdentity] = {}
        self.active: set[int] = set()
        self.to_map: list[tuple[int, FaceRecord]] = []
        self.keep_frames = keep_frames or set()
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.kept_faces: dict[int, list[tuple[int, np.ndarray, str | None]]] = {}  # the sheet's labels

    # steps 3-4: detect, track, select, identity, alignment ----------------------------------
    def __call__(self, chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        timer = self.report.timer
        for chunk in chunks:
            frames = chunk.frames.to(self.device)
            self.slots.add(chunk.start_index, frames, chunk.pts)
            raw: list[FaceDetections] | None = None
            if self.tracker.detector is None:
                with timer("detect"):
                    raw = self.cadence.detect(frames)
                self.report.count("frames_light_detected", sum(d.scale < 1.0 for d in raw))
                for i, dets in enumerate(raw):
                    self.slots[chunk.start_index + i].raw = dets
            with timer("track"):
                released = self.tracker.push(frames, raw)
            self._take_tracked(released)
            yield from self._emit()
        with timer("track"):
            released = self.tracker.flush()
        self._take_tracked(released)
        self._end_tracks(set(self.active))
        yield from self._emit(final=True)

    def _embed_faces(self, frame_index: int, points: np.ndarray) -> torch.Tensor:
        frame = self.slots[frame_index].frame
        with self.report.timer("identity"):
            return self.pack.identity.embed(
                frame[None], torch.zeros(points.shape[0], dtype=torch.long, device=self.device),
                torch.from_numpy(points).to(self.device),
            )

    def _take_tracked(self, released: list[TrackedFaces]) -> None:
        for faces in released:
            slot = self.slots[faces.frame_index]
            slot.faces_seen = len(faces)
            chosen = self.select(faces)
            # deidentify: a face of a track seen in fewer than min_hits frames is redacted
            assert faces.confirmed is not None
            unconfirmed = {i for i in chosen if self.recall_first and not bool(faces.confirmed[i])}
            present = {int(faces.track_ids[i]) for i in chosen if i not in unconfirmed}
            self._end_tracks(self.active - present)
            self.active = present
            for i in chosen:
                track_id = int(faces.track_ids[i])
                record = FaceRecord(track_id, faces.boxes[i].copy(), faces.points[i].copy())
                if i in unconfirmed:
                    record.failed = f"track seen in fewer than tracker.min_hits={self.config.tracker.min_hits} frames"
                    self.report.count("unconfirmed_faces_redacted")
                    self.slots.add_face(faces.frame_index, record)
                    continue
                if self.recall_first and too_small(record.box, self.min_face_size):
                    record.failed = f"face smaller than detector.min_face_size={self.min_face_size:g} px"
                    self.report.count("small_faces_redacted")
                elif too_small(record.box, self.synthetic_min_face):
                    record.failed = (f"face smaller than deidentify.synthetic_min_face="
                                     f"{self.synthetic_min_face:g} px")
                    self.report.count("small_faces_redacted")
                self.slots.add_face(faces.frame_index, record)
                self._identity_for(track_id, faces.frame_index, faces.points[i : i + 1])
                M = similarity_from_points(torch.from_numpy(faces.points[i : i + 1]).to(self.device),
                                           self.template)[0]
                with self.report.timer("smooth"):
                    self._take_M(self.smooth_M.push(track_id, faces.frame_index, M))
            if self.policy.covers_untracked and slot.raw is not None:
                for record in untracked_faces(slot.raw, faces.boxes):
                    self.slots.add_face(faces.frame_index, record)
            slot.tracked = True
        self._map_pending()

    def _identity_for(self, track_id: int, frame_index: int, points: np.ndarray) -> None:
        if track_id in self.identities:
            return
        with self.report.timer("identity"):
            identity = self.policy.identity_for(track_id, lambda: self._embed_faces(frame_index, points)[0])
        self.identities[track_id] = identity
        track = self.report.tracks[track_id]
        track.identity = self.policy.describe(identity)
        track.identity_failed = track.identity is not None and identity.failed is not None

    # steps 5-7: align, map, smooth w -----------------------------------------------------
    def _take_M(self, released: list[tuple[int, int, torch.Tensor]]) -> None:
        for track_id, frame_index, M in released:
            record = self.slots.find(frame_index, track_id)
            if record is None or record.failed is not None:
                continue  # redacted (too small): in the smoother's sequence only; its frame may have left
            record.M = M
            identity = self.identities[track_id]
            if identity.code is None:
                record.failed = identity.failed or "no identity"
                continue
            self.to_map.append((frame_index, record))

    def _map_pending(self) -> None:
        if self.mapping is None:
            assert not self.to_map, "faces to map without a latent mapper"
            return
        timer, max_batch = self.report.timer, self.config.max_batch
        while self.to_map:
            batch, self.to_map = self.to_map[:max_batch], self.to_map[max_batch:]
            frames = torch.stack([self.slots[fi].frame for fi, _r in batch])
            M = torch.stack([r.M for _fi, r in batch if r.M is not None])
            with timer("align"):
                crops = warp_to_crop(frames, torch.arange(len(batch), device=self.device), M, self.size)
            codes = [self.identities[r.track_id].code for _fi, r in batch]
            with timer("map"):
                ws = self.mapping(crops, torch.stack([c for c in codes if c is not None]).to(self.device),
                                  [r.track_id for _fi, r in batch])
            with timer("smooth"):
                for (fi, r), w in zip(batch, ws, strict=True):
                    self._take_w(self.smooth_w.push(r.track_id, fi, w))

    def _take_w(self, released: list[tuple[int, int, torch.Tensor]]) -> None:
        for track_id, frame_index, w in released:
            self.slots.record(frame_index, track_id).ws = w

    def _end_tracks(self, ended: set[int]) -> None:
        for track_id in sorted(ended):
            with self.report.timer("smooth"):
                self._take_M(self.smooth_M.end_track(track_id))
            self._map_pending()
            with self.report.timer("smooth"):
                self._take_w(self.smooth_w.end_track(track_id))
            if self.mapping is not None:
                self.mapping.end_track(track_id)

    # steps 8-10: synthesize, blend, check, redact ------------------------------------------
    def _emit(self, final: bool = False) -> Iterator[FrameChunk]:
        for slots in self.slots.pop_ready(final):
            yield self._finish(slots)

    def _finish(self, slots: list[FrameSlot]) -> FrameChunk:
        frames = torch.stack([s.frame for s in slots])
        indices = [s.index for s in slots]
        faces = [(j, f) for j, s in enumerate(slots) for f in s.faces if f.ws is not None and f.failed is None]
        if self.guard is not None:  # a track already past the synthetic rungs is not synthesized
            faces = [(j, f) for j, f in faces if self.guard.start_rung(f) < self.guard.first_box]
        out = frames
        if faces:
            out = self._synthesize_and_blend(frames, faces)
            faces = [(j, f) for j, f in faces if f.failed is None]
        if self.guard is not None:
            self._frames_in = frames
            out = self.guard.apply(frames, out, [(j, f) for j, s in enumerate(slots) for f in s.faces], indices)
            self._frames_in = None
        else:
            if faces:
                check_identities(out, faces, indices, self.pack.identity.embed, self.policy, self.identities,
                                 self.report)
            out = redact(out, slots, self.policy.redacts, self.report)
        self.report.count("frames", len(slots))
        self.report.count("frames_with_faces", sum(1 for s in slots if s.faces_seen or s.faces))
        for j, i in enumerate(indices):
            if i in self.keep_frames:
                self.kept[i] = (frames[j].cpu().clone(), out[j].cpu().clone())
                self.kept_faces[i] = [(f.track_id, np.array(f.box, copy=True), f.failed) for f in slots[j].faces]
        pts = torch.tensor([s.pts for s in slots], dtype=torch.int64)
        return FrameChunk(out.cpu(), pts, indices[0])

    def _synthesize_and_blend(self, frames: torch.Tensor, faces: list[tuple[int, FaceRecord]]) -> torch.Tensor:
        """Steps 8-9: generate the faces and paste them into ``frames`` (marks refused faces failed)."""
        timer, max_batch = self.report.timer, self.config.max_batch
        ws = torch.stack([f.ws for _j, f in faces if f.ws is not None])
        for _j, f in faces:
            if f.ws is not None:
                self.report.tracks[f.track_id].add_latent(f.ws)
        with timer("synthesize"), torch.no_grad():
            generated = torch.cat([
                self.pack.generator.synthesis(ws[k : k + max_batch], noise_mode="const")
                for k in range(0, ws.shape[0], max_batch)
            ])
        index = torch.tensor([j for j, _f in faces], dtype=torch.long, device=self.device)
        M = torch.stack([f.M for _j, f in faces if f.M is not None])
        with timer("blend"):
            out, stats = paste_faces(frames, generated.float(), index, M, settings=self.config.blend)
        self.report.count("faces_refused_by_blend", stats.refused)
        for k in stats.refused_indices:
            faces[k][1].failed = "generated face refused by the blender (NaN or inf)"
        for k in stats.skipped_indices:
            faces[k][1].failed = "face outside the frame"
        return out

    def _rerender(self, out: torch.Tensor, faces: list[tuple[int, FaceRecord]], codes: list[torch.Tensor | None],
                  grown: bool) -> torch.Tensor:
        """The ladder's synthetic rungs: render ``faces`` again, with a new identity code
        (mapped from the input crop, unsmoothed) or their own latent (code None), and paste
        them into ``out``, with the blend mask grown by ``deidentify.grown_mask_scale`` when
        ``grown``. Faces the blender refuses are marked failed."""
        assert self._frames_in is not None and self.mapping is not None
        ws = [f.ws for _j, f in faces]
        new = [k for k, c in enumerate(codes) if c is not None]
        if new:
            rows = torch.tensor([faces[k][0] for k in new], dtype=torch.long, device=self.device)
            M = _stack_present([faces[k][1].M for k in new])
            crops = warp_to_crop(self._frames_in, rows, M, self.size)
            id_codes = _stack_present([codes[k] for k in new]).to(self.device)
            with torch.no_grad():
                mapped = self.mapping(crops, id_codes, [faces[k][1].track_id for k in new])
            for k, w in zip(new, mapped, strict=True):
                ws[k] = w
        keep = [k for k, w in enumerate(ws) if w is not None and faces[k][1].M is not None]
        if not keep:
            return out
        with torch.no_grad():
            generated = self.pack.generator.synthesis(_stack_present([ws[k] for k in keep]), noise_mode="const")
        index = torch.tensor([faces[k][0] for k in keep], dtype=torch.long, device=self.device)
        M = _stack_present([faces[k][1].M for k in keep])
        settings = self.config.blend
        if grown:
            settings = grown_mask_settings(settings, self.config.deidentify.grown_mask_scale)
        out, stats = paste_faces(out, generated.float(), index, M, settings=settings)
        for k in list(stats.refused_indices) + list(stats.skipped_indices):
            faces[keep[k]][1].failed = "generated face refused by the blender (NaN, inf or outside the frame)"
        return out


def _stack_present(items: list[torch.Tensor | None]) -> torch.Tensor:
    """Stack tensors that the caller has already checked are present."""
    present = [t for t in items if t is not None]
    assert len(present) == len(items), "a tensor expected here is missing"
    return torch.stack(present)
