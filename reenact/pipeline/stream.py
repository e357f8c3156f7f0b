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

from reenact.blend import BlendSettings, paste_faces
from reenact.blend.masks import grown_mask_settings
from reenact.faces import (
    FaceDetections,
    FaceDetector,
    ffhq_template,
    similarity_from_points,
    warp_to_crop,
)
from reenact.faces.cadence import DetectionCadence
from reenact.faces.detect import ThresholdedDetector
from reenact.faces.track import FaceTracker, TrackedFaces, distinct_faces
from reenact.io import FrameChunk
from reenact.packs import LoadedPack
from reenact.pipeline.identity import IdentityPolicy, TrackIdentity, make_policy
from reenact.pipeline.mapping import make_mapping
from reenact.pipeline.plan import RunPlan
from reenact.pipeline.privacy import (
    Checker,
    PrivacyGuard,
    check_identities,
    checkers_for,
    count_faces,
    ladder_for,
    run_recognisers,
    untracked_faces,
)
from reenact.pipeline.report import RunReport
from reenact.pipeline.selection import FaceSelection
from reenact.pipeline.slots import FaceRecord, FrameSlot, FrameSlots
from reenact.temporal import AlignmentSmoother, TrackSmoother


def too_small(box: np.ndarray, min_face_size: float) -> bool:
    """Whether a face box (float [4], frame pixels) has a side under ``min_face_size`` pixels."""
    return bool(min(box[2] - box[0], box[3] - box[1]) < min_face_size)


def build_tracker(plan: RunPlan, pack: Any, fps: float, detector: FaceDetector | None = None) -> FaceTracker:
    """The tracker as the pipeline runs it: the pack's identity model for the appearance term
    (``tracker.appearance_weight``, ``tracker.min_similarity``), ``smoothing.points`` for its
    point filter, and the detector (``detector``, else the pack's) only when the plan has it
    detect on a subset of frames itself (``tracker.detect_every``)."""
    config = plan.config
    detector = (detector or pack.detector) if plan.tracker_detects else None
    return FaceTracker(config.tracker, detector=detector, encoder=pack.identity, fps=fps,
                       points=config.smoothing.points)


class FaceReplacer:
    """Steps 3-10 as an iterator transform over FrameChunks, doing what ``plan`` decided
    (:mod:`reenact.pipeline.plan`, bound to ``pack``: :meth:`RunPlan.bind`).

    ``policy``: the identity policy (built from the plan when not given: ``target``, the
    identity photo's code, for a ``target`` policy). ``reference``: the reference photo's
    code (``--faces reference:``). ``keep_frames``: frame indices kept (before, after) in
    ``kept`` for a preview. ``checkers``: the privacy checkers (default: the pack's).

    Detection follows the plan: its threshold and cadence (:class:`DetectionCadence`: the full
    pass on every ``full_every``-th frame, a light pass between); with ``keep_small_faces``
    faces too small to replace are tracked and redacted, never dropped; with
    ``redact_unconfirmed`` faces of tracks seen in fewer than ``tracker.min_hits`` frames are
    redacted too. Without them (reenact) faces too small to replace are dropped and the faces
    of every track, a face seen in one frame included, replaced.
    """

    def __init__(
        self,
        plan: RunPlan,
        pack: LoadedPack,
        fps: float,
        *,
        policy: IdentityPolicy | None = None,
        target: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        keep_frames: set[int] | None = None,
        checkers: list[Checker] | None = None,
    ) -> None:
        config = plan.config
        self.plan, self.pack = plan, pack
        self.device = pack.device
        # --method blur|pixelate|solid run without a generator: the alignment is only smoothed
        self.size = pack.generator.img_resolution if pack.generator is not None else 256
        self.template = ffhq_template(self.size).to(self.device)
        self.policy = policy if policy is not None else make_policy(plan, pack, target)
        self.report = RunReport(self.policy.similarity_key)
        self.select = FaceSelection(
            plan.faces, reference=reference.to(self.device) if reference is not None else None,
            threshold=plan.threshold, embed=self._embed_faces,
        )
        self.mapping = make_mapping(pack, config) if plan.synthetic else None
        self.guard: PrivacyGuard | None = None
        if plan.check_privacy:
            s = config.deidentify
            if checkers is None:
                checkers = checkers_for(run_recognisers(pack.identity, pack.recogniser), s.privacy_threshold)
            self.guard = PrivacyGuard(
                checkers, ladder_for(plan.method, s.head_redaction, s.redraws), self.report,
                render=self._rerender if plan.synthetic else None, redraw=self._redraw, redraws=s.redraws,
            )
            self.report.privacy = self.guard.describe()
        detection = plan.detection
        assert detection.full_every is not None
        self.detector = ThresholdedDetector(pack.detector, detection.threshold, plan.drop_under)
        self.tracker = build_tracker(plan, pack, fps, self.detector)
        self.cadence = DetectionCadence(self.detector, detection.full_every, detection.light_scale,
                                        config.tracker.scene_cut_threshold, detection.light_min_face)
        self.smooth_M = AlignmentSmoother(config.smoothing.alignment, fps, self.size)
        self.smooth_w = TrackSmoother(config.smoothing.latent, fps)
        self.slots = FrameSlots(config.max_batch, config.read.chunk_bytes)  # out as in: chunks bounded in bytes
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
                    # a face found twice (a low threshold's second peak) is one face: its twin's track covers it
                    raw = [d.select(distinct_faces(d)) for d in self.cadence.detect(frames)]
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
        # 1. each frame's chosen faces as records (redacted ones with the reason)
        taken = [self._records(faces) for faces in released]
        # 2. the identities of the tracks whose face is first synthesized in these frames, drawn
        #    together (not before: a track whose faces all start redacted draws none)
        first: dict[int, tuple[int, np.ndarray]] = {}
        for faces, (_present, records) in zip(released, taken, strict=True):
            for i, record, _count in records:
                track_id = record.track_id
                if record.failed is None and track_id not in self.identities and track_id not in first:
                    first[track_id] = (faces.frame_index, faces.points[i])
        self._identities_for(first)
        # 3. per frame: end the tracks that left, keep the records, smooth their alignment
        for faces, (present, records) in zip(released, taken, strict=True):
            slot = self.slots[faces.frame_index]
            slot.faces_seen = len(faces)
            self._end_tracks(self.active - present)
            self.active = present
            for i, record, count in records:
                if count is not None:
                    self.report.count(count)
                self.slots.add_face(faces.frame_index, record)
                if count == "unconfirmed_faces_redacted":
                    continue
                M = similarity_from_points(torch.from_numpy(faces.points[i : i + 1]).to(self.device),
                                           self.template)[0]
                with self.report.timer("smooth"):
                    self._take_M(self.smooth_M.push(record.track_id, faces.frame_index, M))
            if self.plan.cover_untracked and slot.raw is not None:
                for untracked in untracked_faces(slot.raw, faces.boxes):
                    self.slots.add_face(faces.frame_index, untracked)
            slot.tracked = True
        self._map_pending()

    def _records(self, faces: TrackedFaces) -> tuple[set[int], list[tuple[int, FaceRecord, str | None]]]:
        """A frame's chosen faces: the tracks present (confirmed ones) and per face (its row,
        its record, the report count of why it is redacted or None)."""
        chosen = self.select(faces)
        # deidentify: a face of a track seen in fewer than min_hits frames is redacted
        assert faces.confirmed is not None
        unconfirmed = {i for i in chosen if self.plan.redact_unconfirmed and not bool(faces.confirmed[i])}
        present = {int(faces.track_ids[i]) for i in chosen if i not in unconfirmed}
        records: list[tuple[int, FaceRecord, str | None]] = []
        for i in chosen:
            record = FaceRecord(int(faces.track_ids[i]), faces.boxes[i].copy(), faces.points[i].copy())
            count = None
            if i in unconfirmed:
                record.failed = f"track seen in fewer than tracker.min_hits={self.plan.config.tracker.min_hits} frames"
                count = "unconfirmed_faces_redacted"
            elif self.plan.keep_small_faces and too_small(record.box, self.plan.small_face):
                record.failed = f"face smaller than detector.min_face_size={self.plan.small_face:g} px"
                count = "small_faces_redacted"
            elif too_small(record.box, self.plan.synthetic_min_face):
                record.failed = (f"face smaller than deidentify.synthetic_min_face="
                                 f"{self.plan.synthetic_min_face:g} px")
                count = "small_faces_redacted"
            records.append((i, record, count))
        return present, records

    def _identities_for(self, first: dict[int, tuple[int, np.ndarray]]) -> None:
        """The identities of new tracks (track -> (frame index, five points float [5,2]) of its
        first synthesized face), from the policy in one batch (:meth:`IdentityPolicy.identities_for`):
        their first faces embedded in one call, their candidates drawn together."""
        if not first:
            return
        tracks = list(first)

        def originals() -> torch.Tensor:
            rows = sorted({fi for fi, _p in first.values()})
            frames = torch.stack([self.slots[fi].frame for fi in rows])
            index = torch.tensor([rows.index(first[t][0]) for t in tracks], dtype=torch.long, device=self.device)
            points = torch.from_numpy(np.stack([first[t][1] for t in tracks])).to(self.device)
            return self.pack.identity.embed(frames, index, points)

        with self.report.timer("identity"):
            identities = self.policy.identities_for(tracks, originals)
        for track_id, identity in zip(tracks, identities, strict=True):
            self.identities[track_id] = identity
            track = self.report.tracks[track_id]
            track.identity = self.policy.describe(identity)
            track.identity_failed = track.identity is not None and identity.failed is not None

    def _redraw(self, track_id: int) -> torch.Tensor | None:
        """The ladder's redraw rung: the track's next identity (from the policy, which returns a
        new one), kept for its later frames and recorded in its report; returns the new code."""
        identity, code = self.policy.redraw(track_id, self.identities[track_id])
        self.identities[track_id] = identity
        self.report.tracks[track_id].add_redraw(self.policy.describe(identity), found=code is not None)
        return code

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
        max_batch = self.plan.config.max_batch
        while self.to_map:
            batch, self.to_map = self.to_map[:max_batch], self.to_map[max_batch:]
            frames = torch.stack([self.slots[fi].frame for fi, _r in batch])
            codes = [self.identities[r.track_id].code for _fi, r in batch]
            ws = self._latents(frames, list(range(len(batch))), [r for _fi, r in batch], codes)
            with self.report.timer("smooth"):
                for (fi, r), w in zip(batch, ws, strict=True):
                    self._take_w(self.smooth_w.push(r.track_id, fi, w))

    def _latents(self, frames: torch.Tensor, rows: list[int], records: list[FaceRecord],
                 codes: list[torch.Tensor | None]) -> torch.Tensor:
        """Steps 5-6 for one batch (at most ``max_batch`` faces): align each face's crop from its
        frame (``frames[rows[k]]``, the record's ``M``) and map crop and identity code to a latent.

        Conventions: frames uint8 [T,H,W,3] (the input frames); returns ws float [F,num_ws,w_dim].
        """
        assert self.mapping is not None and len(records) <= self.plan.config.max_batch
        timer = self.report.timer
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        with timer("align"):
            crops = warp_to_crop(frames, index, _stack_present([r.M for r in records]), self.size)
        with timer("map"):
            return self.mapping(crops, _stack_present(codes).to(self.device), [r.track_id for r in records])

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
        # one frame (a large one: FrameSlots' byte bound) is a view of its decoded chunk, not a copy
        frames = slots[0].frame[None] if len(slots) == 1 else torch.stack([s.frame for s in slots])
        indices = [s.index for s in slots]
        faces = [(j, f) for j, s in enumerate(slots) for f in s.faces if f.ws is not None and f.failed is None]
        if self.guard is not None:  # a track already past the synthetic rungs is not synthesized
            faces = [(j, f) for j, f in faces if self.guard.start_rung(f) < self.guard.first_box]
        out = frames
        if faces:
            for _j, f in faces:
                assert f.ws is not None
                self.report.tracks[f.track_id].add_latent(f.ws)
            out = self._render(frames, faces, [f.ws for _j, f in faces], self.plan.config.blend)
            faces = [(j, f) for j, f in faces if f.failed is None]
        if self.guard is not None:
            out = self.guard.apply(frames, out, [(j, f) for j, s in enumerate(slots) for f in s.faces], indices)
        else:
            if faces:
                check_identities(out, faces, indices, self.pack.identity.embed, self.policy, self.identities,
                                 self.report)
            count_faces(slots, self.report)
        self.report.count("frames", len(slots))
        self.report.count("frames_with_faces", sum(1 for s in slots if s.faces_seen or s.faces))
        for j, i in enumerate(indices):
            if i in self.keep_frames:
                self.kept[i] = (frames[j].cpu().clone(), out[j].cpu().clone())
                self.kept_faces[i] = [(f.track_id, np.array(f.box, copy=True), f.failed) for f in slots[j].faces]
        pts = torch.tensor([s.pts for s in slots], dtype=torch.int64)
        return FrameChunk(out.cpu(), pts, indices[0])

    def _render(self, out: torch.Tensor, faces: list[tuple[int, FaceRecord]], ws: list[torch.Tensor | None],
                settings: BlendSettings) -> torch.Tensor:
        """Steps 8-9, the one render path (first renders and the ladder's): synthesize the latents
        ``ws`` (one per face) in batches of at most ``max_batch`` and paste each face into its row
        of ``out`` with ``settings``. Faces the blender refuses or finds outside the frame are
        marked failed.

        Conventions: out uint8 [T,H,W,3]; ``faces``: (row of ``out``, record with ``M``); ws
        float [num_ws,w_dim] each; returns the frames with the faces pasted (``out`` unchanged).
        """
        timer, max_batch = self.report.timer, self.plan.config.max_batch
        latents = _stack_present(ws)
        with timer("synthesize"), torch.no_grad():
            generated = torch.cat([
                self.pack.generator.synthesis(latents[k : k + max_batch], noise_mode="const")
                for k in range(0, latents.shape[0], max_batch)
            ])
        index = torch.tensor([j for j, _f in faces], dtype=torch.long, device=self.device)
        with timer("blend"):
            out, stats = paste_faces(out, generated.float(), index, _stack_present([f.M for _j, f in faces]),
                                     settings=settings)
        self.report.count("faces_refused_by_blend", stats.refused)
        for k in stats.refused_indices:
            faces[k][1].failed = "generated face refused by the blender (NaN or inf)"
        for k in stats.skipped_indices:
            faces[k][1].failed = "face outside the frame"
        return out

    def _rerender(self, frames: torch.Tensor, out: torch.Tensor, faces: list[tuple[int, FaceRecord]],
                  codes: list[torch.Tensor | None], grown: bool) -> torch.Tensor:
        """The ladder's synthetic rungs: render ``faces`` again into ``out``, with a new identity
        code (mapped from the face's crop of the input ``frames``, unsmoothed) or their own latent
        (code None), the blend mask grown by ``deidentify.grown_mask_scale`` when ``grown``;
        through the same batched path as first renders (:meth:`_latents`, :meth:`_render`)."""
        assert self.mapping is not None
        max_batch = self.plan.config.max_batch
        ws = [f.ws for _j, f in faces]
        new = [k for k, c in enumerate(codes) if c is not None]
        for b in range(0, len(new), max_batch):
            part = new[b : b + max_batch]
            mapped = self._latents(frames, [faces[k][0] for k in part], [faces[k][1] for k in part],
                                   [codes[k] for k in part])
            for k, w in zip(part, mapped, strict=True):
                ws[k] = w
        keep = [k for k, w in enumerate(ws) if w is not None and faces[k][1].M is not None]
        if not keep:
            return out
        settings = self.plan.config.blend
        if grown:
            settings = grown_mask_settings(settings, self.plan.config.deidentify.grown_mask_scale)
        return self._render(out, [faces[k] for k in keep], [ws[k] for k in keep], settings)


def _stack_present(items: list[torch.Tensor | None]) -> torch.Tensor:
    """Stack tensors that the caller has already checked are present."""
    present = [t for t in items if t is not None]
    assert len(present) == len(items), "a tensor expected here is missing"
    return torch.stack(present)
