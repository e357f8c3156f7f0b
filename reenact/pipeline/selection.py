"""``--faces``: which tracked faces of a frame are replaced (all, the largest, or the people who
match a reference photo). The others stay as they are.

Conventions: ``TrackedFaces.boxes`` float ``[N,4]`` and ``points`` ``[N,5,2]`` frame pixels;
identity codes float ``[D]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from reenact.errors import ConfigError
from reenact.faces import cosine_similarity
from reenact.faces.track import TrackedFaces


class FaceSelection:
    """Pick the faces to replace per ``faces`` (``all``, ``largest`` or ``reference``: the
    people who match a reference photo; a run plan's :attr:`~reenact.pipeline.plan.RunPlan.faces`).

    ``reference``: the reference photo's identity code (needed for ``reference:``);
    ``embed(frame_index, points [K,5,2]) -> [K,D]`` embeds faces of a frame; a track
    matches when its first face is at least ``threshold`` similar to the reference.
    """

    def __init__(
        self, faces: Literal["all", "largest", "reference"], *, reference: torch.Tensor | None = None,
        threshold: float = 0.0, embed: Callable[[int, np.ndarray], torch.Tensor] | None = None,
    ) -> None:
        self.by_reference = faces == "reference"
        if faces not in ("all", "largest", "reference"):
            raise ConfigError(f"faces must be all, largest or reference, got {faces!r}")
        if self.by_reference and (reference is None or embed is None):
            raise ConfigError("--faces reference:IMAGE needs the reference photo's identity")
        self.faces, self.reference, self.threshold, self.embed = faces, reference, threshold, embed
        self.matches: dict[int, bool] = {}
        self.similarity: dict[int, float] = {}

    def __call__(self, faces: TrackedFaces) -> list[int]:
        """Indices into ``faces`` of the faces to replace."""
        n = len(faces)
        if n == 0 or self.faces == "all":
            return list(range(n))
        if self.faces == "largest":
            wh = faces.boxes[:, 2:] - faces.boxes[:, :2]
            return [int(np.argmax(wh[:, 0] * wh[:, 1]))]
        assert self.reference is not None and self.embed is not None
        chosen = []
        for i, track_id in enumerate(faces.track_ids.tolist()):
            if track_id not in self.matches:
                code = self.embed(faces.frame_index, faces.points[i : i + 1])
                sim = float(cosine_similarity(code, self.reference[None].to(code.device)).reshape(-1)[0])
                self.matches[track_id] = sim >= self.threshold
                self.similarity[track_id] = sim
            if self.matches[track_id]:
                chosen.append(i)
        return chosen

    def warning(self) -> str | None:
        """With a reference: a warning when nobody matched it (nothing was changed)."""
        if self.similarity and not any(self.matches.values()):
            return (f"nobody matched the reference photo (best similarity "
                    f"{max(self.similarity.values()):.3f} < {self.threshold}); nothing was changed")
        return None
