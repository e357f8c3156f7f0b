"""Step 6: from an aligned crop and an identity code to a generator latent per face-frame."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from reenact.errors import ConfigError
from reenact.mapping.optimize import make_optimizing_mapping
from reenact.packs import LoadedPack
from reenact.pipeline.settings import PipelineConfig


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
        """Conventions: crops float [F,3,R,R] in [-1,1]; id_codes float [F,D]; returns [F,num_ws,w_dim]."""
        attr = self.encoder(crops)
        w = self.mapper.map(id_codes.to(attr.dtype), attr)
        return w[:, None, :].repeat(1, self.num_ws, 1)

    def report(self) -> dict[int, dict[str, Any]]:
        return {}

    def end_track(self, track_id: int) -> None:
        return None


def make_mapping(pack: LoadedPack, config: PipelineConfig) -> LatentMapper:
    """The latent mapper that ``config.mapper`` names (``optimize``: :mod:`reenact.models.optimize`,
    seeded by ``config.seed`` and started from the trained mapper where the pack has one)."""
    if config.mapper == "trained":
        return TrainedMapping(pack)
    mapping = make_optimizing_mapping(pack, config.optimize, seed=config.seed)
    if pack.trained and pack.mapper is not None:
        mapping.initial = TrainedMapping(pack)  # a track's first frame starts from the trained mapper
    return mapping
