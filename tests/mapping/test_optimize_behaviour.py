"""Control flow of the optimisation backend: batching, chunking, W+, early stop,
divergence fallback, settings and bad input.

Uses the tiny generator at 32 px and two small seeded torch networks in place of the
identity and landmark models (same contracts: unit embeddings, [B,68,2] crop pixels), so
these run in seconds; the real fixture models are exercised in test_optimize.py.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reenact.config import dump_yaml, from_dict, load_yaml
from reenact.errors import ConfigError, ShapeError
from reenact.mapping.optimize import (
    LOSS_TERMS,
    BatchAdam,
    EarlyStop,
    OptimizeSettings,
    OptimizingMapper,
)
from reenact.models.stylegan2 import tiny_generator

R = 32


class SmallIdentity(nn.Module):
    """[B,3,112,112] in [-1,1] -> unit [B,16]."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 5, stride=4)
        self.fc = nn.Linear(4 * 27 * 27, 16)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        self.calls = 0
        self.nan_from_call: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = F.normalize(self.fc(torch.tanh(self.conv(x)).flatten(1)), dim=1)
        if self.nan_from_call is not None and self.calls >= self.nan_from_call:
            out = out * float("nan")  # a numerical blow-up in the middle of a run
        return out


class SmallLandmarks(nn.Module):
    """[B,3,112,112] in [-1,1] -> [B,68,2] pixels of the 112 crop."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(2)
        self.fc = nn.Linear(3 * 14 * 14, 136)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(F.avg_pool2d(x, 8).flatten(1))).view(-1, 68, 2) * 112


FAST = OptimizeSettings(steps_first=6, steps_warm=3, init_candidates=3, early_stop_patience=50)


def make(settings: OptimizeSettings = FAST) -> OptimizingMapper:
    return OptimizingMapper(tiny_generator(seed=3, resolution=R), SmallIdentity(), SmallLandmarks(), settings)


def faces(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n smooth, slowly changing 'input crops' and one unit target per face."""
    gen = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1, size=(R, R), mode="bilinear")
    drift = torch.linspace(0, 0.1, n)[:, None, None, None]
    crops = (base + drift).clamp(-1, 1)
    target = F.normalize(torch.randn(1, 16, generator=gen), dim=1).expand(n, -1).contiguous()
    return crops, target


def test_settings_round_trip_and_are_strict(tmp_path: Path) -> None:
    dump_yaml(OptimizeSettings(), tmp_path / "optimize.yaml")
    assert load_yaml(OptimizeSettings, tmp_path / "optimize.yaml") == OptimizeSettings()
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(OptimizeSettings, {"seed": 3})  # the pipeline's top-level seed seeds the optimiser
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(OptimizeSettings, {"steps": 3})
    with pytest.raises(ConfigError, match="lr_first"):
        from_dict(OptimizeSettings, {"lr_first": -1.0})
    with pytest.raises(ConfigError, match="space"):
        from_dict(OptimizeSettings, {"space": "z"})
    with pytest.raises(ConfigError, match="weights.temporal"):
        from_dict(OptimizeSettings, {"weights": {"temporal": -0.1}})


def test_batched_tracks_match_separate_runs() -> None:
    crops, target = faces(4)
    ids = torch.tensor([7, 9, 7, 9])
    together, stats = make().map(crops, target, ids)
    assert stats.warm.tolist() == [False, False, True, True]
    for tid in (7, 9):
        sel = ids == tid
        alone, _ = make().map(crops[sel], target[sel], ids[sel])
        assert torch.allclose(together[sel], alone, atol=1e-4), tid
    # two different tracks start from different random z
    assert not torch.allclose(together[0], together[1])


def test_chunks_continue_tracks_like_one_call() -> None:
    crops, target = faces(3)
    ids = torch.zeros(3, dtype=torch.long)
    whole, _ = make().map(crops, target, ids)
    mapper = make()
    first, _ = mapper.map(crops[:2], target[:2], ids[:2])
    last, stats = mapper.map(crops[2:], target[2:], ids[2:])
    assert stats.warm.tolist() == [True]
    assert torch.allclose(torch.cat([first, last]), whole, atol=1e-5)
    assert mapper.report()[0]["frames"] == 3
    mapper.end_track(0)
    _, stats = mapper.map(crops[:1], target[:1], ids[:1])
    assert stats.warm.tolist() == [False]


def test_w_plus_and_a_given_start() -> None:
    G = tiny_generator(seed=3, resolution=R)
    settings = dataclasses.replace(FAST, space="w+")
    mapper = OptimizingMapper(G, SmallIdentity(), SmallLandmarks(), settings)
    crops, target = faces(2)
    start = G.mapping.w_avg.expand(2, G.num_ws, -1).clone()
    ws, stats = mapper.map(crops, target, torch.tensor([0, 1]), initial=start)
    assert ws.shape == (2, G.num_ws, G.w_dim) and mapper.latent_rows == G.num_ws
    # the trained mapper's latent (here w_avg) is where optimisation began: zero prior
    assert stats.initial["prior"].abs().max() < 1e-10
    assert (stats.final["total"] <= stats.initial["total"]).all()
    assert (ws != start).any()


def test_losses_fall_and_early_stop_saves_steps() -> None:
    crops, target = faces(1)
    ws, stats = make(dataclasses.replace(FAST, steps_first=12)).map(crops, target, torch.tensor([0]))
    assert stats.final["total"][0] < stats.initial["total"][0]
    assert int(stats.steps[0]) == 12
    quick = dataclasses.replace(FAST, steps_first=12, early_stop_patience=1, early_stop_rel_tol=0.5)
    _, stats = make(quick).map(crops, target, torch.tensor([0]))
    assert int(stats.steps[0]) < 12


def test_rising_loss_falls_back_to_the_previous_latent_and_is_counted(caplog) -> None:
    crops, target = faces(2)
    mapper = make()
    first, _ = mapper.map(crops[:1], target[:1], torch.tensor([5]))
    previous = mapper.previous(5)
    assert previous is not None
    # a learning rate that throws the latent far away: the loss rises well above its start
    wild = OptimizingMapper(mapper.G, mapper.identity_net, mapper.landmark_net,
                            dataclasses.replace(FAST, lr_warm=200.0))
    wild._tracks = mapper._tracks
    with caplog.at_level(logging.WARNING, logger="reenact.mapping.optimize"):
        ws, stats = wild.map(crops[1:], target[1:], torch.tensor([5]))
    assert stats.diverged.tolist() == [True]
    assert torch.equal(ws[0], previous)
    assert wild.report()[5]["diverged"] == 1
    assert torch.isfinite(stats.final["total"]).all()
    assert "diverged" in caplog.text


def test_nan_loss_on_a_first_frame_keeps_its_start() -> None:
    identity = SmallIdentity()
    mapper = OptimizingMapper(tiny_generator(seed=3, resolution=R), identity, SmallLandmarks(), FAST)
    crops, target = faces(2)
    identity.calls = 0
    # input features (1 call), random starts (1) and steps 0-2 are fine; step 3 turns NaN
    identity.nan_from_call = 6
    ws, stats = mapper.map(crops[:1], target[:1], torch.tensor([0]))
    assert stats.diverged.tolist() == [True]
    assert torch.isfinite(ws).all()
    assert mapper.report()[0]["diverged"] == 1
    # the next frame warm-starts from the fallback and, with sane numbers, works again
    identity.nan_from_call = None
    ws2, stats2 = mapper.map(crops[1:], target[1:], torch.tensor([0]))
    assert stats2.warm.tolist() == [True] and stats2.diverged.tolist() == [False]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c, t, i: (c[:, :, :16], t, i), "crops must be float"),
        (lambda c, t, i: (c * 3, t, i), r"in \[-1,1\]"),
        (lambda c, t, i: ((c * 127.5 + 127.5).to(torch.uint8), t, i), "crops must be float"),
        (lambda c, t, i: (c, t * 2, i), "unit L2 norm"),
        (lambda c, t, i: (c, t[:1], i), "target_id must be"),
        (lambda c, t, i: (c, F.normalize(torch.ones(2, 8), dim=1), i), "same identity model"),
        (lambda c, t, i: (c, t, i.float()), "track_ids must be"),
        (lambda c, t, i: (c, t.masked_fill(t > 0, float("nan")), i), "NaN"),
    ],
)
def test_bad_input_is_a_shape_error(change, message) -> None:
    crops, target = faces(2)
    args = change(crops, target, torch.tensor([0, 0]))
    with pytest.raises(ShapeError, match=message):
        make().map(*args)


def test_bad_initial_and_empty_chunk() -> None:
    mapper = make()
    crops, target = faces(2)
    with pytest.raises(ShapeError, match="initial"):
        mapper.map(crops, target, torch.tensor([0, 1]), initial=torch.zeros(2, 5))
    ws, stats = mapper.map(crops[:0], target[:0], torch.zeros(0, dtype=torch.long))
    assert ws.shape == (0, 1, mapper.G.w_dim) and stats.steps.numel() == 0


def test_batch_adam_is_torch_adam_per_face_with_its_own_rate_and_carried_state() -> None:
    """Each row steps like torch.optim.Adam at its own rate; a carried (m, v, t) continues a run."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(2, 1, 4, generator=gen)
    grads = [torch.randn(2, 1, 4, generator=gen) for _ in range(5)]
    rates = (0.1, 0.02)
    adam = BatchAdam(start, torch.tensor(rates)[:, None, None], [None, None])
    for g in grads:
        adam.step(torch.tensor([0, 1]), g)
    for row, lr in enumerate(rates):
        w = start[row].clone().requires_grad_(True)
        ref = torch.optim.Adam([w], lr=lr)
        for g in grads:
            w.grad = g[row].clone()
            ref.step()
        torch.testing.assert_close(adam.w[row], w.detach())
    # three steps, then two more from the carried moments: the same as five in one go
    first = BatchAdam(start[:1], torch.full((1, 1, 1), 0.1), [None])
    for g in grads[:3]:
        first.step(torch.tensor([0]), g[:1])
    rest = BatchAdam(first.w, torch.full((1, 1, 1), 0.1), [first.carried(0)])
    for g in grads[3:]:
        rest.step(torch.tensor([0]), g[:1])
    torch.testing.assert_close(rest.w[0], adam.w[0])
    assert int(rest.taken[0]) == 2 and rest.carried(0)[2] == 5


def test_early_stop_keeps_the_best_latent_and_stops_on_patience_budget_or_divergence() -> None:
    settings = OptimizeSettings(early_stop_patience=2, early_stop_rel_tol=0.1, divergence_factor=1.5)
    start = torch.zeros(3, 1, 2)
    stop = EarlyStop(start, torch.tensor([10, 10, 1]), settings)

    def row(value: float) -> dict[str, float]:
        return {**dict.fromkeys(LOSS_TERMS, 0.0), "total": value, "task": value}

    for step, losses in enumerate([(1.0, 1.0, 1.0), (0.95, 1.6, 0.5), (0.97, 0.1, 0.4)]):
        for f, value in enumerate(losses):
            if bool(stop.active[f]):
                stop.observe(f, step, step, torch.full((1, 2), float(step)), row(value))
    # face 0: improved by under 10 % twice -> stopped by patience, best latent of step 1
    assert not stop.active[0] and float(stop.best[0]) == pytest.approx(0.95) and float(stop.best_w[0, 0, 0]) == 1.0
    # face 1: rose above 1.5 x its first loss -> diverged, never looked at again
    assert bool(stop.diverged[1]) and float(stop.best[1]) == 1.0 and float(stop.last[1]) == pytest.approx(1.6)
    # face 2: its budget of one step was spent
    assert not stop.active[2] and not stop.diverged[2] and float(stop.best[2]) == 0.5
