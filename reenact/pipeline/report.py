"""The run report: counts, per-track facts, stage times and warnings, owned by one object."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reenact.config import to_dict
from reenact.pipeline.settings import PipelineConfig, parse_faces

COUNTS = ("frames", "frames_with_faces", "faces_replaced", "faces_blurred", "faces_refused_by_blend",
          "untracked_detections_blurred", "small_faces_redacted", "unconfirmed_faces_redacted",
          "frames_light_detected", "privacy_checks_carried")


@dataclass
class TrackReport:
    """What happened to one track: frames, replaced/blurred faces, output similarities, W jitter."""

    frames: int = 0
    replaced: int = 0
    blurred: int = 0
    similarities: list[float] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    identity: dict[str, Any] | None = None
    identity_failed: bool = False
    #: each redraw of the privacy ladder: the track's identity after it, and whether a new one was found
    redraws: list[dict[str, Any]] = field(default_factory=list)
    last_w: torch.Tensor | None = None
    w_steps: list[float] = field(default_factory=list)
    rungs: dict[str, int] = field(default_factory=dict)
    max_similarity: dict[str, float] = field(default_factory=dict)
    #: per checker, the smallest margin seen to the operating point and to the baseline
    min_margin: dict[str, dict[str, float]] = field(default_factory=dict)
    failed_checks: int = 0
    #: face-frames whose privacy check was carried from the track's last measured check (the
    #: re-check rule of reenact.pipeline.privacy.guard): redacted on that rung, not measured
    carried: int = 0
    privacy_frames: list[list[Any]] = field(default_factory=list)

    def add_latent(self, ws: torch.Tensor) -> None:
        """Record the latent of the next frame (for the frame-to-frame W jitter)."""
        w = ws.detach().float().reshape(-1).cpu()
        if self.last_w is not None:
            self.w_steps.append(float((w - self.last_w).norm()) / math.sqrt(w.numel()))
        self.last_w = w

    def add_redraw(self, identity: dict[str, Any] | None, found: bool) -> None:
        """Record one redraw of the track's identity (the ladder's redraw rung)."""
        self.redraws.append({**(identity or {}), "found": found})

    def add_similarity(self, frame_index: int, similarity: float) -> None:
        self.frame_indices.append(frame_index)
        self.similarities.append(similarity)

    def add_privacy(self, frame_index: int, rung: str, similarities: dict[str, float], passed: bool,
                    reason: str | None, margins: dict[str, dict[str, float]] | None = None,
                    carried_from: int | None = None) -> None:
        """One face-frame leaving the privacy ladder on ``rung`` with each checker's similarity
        and its margins (per checker: to the operating point, to the same-context baseline).
        ``carried_from``: the frame whose measured check this face-frame carries (then it has
        no similarities or margins of its own, and its reason names that frame)."""
        self.frames += 1
        if carried_from is not None:
            self.carried += 1
            reason = reason or f"carried from the check at frame {carried_from}"
        if rung in ("synthetic", "redraw", "grown_mask"):
            self.replaced += 1
        else:
            self.blurred += 1
        self.rungs[rung] = self.rungs.get(rung, 0) + 1
        self.failed_checks += int(not passed)
        for name, sim in similarities.items():
            self.max_similarity[name] = max(self.max_similarity.get(name, -1.0), sim)
        for name, row in (margins or {}).items():
            least = self.min_margin.setdefault(name, {})
            for kind, value in row.items():
                least[kind] = min(least.get(kind, math.inf), value)
        self.privacy_frames.append([frame_index, rung, {k: round(v, 4) for k, v in similarities.items()}, reason])

    def summary(self, similarity_key: str, audit: bool = False) -> dict[str, Any]:
        """The track's entry in the report: aggregates and pass/fail; ``audit`` adds the
        per-frame similarities and the synthetic identity's code vector."""
        sims = self.similarities
        out: dict[str, Any] = {"frames": self.frames, "replaced": self.replaced, "blurred": self.blurred}
        out["w_jitter"] = float(np.mean(self.w_steps)) if self.w_steps else None
        if sims or similarity_key != "similarity_to_original":
            out[similarity_key] = {
                "mean": float(np.mean(sims)) if sims else None,
                "min": float(np.min(sims)) if sims else None,
                "max": float(np.max(sims)) if sims else None,
            }
            if audit:
                out[similarity_key]["per_frame"] = [[i, round(v, 4)]
                                                    for i, v in zip(self.frame_indices, sims, strict=True)]
        if self.rungs:
            out["privacy"] = {
                "passed": self.failed_checks == 0,
                "rungs": dict(self.rungs),
                "rung_share": {k: round(v / max(1, sum(self.rungs.values())), 4) for k, v in self.rungs.items()},
                "max_similarity": {k: round(v, 4) for k, v in sorted(self.max_similarity.items())},
                "min_margin": {k: {kind: round(v, 4) for kind, v in m.items()} for k, m in sorted(self.min_margin.items())},
                "carried": self.carried,
            }
            if audit:
                out["privacy"]["per_frame"] = self.privacy_frames
        if self.identity is not None:
            ident = dict(self.identity)
            if not audit:
                ident.pop("code", None)
            out["synthetic_identity"] = ident
        if self.redraws:  # the first identity above, each redraw after it (codes in the audit only)
            out["redraws"] = [r if audit else {k: v for k, v in r.items() if k != "code"} for r in self.redraws]
        return out


class StageTimer:
    """Busy seconds per pipeline stage: ``with timer("blend"): ...``."""

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


class RunReport:
    """Counts, per-track reports and stage times of one run (the caller adds the warnings).

    ``similarity_key`` names the per-track output similarity (``similarity_to_target`` or
    ``similarity_to_original``, from the identity policy).
    """

    def __init__(self, similarity_key: str) -> None:
        self.similarity_key = similarity_key
        self.counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self.tracks: dict[int, TrackReport] = defaultdict(TrackReport)
        self.timer = StageTimer()
        self.privacy: dict[str, Any] | None = None
        self.untracked_rungs: dict[str, int] = {}

    def add_privacy(self, track_id: int, frame_index: int, rung: str, similarities: dict[str, float],
                    passed: bool, reason: str | None, margins: dict[str, dict[str, float]] | None = None,
                    carried_from: int | None = None) -> None:
        """A face-frame leaving the privacy ladder (track -1: an untracked detection); ``margins``:
        per checker, how far below its operating point and its baseline the face was;
        ``carried_from``: the frame of the measured check it carries (TrackReport.add_privacy)."""
        if carried_from is not None:
            self.count("privacy_checks_carried")
        if rung in ("synthetic", "redraw", "grown_mask"):
            self.count("faces_replaced")
        else:
            self.count("faces_blurred")
        if track_id < 0:
            self.count("untracked_detections_blurred")
            self.untracked_rungs[rung] = self.untracked_rungs.get(rung, 0) + 1
            return
        self.tracks[track_id].add_privacy(frame_index, rung, similarities, passed, reason, margins, carried_from)

    def count(self, name: str, n: int = 1) -> None:
        if name not in self.counts:
            raise KeyError(f"unknown count {name!r}; known: {', '.join(COUNTS)}")
        self.counts[name] += int(n)

    def failed_identity_tracks(self) -> list[int]:
        """Tracks that got no identity that passes the privacy check."""
        return [k for k, t in self.tracks.items() if t.identity_failed]

    def to_dict(
        self, *, mode: str, source: Any, output: Any, models: dict[str, Any], config: Any, stream: Any,
        video: dict[str, Any], threshold: float, mapper: dict[str, Any], seconds: float,
    ) -> dict[str, Any]:
        """The report as written beside the output (``warnings`` are added by the caller).

        It names files by their name only and holds aggregates per track, never per-frame
        similarities or identity codes (those are in :meth:`audit_dict`).
        """
        frames = self.counts["frames"]
        out = {
            "mode": mode,
            "input": Path(source).name,
            "output": Path(output).name,
            "models": models,
            "frames": frames,
            "fps_processed": frames / seconds if seconds > 0 else None,
            "seconds": seconds,
            "stage_seconds": {"decode": stream.read_s, **self.timer.seconds, "encode": stream.write_s},
            "stream": dataclasses.asdict(stream),
            "counts": dict(self.counts),
            "identity_threshold": threshold,
            "tracks": {str(k): v.summary(self.similarity_key) for k, v in sorted(self.tracks.items())},
            "mapper": mapper,
            "video": video,
            "config": public_config(config),
            "warnings": [],
        }
        if self.privacy is not None:
            rungs: dict[str, int] = dict(self.untracked_rungs)
            for track in self.tracks.values():
                for rung, n in track.rungs.items():
                    rungs[rung] = rungs.get(rung, 0) + n
            out["privacy"] = {**self.privacy, "rungs": rungs, "untracked_rungs": dict(self.untracked_rungs),
                              "tracks_failed": sorted(k for k, t in self.tracks.items() if t.failed_checks)}
        return out

    def audit_dict(self, *, source: Any, output: Any) -> dict[str, Any]:
        """What the default report leaves out: absolute paths, per-frame similarities per
        checker and rung, synthetic identity codes (the ``--audit`` file)."""
        return {
            "input": str(Path(source).absolute()),
            "output": str(Path(output).absolute()),
            "tracks": {str(k): v.summary(self.similarity_key, audit=True) for k, v in sorted(self.tracks.items())},
        }


#: Settings that hold a model file's path: the default report and config name the file only.
MODEL_PATH_SETTINGS = ("models.detector_model", "models.identity_model", "optimize.landmark_model.path")


def public_config(config: Any) -> dict[str, Any]:
    """The settings as a dict, with ``faces: reference:PATH`` and the model paths
    (:data:`MODEL_PATH_SETTINGS`) reduced to the file's name (the ``--audit`` file keeps them)."""
    data = to_dict(public_settings(config))
    for dotted in MODEL_PATH_SETTINGS:
        *parents, key = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
            node[key] = Path(node[key]).name
    return data


def public_settings(config: PipelineConfig) -> PipelineConfig:
    """``config`` with ``faces: reference:PATH`` reduced to the file's name (the photo, not its
    folder); :func:`public_config` also reduces the model paths."""
    choice, reference = parse_faces(config.faces)
    return config if reference is None else dataclasses.replace(config, faces=f"{choice}:{reference.name}")


def model_paths(config: Any) -> dict[str, Any]:
    """The model path settings as given (for the ``--audit`` file)."""
    data = to_dict(config)
    out: dict[str, Any] = {}
    for dotted in MODEL_PATH_SETTINGS:
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[dotted] = node
    return out
