"""The video pipeline: one stream from decoded frames to the encoded output, in numbered steps.

1. check inputs (video readable, output writable, identity photo has a face) before any work
2. decode in chunks (reader thread; :mod:`reenact.io`)
3. detect and track faces (bounded delay; :mod:`reenact.faces`)
4. smooth each track's alignment transform over time (:mod:`reenact.temporal`)
5. align: FFHQ-style crops at the generator's resolution
6. encode attributes and map them with the identity code to a latent w per face
   (trained mapper, or per-frame optimisation)
7. smooth each track's latent over time
8. synthesize the faces with the generator
9. blend them back into the frames (:mod:`reenact.blend`)
10. check identities of the output faces; in ``deidentify`` any face-frame that could not
    be replaced or fails the privacy check is blurred (fail-closed)
11. encode (writer thread; audio copied; atomic) and write the report beside the output

All faces of the frames that are ready together are batched through the networks. Memory
is bounded by the chunk size and the tracker and smoother delays, never by video length.

Conventions: frames uint8 ``[T,H,W,3]`` RGB; crops and generated faces float
``[F,3,R,R]`` in [-1,1]; affine matrices ``[F,2,3]`` map frame pixels to crop pixels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from reenact.batch import Job
from reenact.blend import BlendSettings, paste_faces
from reenact.config import dump_yaml, to_dict
from reenact.device import resolve_device
from reenact.errors import ConfigError, InputError, PipelineError
from reenact.faces import (
    DetectorSettings,
    FaceDetections,
    cosine_similarity,
    ffhq_template,
    identity_from_photo,
    similarity_from_points,
    warp_to_crop,
)
from reenact.faces.boxes import box_iou
from reenact.faces.track import FaceTracker, TrackedFaces, TrackerSettings
from reenact.io import (
    EncodeSettings,
    FrameChunk,
    StreamStats,
    VideoInfo,
    VideoWriter,
    check_output_path,
    open_video,
    probe,
    run_stream,
)
from reenact.io.reader import ReadSettings
from reenact.models.optimize import OptimizeSettings, make_optimizing_mapping
from reenact.packs import LoadedPack, PackSettings, load_pack
from reenact.redact import blur_boxes
from reenact.temporal import SmoothingSettings, TrackSmoother

log = logging.getLogger(__name__)

Mode = Literal["reenact", "deidentify"]


@dataclass(frozen=True)
class DeidentifySettings:
    """How synthetic identities are drawn and checked.

    ``threshold``: cosine similarity to the original person that an identity (drawn or
    rendered) must stay below; ``None`` uses the identity model's same-person threshold.
    ``max_draws``: identities drawn per track before giving up (the track is then blurred).
    ``truncation``: StyleGAN truncation of drawn identities. ``fail_closed``: blur every
    face-frame that could not be replaced or fails the check (never leave it as it was).
    """

    threshold: float | None = None
    max_draws: int = 32
    truncation: float = 0.7
    fail_closed: bool = True


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides what the pipeline does; written next to every output."""

    models: PackSettings = PackSettings()
    mapper: Literal["trained", "optimize"] = "trained"
    faces: str = "all"
    device: str = "auto"
    seed: int = 0
    max_batch: int = 32
    read: ReadSettings = ReadSettings()
    detector: DetectorSettings = DetectorSettings()
    tracker: TrackerSettings = TrackerSettings()
    smoothing: SmoothingSettings = SmoothingSettings()
    blend: BlendSettings = BlendSettings()
    encode: EncodeSettings = EncodeSettings()
    deidentify: DeidentifySettings = DeidentifySettings()
    optimize: OptimizeSettings = OptimizeSettings()

    def __post_init__(self) -> None:
        if self.faces not in ("all", "largest") and not self.faces.startswith("reference:"):
            raise ConfigError(f"faces must be all, largest or reference:IMAGE, got {self.faces!r}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")


# --- latents -------------------------------------------------------------------------------


class LatentMapper(Protocol):
    """Per face-frame: aligned crop + identity code -> generator latent."""

    def __call__(self, crops: torch.Tensor, id_codes: torch.Tensor, track_ids: list[int]) -> torch.Tensor:
        """crops float [F,3,R,R] in [-1,1]; id_codes float [F,D]; returns ws float [F,num_ws,w_dim]."""
        ...

    def report(self) -> dict[int, dict[str, Any]]:
        """Per-track facts for the run's report (empty when there is nothing to say)."""
        ...

    def end_track(self, track_id: int) -> None:
        """The track has ended: free whatever is kept for it."""
        ...


class TrainedMapping:
    """The paper's fast path: ``w = mapper(id ++ E_attr(crop))``, one w for every style layer."""

    def __init__(self, pack: LoadedPack) -> None:
        if pack.attribute_encoder is None or pack.mapper is None:
            raise ConfigError(f"model pack {pack.name!r} has no trained mapper loaded; use --mapper optimize")
        self.encoder, self.mapper, self.num_ws = pack.attribute_encoder, pack.mapper, pack.generator.num_ws

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, id_codes: torch.Tensor, track_ids: list[int]) -> torch.Tensor:
        attr = self.encoder(crops)
        w = self.mapper.map(id_codes.to(attr.dtype), attr)
        return w[:, None, :].repeat(1, self.num_ws, 1)

    def report(self) -> dict[int, dict[str, Any]]:
        return {}

    def end_track(self, track_id: int) -> None:
        return None


def make_mapping(pack: LoadedPack, config: PipelineConfig) -> LatentMapper:
    """The latent mapper that ``config.mapper`` names (``optimize``: :mod:`reenact.models.optimize`,
    started from the trained mapper where the pack has one)."""
    if config.mapper == "trained":
        return TrainedMapping(pack)
    mapping = make_optimizing_mapping(pack, config)
    if pack.trained and pack.mapper is not None:
        mapping.initial = TrainedMapping(pack)  # a track's first frame starts from the trained mapper
    return mapping


# --- identities ----------------------------------------------------------------------------


@dataclass
class TrackIdentity:
    """The identity code given to one track, and what was checked about it."""

    code: torch.Tensor | None
    original: torch.Tensor | None = None
    draws: int = 0
    similarity_to_original: float | None = None
    failed: str | None = None


class SyntheticIdentities:
    """Deidentify: one synthetic identity per track, drawn from the generator and checked.

    Track ``k`` with seed ``s`` draws its ``i``-th candidate from ``z ~ N(0, I)`` seeded by
    ``(s, k, i)``: the same seed gives the same identities, another seed other ones. A
    candidate is kept when its identity similarity to the track's original face is below
    the threshold.
    """

    def __init__(self, pack: LoadedPack, settings: DeidentifySettings, seed: int, threshold: float) -> None:
        self.pack, self.settings, self.seed, self.threshold = pack, settings, seed, threshold

    @torch.no_grad()
    def draw(self, track_id: int, original: torch.Tensor) -> TrackIdentity:
        G = self.pack.generator
        device = self.pack.device
        R = G.img_resolution
        template = ffhq_template(R)[None].to(device)
        best = TrackIdentity(code=None, original=original)
        for attempt in range(self.settings.max_draws):
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + track_id * 10_007 + attempt) % 2**63)
            z = torch.randn(1, G.z_dim, generator=gen).to(device)
            ws = G.mapping(z, None, truncation_psi=self.settings.truncation)
            img = G.synthesis(ws, noise_mode="const")
            frame = ((img[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            code = self.pack.identity.embed(frame[None], torch.zeros(1, dtype=torch.long, device=device), template)
            sim = float(cosine_similarity(code, original[None].to(code.device)).reshape(-1)[0])
            best.draws = attempt + 1
            if sim < self.threshold:
                best.code, best.similarity_to_original = code[0], sim
                return best
        best.failed = f"no identity below similarity {self.threshold} in {self.settings.max_draws} draws"
        return best


# --- the stream ----------------------------------------------------------------------------


@dataclass
class FaceRecord:
    """One face in one frame as it moves through steps 4-10."""

    track_id: int
    box: np.ndarray
    points: np.ndarray
    M: torch.Tensor | None = None
    ws: torch.Tensor | None = None
    failed: str | None = None


@dataclass
class FrameSlot:
    frame: torch.Tensor
    pts: int
    raw: FaceDetections | None = None
    tracked: bool = False
    faces: list[FaceRecord] = field(default_factory=list)
    faces_seen: int = 0

    def ready(self) -> bool:
        return self.tracked and all(f.ws is not None or f.failed is not None for f in self.faces)


@dataclass
class TrackReport:
    frames: int = 0
    replaced: int = 0
    blurred: int = 0
    similarities: list[float] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    identity: TrackIdentity | None = None
    last_w: torch.Tensor | None = None
    w_steps: list[float] = field(default_factory=list)

    def add_latent(self, ws: torch.Tensor) -> None:
        """Record the latent of the next frame (for the frame-to-frame W jitter)."""
        w = ws.detach().float().reshape(-1).cpu()
        if self.last_w is not None:
            self.w_steps.append(float((w - self.last_w).norm()) / math.sqrt(w.numel()))
        self.last_w = w

    def summary(self, mode: Mode) -> dict[str, Any]:
        sims = self.similarities
        key = "similarity_to_target" if mode == "reenact" else "similarity_to_original"
        out: dict[str, Any] = {"frames": self.frames, "replaced": self.replaced, "blurred": self.blurred}
        out["w_jitter"] = float(np.mean(self.w_steps)) if self.w_steps else None
        out[key] = {
            "mean": float(np.mean(sims)) if sims else None,
            "min": float(np.min(sims)) if sims else None,
            "max": float(np.max(sims)) if sims else None,
            "per_frame": [[i, round(v, 4)] for i, v in zip(self.frame_indices, sims, strict=True)],
        }
        if self.identity is not None and mode == "deidentify":
            code = self.identity.code
            out["synthetic_identity"] = {
                "draws": self.identity.draws,
                "code": [round(float(v), 5) for v in code.tolist()] if code is not None else None,
                "similarity_to_original": self.identity.similarity_to_original,
                "failed": self.identity.failed,
            }
        return out


class StageTimer:
    """Busy seconds per pipeline stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, stage: str) -> _Timed:
        return _Timed(self, stage)


class _Timed:
    def __init__(self, timer: StageTimer, stage: str) -> None:
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.seconds[self.stage] += time.perf_counter() - self.start


class FaceReplacer:
    """Steps 3-10 as an iterator transform over FrameChunks (see the module docstring)."""

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
    ) -> None:
        if mode == "reenact" and target is None:
            raise ConfigError("reenact needs a target identity")
        if mode == "deidentify" and config.deidentify.fail_closed and config.tracker.detect_every != 1:
            raise ConfigError(
                f"deidentify is fail-closed and must check every frame for faces, but tracker.detect_every is "
                f"{config.tracker.detect_every}; use detect_every 1 (or deidentify.fail_closed false)"
            )
        self.pack, self.config, self.mode = pack, config, mode
        self.device = pack.device
        self.size = pack.generator.img_resolution
        self.template = ffhq_template(self.size).to(self.device)
        self.target = target.to(self.device) if target is not None else None
        self.reference = reference.to(self.device) if reference is not None else None
        self.threshold = (
            config.deidentify.threshold if config.deidentify.threshold is not None else pack.match_threshold
        )
        self.mapping = make_mapping(pack, config)
        self.synthetic = SyntheticIdentities(pack, config.deidentify, config.seed, self.threshold)
        self.detect_here = config.tracker.detect_every == 1
        self.tracker = FaceTracker(
            config.tracker, detector=None if self.detect_here else pack.detector, fps=fps
        )
        self.smooth_M = TrackSmoother(config.smoothing, fps)
        self.smooth_w = TrackSmoother(config.smoothing, fps)
        self.slots: dict[int, FrameSlot] = {}
        self.next_emit = 0
        self.next_index = 0
        self.records: dict[tuple[int, int], FaceRecord] = {}
        self.to_map: list[tuple[int, FaceRecord]] = []
        self.active: set[int] = set()
        self.identities: dict[int, TrackIdentity] = {}
        self.reference_match: dict[int, bool] = {}
        self.reference_similarity: dict[int, float] = {}
        self.tracks: dict[int, TrackReport] = defaultdict(TrackReport)
        self.timer = StageTimer()
        self.counts = {"frames": 0, "frames_with_faces": 0, "faces_replaced": 0, "faces_blurred": 0,
                       "faces_refused_by_blend": 0, "untracked_detections_blurred": 0}
        self.keep_frames = keep_frames or set()
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._frame_of: list[int] = []

    # step 3 ------------------------------------------------------------------------------
    def __call__(self, chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for chunk in chunks:
            frames = chunk.frames.to(self.device)
            for i in range(frames.shape[0]):
                self.slots[chunk.start_index + i] = FrameSlot(frames[i], int(chunk.pts[i]))
            self.next_index = chunk.start_index + frames.shape[0]
            raw: list[FaceDetections] | None = None
            if self.detect_here:
                with self.timer("detect"):
                    raw = self.pack.detector.detect(frames)
                for i, dets in enumerate(raw):
                    self.slots[chunk.start_index + i].raw = dets
            with self.timer("track"):
                released = self.tracker.push(frames, raw)
            self._take_tracked(released)
            yield from self._emit()
        with self.timer("track"):
            released = self.tracker.flush()
        self._take_tracked(released)
        self._end_tracks(set(self.active))
        yield from self._emit(final=True)

    def _select(self, faces: TrackedFaces) -> list[int]:
        n = len(faces)
        if n == 0 or self.config.faces == "all":
            return list(range(n))
        if self.config.faces == "largest":
            wh = faces.boxes[:, 2:] - faces.boxes[:, :2]
            return [int(np.argmax(wh[:, 0] * wh[:, 1]))]
        chosen = []
        for i, track_id in enumerate(faces.track_ids.tolist()):
            if track_id not in self.reference_match:
                code = self._embed_original(faces.frame_index, faces.points[i : i + 1])
                assert self.reference is not None
                sim = float(cosine_similarity(code, self.reference[None]).reshape(-1)[0])
                self.reference_match[track_id] = sim >= self.threshold
                self.reference_similarity[track_id] = sim
            if self.reference_match[track_id]:
                chosen.append(i)
        return chosen

    def _embed_original(self, frame_index: int, points: np.ndarray) -> torch.Tensor:
        frame = self.slots[frame_index].frame
        with self.timer("identity"):
            return self.pack.identity.embed(
                frame[None], torch.zeros(points.shape[0], dtype=torch.long, device=self.device),
                torch.from_numpy(points).to(self.device),
            )

    def _take_tracked(self, released: list[TrackedFaces]) -> None:
        for faces in released:
            slot = self.slots[faces.frame_index]
            slot.faces_seen = len(faces)
            chosen = self._select(faces)
            present = {int(faces.track_ids[i]) for i in chosen}
            self._end_tracks(self.active - present)
            self.active = present
            for i in chosen:
                track_id = int(faces.track_ids[i])
                record = FaceRecord(track_id, faces.boxes[i].copy(), faces.points[i].copy())
                slot.faces.append(record)
                self.records[(faces.frame_index, track_id)] = record
                self._identity_for(track_id, faces.frame_index, faces.points[i : i + 1])
                M = similarity_from_points(torch.from_numpy(faces.points[i : i + 1]).to(self.device), self.template)[0]
                with self.timer("smooth"):
                    self._take_M(self.smooth_M.push(track_id, faces.frame_index, M))
            if self.mode == "deidentify" and slot.raw is not None:
                self._cover_untracked(slot, faces)
            slot.tracked = True
        self._map_pending()

    def _identity_for(self, track_id: int, frame_index: int, points: np.ndarray) -> None:
        if track_id in self.identities:
            return
        if self.mode == "reenact":
            self.identities[track_id] = TrackIdentity(code=self.target)
            return
        original = self._embed_original(frame_index, points)[0]
        with self.timer("identity"):
            self.identities[track_id] = self._same_person_identity(original) or self.synthetic.draw(track_id, original)
        self.tracks[track_id].identity = self.identities[track_id]

    def _same_person_identity(self, original: torch.Tensor) -> TrackIdentity | None:
        """Deidentify: a person seen before (an earlier track, e.g. before a scene cut) keeps the
        synthetic identity they had, as long as it still passes the check against this face."""
        best, best_sim = None, self.threshold
        for earlier in self.identities.values():
            if earlier.code is None or earlier.original is None:
                continue
            sim = float(cosine_similarity(original[None], earlier.original[None]).reshape(-1)[0])
            if sim >= best_sim:
                best, best_sim = earlier, sim
        if best is None or best.code is None:
            return None
        to_original = float(cosine_similarity(best.code[None], original[None]).reshape(-1)[0])
        if to_original >= self.threshold:
            return None
        return TrackIdentity(code=best.code, original=original, draws=0, similarity_to_original=to_original)

    def _cover_untracked(self, slot: FrameSlot, faces: TrackedFaces) -> None:
        """Deidentify: detections that no released track covers are blurred (fail-closed).

        Faces of tracks that ``--faces`` left out on purpose count as covered: they stay as they are.
        """
        assert slot.raw is not None
        for box in slot.raw.boxes:
            covered = bool((box_iou(box, faces.boxes) > 0.3).any())
            if not covered:
                slot.faces.append(FaceRecord(-1, box.copy(), np.zeros((5, 2), np.float32), failed="untracked"))

    # steps 4-7 ---------------------------------------------------------------------------
    def _take_M(self, released: list[tuple[int, int, torch.Tensor]]) -> None:
        for track_id, frame_index, M in released:
            record = self.records[(frame_index, track_id)]
            record.M = M
            identity = self.identities[track_id]
            if identity.code is None:
                record.failed = identity.failed or "no identity"
                continue
            self.to_map.append((frame_index, record))

    def _map_pending(self) -> None:
        while self.to_map:
            batch, self.to_map = self.to_map[: self.config.max_batch], self.to_map[self.config.max_batch :]
            frames = torch.stack([self.slots[fi].frame for fi, _r in batch])
            M = torch.stack([r.M for _fi, r in batch if r.M is not None])
            with self.timer("align"):
                crops = warp_to_crop(frames, torch.arange(len(batch), device=self.device), M, self.size)
            codes = []
            for _fi, r in batch:
                code = self.identities[r.track_id].code
                assert code is not None
                codes.append(code)
            with self.timer("map"):
                ws = self.mapping(crops, torch.stack(codes).to(self.device), [r.track_id for _fi, r in batch])
            with self.timer("smooth"):
                for (fi, r), w in zip(batch, ws, strict=True):
                    for track_id, frame_index, w_s in self.smooth_w.push(r.track_id, fi, w):
                        self.records[(frame_index, track_id)].ws = w_s

    def _end_tracks(self, ended: set[int]) -> None:
        for track_id in sorted(ended):
            with self.timer("smooth"):
                self._take_M(self.smooth_M.end_track(track_id))
            self._map_pending()
            with self.timer("smooth"):
                for tid, frame_index, w_s in self.smooth_w.end_track(track_id):
                    self.records[(frame_index, tid)].ws = w_s
            self.mapping.end_track(track_id)

    # steps 8-10 --------------------------------------------------------------------------
    def _emit(self, final: bool = False) -> Iterator[FrameChunk]:
        ready: list[int] = []
        while self.next_emit in self.slots and self.slots[self.next_emit].ready():
            ready.append(self.next_emit)
            self.next_emit += 1
        if final and self.next_emit in self.slots:
            raise PipelineError(f"frame {self.next_emit} was never completed by the face stages")
        for start in range(0, len(ready), self.config.max_batch):
            yield self._finish(ready[start : start + self.config.max_batch])

    def _finish(self, indices: list[int]) -> FrameChunk:
        slots = [self.slots.pop(i) for i in indices]
        self._frame_of = indices
        for i in indices:
            for key in [k for k in self.records if k[0] == i]:
                del self.records[key]
        frames = torch.stack([s.frame for s in slots])
        faces = [(j, f) for j, s in enumerate(slots) for f in s.faces if f.ws is not None and f.failed is None]
        out = frames
        if faces:
            ws = torch.stack([f.ws for _j, f in faces if f.ws is not None])
            for _j, f in faces:
                if f.ws is not None:
                    self.tracks[f.track_id].add_latent(f.ws)
            with self.timer("synthesize"), torch.no_grad():
                generated = torch.cat([
                    self.pack.generator.synthesis(ws[k : k + self.config.max_batch], noise_mode="const")
                    for k in range(0, ws.shape[0], self.config.max_batch)
                ])
            index = torch.tensor([j for j, _f in faces], dtype=torch.long, device=self.device)
            M = torch.stack([f.M for _j, f in faces if f.M is not None])
            with self.timer("blend"):
                out, stats = paste_faces(frames, generated.float(), index, M, settings=self.config.blend)
            self.counts["faces_refused_by_blend"] += stats.refused
            for k in stats.refused_indices:
                faces[k][1].failed = "generated face refused by the blender (NaN or inf)"
            for k in stats.skipped_indices:
                faces[k][1].failed = "face outside the frame"
            faces = [(j, f) for j, f in faces if f.failed is None]
            if faces:
                self._check(out, faces)
        out = self._redact(out, slots)
        self.counts["frames"] += len(slots)
        self.counts["frames_with_faces"] += sum(1 for s in slots if s.faces_seen or s.faces)
        for i, j in zip(indices, range(len(indices)), strict=True):
            if i in self.keep_frames:
                self.kept[i] = (frames[j].cpu().clone(), out[j].cpu().clone())
        pts = torch.tensor([s.pts for s in slots], dtype=torch.int64)
        return FrameChunk(out.cpu(), pts, indices[0])

    def _check(self, out: torch.Tensor, faces: list[tuple[int, FaceRecord]]) -> None:
        """Step 10: identity of every output face against the target or the original."""
        index = torch.tensor([j for j, _f in faces], dtype=torch.long, device=self.device)
        points = torch.from_numpy(np.stack([f.points for _j, f in faces])).to(self.device)
        with self.timer("identity"):
            codes = self.pack.identity.embed(out, index, points)
        for (j, record), code in zip(faces, codes, strict=True):
            identity = self.identities[record.track_id]
            ref = self.target if self.mode == "reenact" else identity.original
            assert ref is not None
            sim = float(cosine_similarity(code[None], ref[None].to(code.device)).reshape(-1)[0])
            self.tracks[record.track_id].similarities.append(sim)
            self.tracks[record.track_id].frame_indices.append(self._frame_of[j])
            if self.mode == "deidentify" and sim >= self.threshold:
                record.failed = f"output face still similar to the original ({sim:.3f} >= {self.threshold})"

    def _redact(self, out: torch.Tensor, slots: list[FrameSlot]) -> torch.Tensor:
        """Count every face once (replaced, blurred or left) and blur the failed ones in deidentify."""
        blur_all = self.mode == "deidentify" and self.config.deidentify.fail_closed
        rows = []
        for j, slot in enumerate(slots):
            failed = [f for f in slot.faces if f.failed is not None]
            for f in slot.faces:
                if f.track_id == -1:
                    self.counts["untracked_detections_blurred"] += int(blur_all)
                    continue
                report = self.tracks[f.track_id]
                report.frames += 1
                if f.failed is None:
                    report.replaced += 1
                    self.counts["faces_replaced"] += 1
                else:
                    report.blurred += int(blur_all)
            if blur_all and failed:
                self.counts["faces_blurred"] += len(failed)
                with self.timer("blend"):
                    rows.append(blur_boxes(out[j], torch.from_numpy(np.stack([f.box for f in failed]))))
            else:
                rows.append(out[j])
        return torch.stack(rows)


# --- one video -----------------------------------------------------------------------------


_PACK_CACHE: dict[tuple[Any, ...], LoadedPack] = {}


def cached_pack(config: PipelineConfig, device: torch.device) -> LoadedPack:
    """Load the pack once per process (folder runs reuse it for every video)."""
    need_mapper = config.mapper == "trained"
    key = (config.models, config.detector, str(device), need_mapper)
    if key not in _PACK_CACHE:
        _PACK_CACHE[key] = load_pack(config.models, device=device, detector_settings=config.detector,
                                     need_mapper=need_mapper)
    return _PACK_CACHE[key]


def report_paths(output: Path) -> dict[str, Path]:
    """Files written beside an output video."""
    stem = output.with_suffix("")
    return {
        "report": Path(f"{stem}.report.json"),
        "config": Path(f"{stem}.config.yaml"),
        "preview": Path(f"{stem}.preview.png"),
    }


def check_inputs(
    source: Path | None,
    output: Path | None,
    mode: Mode,
    config: PipelineConfig,
    *,
    identity: str | Path | None = None,
    overwrite: bool = False,
) -> VideoInfo | None:
    """Step 1: everything that can be checked before any model is loaded (also for --dry-run).

    The video is probed (when ``source`` is a file), the output checked, the identity and
    reference photos read, the pack name, device and mapper requirements validated. Returns
    the video's info, or None when ``source`` is None (a folder run checks each file later).
    """
    info = probe(source) if source is not None else None
    if source is not None and output is not None:
        check_output_path(source, output, overwrite)
    if mode == "reenact" and identity is None:
        raise InputError("reenact needs --identity PHOTO: the face to put on the video")
    if identity is not None:
        _check_photo(Path(identity), "identity photo (--identity)")
    if config.faces.startswith("reference:"):
        _check_photo(Path(config.faces.split(":", 1)[1]), "reference photo (--faces reference:...)")
    if config.models.pack not in ("tiny", "full"):
        raise ConfigError(f"unknown model pack {config.models.pack!r}; known packs: tiny, full")
    resolve_device(config.device)
    if config.mapper == "optimize":
        if config.models.identity_model is None and not (
            config.models.pack == "full" or config.models.faces_backend == "insightface"
        ):
            raise ConfigError(
                "--mapper optimize needs a differentiable ONNX identity model: give --identity-model "
                "with --identity-mean/--identity-std, or use the insightface face backend"
            )
        if not config.optimize.landmark_model.path and config.optimize.weights.landmarks > 0:
            raise ConfigError("--mapper optimize needs a 68-point landmark ONNX model: give --landmark-model")
    return info


def _check_photo(path: Path, what: str) -> None:
    from reenact.io import read_image

    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        read_image(path)
    except InputError as exc:
        raise InputError(f"{what} {path} cannot be used: {exc}") from exc


def process_video(
    source: str | Path,
    output: str | Path,
    mode: Mode,
    config: PipelineConfig = PipelineConfig(),
    *,
    identity: str | Path | None = None,
    overwrite: bool = False,
    preview: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the pipeline on one video and write the output, its report and resolved config.

    Returns the report (also written as JSON beside the output). Raises a ReenactError
    naming the problem before any work when the inputs cannot be used.
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    info = check_inputs(source, output, mode, config, identity=identity, overwrite=overwrite)
    assert info is not None
    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        pack = cached_pack(config, device)
    target = reference = None
    warnings: list[str] = []
    if mode == "reenact":
        assert identity is not None
        photo = identity_from_photo(identity, pack.detector, pack.identity)
        target = photo.embedding
        score = float(photo.detections.scores[photo.index_used])
        if score < config.optimize.min_target_score:
            warnings.append(f"identity photo {identity}: face detected with score {score:.3f} < "
                            f"{config.optimize.min_target_score}; use a sharper, frontal photo")
            log.warning(warnings[-1])
    if config.faces.startswith("reference:"):
        reference = identity_from_photo(config.faces.split(":", 1)[1], pack.detector, pack.identity).embedding
    keep = _preview_frames(info) if preview else set()
    replacer = FaceReplacer(pack, config, mode, info.avg_fps or 25.0, target=target, reference=reference, keep_frames=keep)

    def transform(chunks: Iterator[FrameChunk]) -> Iterator[FrameChunk]:
        for chunk in replacer(chunks):
            if progress is not None:
                progress(chunk.start_index + len(chunk), info.frame_count)
            yield chunk

    with open_video(source, chunk_size=config.read.chunk_size, backend=config.read.backend) as reader:
        with VideoWriter(output, info, source=source, overwrite=overwrite, **dataclasses.asdict(config.encode)) as writer:
            stream = run_stream(reader, transform, writer)
    report = _report(source, output, mode, config, pack, info, replacer, stream, time.perf_counter() - started)
    report["identity_photo"] = _photo_record(identity)
    report["warnings"].extend(warnings)
    if reference is not None:
        report["reference_similarity"] = {str(k): v for k, v in sorted(replacer.reference_similarity.items())}
        if replacer.reference_similarity and not any(replacer.reference_match.values()):
            report["warnings"].append(
                f"nobody matched the reference photo (best similarity "
                f"{max(replacer.reference_similarity.values()):.3f} < {replacer.threshold}); nothing was changed"
            )
    failed = [k for k, t in replacer.tracks.items() if t.identity is not None and t.identity.failed]
    if failed:
        report["warnings"].append(
            f"{len(failed)} track(s) got no synthetic identity that passes the privacy check; their faces were "
            "blurred (fail-closed). With an ONNX identity model, check --identity-mean/--identity-std"
        )
    for warning in report["warnings"]:
        log.warning("%s: %s", source.name, warning)
    if replacer.counts["frames_with_faces"] == 0:
        log.warning("%s: no faces found; the output is the input re-encoded", source)
        report["warnings"].append("no faces found: the output is the input re-encoded")
    paths = report_paths(output)
    _write_atomic(paths["report"], json.dumps(report, indent=2))
    dump_yaml(config, paths["config"])
    if preview:
        _write_preview(replacer.kept, paths["preview"])
        report["preview"] = str(paths["preview"])
    return report


def _photo_record(photo: str | Path | None) -> dict[str, str] | None:
    """Which identity photo a run used (path and content hash), so re-runs can spot a change."""
    if photo is None:
        return None
    import hashlib

    return {"path": str(Path(photo).absolute()), "sha256": hashlib.sha256(Path(photo).read_bytes()).hexdigest()}


def stale_reason(output: Path, mode: Mode, config: PipelineConfig, identity: str | Path | None) -> str | None:
    """Why an existing output was made differently from what this run would make, or None.

    Compares the report written beside it: mode, resolved settings and identity photo.
    """
    path = report_paths(output)["report"]
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no readable report beside it"
    if report.get("mode") != mode:
        return f"it was made by {report.get('mode')}"
    if report.get("config") != to_dict(config):
        return "it was made with other settings"
    made_with = (report.get("identity_photo") or {}).get("sha256")
    wanted = (_photo_record(identity) or {}).get("sha256")
    if made_with != wanted:
        return "it was made with another identity photo"
    return None


def _preview_frames(info: VideoInfo, count: int = 4) -> set[int]:
    n = max(info.frame_count, 1)
    return {min(n - 1, round(k * (n - 1) / max(count - 1, 1))) for k in range(count)}


def _report(
    source: Path, output: Path, mode: Mode, config: PipelineConfig, pack: LoadedPack, info: VideoInfo,
    replacer: FaceReplacer, stream: StreamStats, seconds: float,
) -> dict[str, Any]:
    stages = {"decode": stream.read_s, **replacer.timer.seconds, "encode": stream.write_s}
    return {
        "mode": mode,
        "input": str(source),
        "output": str(output),
        "models": pack.describe(),
        "frames": replacer.counts["frames"],
        "fps_processed": replacer.counts["frames"] / seconds if seconds > 0 else None,
        "seconds": seconds,
        "stage_seconds": stages,
        "stream": dataclasses.asdict(stream),
        "counts": replacer.counts,
        "identity_threshold": replacer.threshold,
        "tracks": {str(k): v.summary(mode) for k, v in sorted(replacer.tracks.items())},
        "mapper": {"kind": config.mapper, "tracks": {str(k): v for k, v in replacer.mapping.report().items()}},
        "video": {"width": info.width, "height": info.height, "fps": info.avg_fps, "frame_count": info.frame_count},
        "config": to_dict(config),
        "warnings": [] if pack.trained else [f"model pack {pack.name!r} is untrained: a smoke test, not a result"],
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_preview(kept: dict[int, tuple[torch.Tensor, torch.Tensor]], path: Path) -> None:
    """A PNG sheet: one row per kept frame, before | after."""
    from PIL import Image

    if not kept:
        return
    rows = [torch.cat([before, after], dim=1) for _i, (before, after) in sorted(kept.items())]
    width = max(r.shape[1] for r in rows)
    sheet = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[1])) for r in rows], dim=0)
    scale = min(1.0, 1600 / max(sheet.shape[0], sheet.shape[1]))
    image = Image.fromarray(sheet.numpy())
    if scale < 1:
        image = image.resize((max(1, math.floor(image.width * scale)), max(1, math.floor(image.height * scale))))
    tmp = path.with_name(f".{path.name}.partial.png")
    image.save(tmp)
    tmp.replace(path)


def video_job(
    job: Job, *, mode: Mode, config: PipelineConfig, identity: str | Path | None, overwrite: bool, preview: bool
) -> dict[str, Any]:
    """Folder runs: one video as a batch task (picklable through functools.partial)."""
    report = process_video(job.source, job.output, mode, config, identity=identity, overwrite=overwrite,
                           preview=preview)
    return {"frames": report["frames"], "tracks": len(report["tracks"]), "counts": report["counts"]}
