"""The run report: counts, per-track facts, stage times and warnings, owned by one object."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reenact.config import to_dict

COUNTS = ("frames", "frames_with_faces", "faces_replaced", "faces_blurred", "faces_refused_by_blend",
          "untracked_detections_blurred", "small_faces_redacted", "unconfirmed_faces_redacted")


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
    last_w: torch.Tensor | None = None
    w_steps: list[float] = field(default_factory=list)

    def add_latent(self, ws: torch.Tensor) -> None:
        """Record the latent of the next frame (for the frame-to-frame W jitter)."""
        w = ws.detach().float().reshape(-1).cpu()
        if self.last_w is not None:
            self.w_steps.append(float((w - self.last_w).norm()) / math.sqrt(w.numel()))
        self.last_w = w

    def add_similarity(self, frame_index: int, similarity: float) -> None:
        self.frame_indices.append(frame_index)
        self.similarities.append(similarity)

    def summary(self, similarity_key: str) -> dict[str, Any]:
        sims = self.similarities
        out: dict[str, Any] = {"frames": self.frames, "replaced": self.replaced, "blurred": self.blurred}
        out["w_jitter"] = float(np.mean(self.w_steps)) if self.w_steps else None
        out[similarity_key] = {
            "mean": float(np.mean(sims)) if sims else None,
            "min": float(np.min(sims)) if sims else None,
            "max": float(np.max(sims)) if sims else None,
            "per_frame": [[i, round(v, 4)] for i, v in zip(self.frame_indices, sims, strict=True)],
        }
        if self.identity is not None:
            out["synthetic_identity"] = self.identity
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
    """Counts, per-track reports, stage times and warnings of one run.

    ``similarity_key`` names the per-track output similarity (``similarity_to_target`` or
    ``similarity_to_original``, from the identity policy).
    """

    def __init__(self, similarity_key: str) -> None:
        self.similarity_key = similarity_key
        self.counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self.tracks: dict[int, TrackReport] = defaultdict(TrackReport)
        self.timer = StageTimer()
        self.warnings: list[str] = []

    def count(self, name: str, n: int = 1) -> None:
        if name not in self.counts:
            raise KeyError(f"unknown count {name!r}; known: {', '.join(COUNTS)}")
        self.counts[name] += int(n)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def failed_identity_tracks(self) -> list[int]:
        """Tracks that got no identity that passes the privacy check."""
        return [k for k, t in self.tracks.items() if t.identity_failed]

    def to_dict(
        self, *, mode: str, source: Any, output: Any, models: dict[str, Any], config: Any, stream: Any,
        video: dict[str, Any], threshold: float, mapper: dict[str, Any], seconds: float,
    ) -> dict[str, Any]:
        """The report as written beside the output (``warnings`` are added by the caller)."""
        frames = self.counts["frames"]
        return {
            "mode": mode,
            "input": str(source),
            "output": str(output),
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
            "config": to_dict(config),
            "warnings": list(self.warnings),
        }
