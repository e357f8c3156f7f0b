"""Temporal smoothing: noise goes down, motion is followed, the stream stays bounded."""

from __future__ import annotations

import torch

from reenact.temporal import FilterSettings, TrackSmoother


def _noisy_ramp(n: int, dim: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.linspace(0, 1, n)[:, None] * torch.ones(n, dim)
    return clean, clean + 0.05 * torch.randn(n, dim, generator=gen)


def _run(settings: FilterSettings, values: torch.Tensor) -> dict[int, torch.Tensor]:
    smoother = TrackSmoother(settings, fps=25.0)
    out: dict[int, torch.Tensor] = {}
    for i, v in enumerate(values):
        for _track, frame, value in smoother.push(7, i, v):
            out[frame] = value
        assert smoother.held <= settings.delay
    for _track, frame, value in smoother.flush():
        out[frame] = value
    return out


def _jitter(values: torch.Tensor) -> float:
    return float((values[1:] - values[:-1]).norm(dim=1).mean())


def test_both_filters_cut_frame_to_frame_jitter_and_release_every_frame() -> None:
    clean, noisy = _noisy_ramp(100)
    for method in ("one_euro", "gaussian"):
        out = _run(FilterSettings(method=method), noisy)
        assert sorted(out) == list(range(100))
        smoothed = torch.stack([out[i] for i in range(100)])
        assert _jitter(smoothed) < 0.5 * _jitter(noisy), method
        # still follows the motion: stays close to the clean ramp on average
        assert float((smoothed - clean).abs().mean()) < 0.05, method


def test_none_passes_values_through_unchanged() -> None:
    _clean, noisy = _noisy_ramp(10)
    out = _run(FilterSettings(method="none"), noisy)
    assert all(torch.equal(out[i], noisy[i]) for i in range(10))


def test_gaussian_keeps_a_constant_and_tracks_are_independent() -> None:
    smoother = TrackSmoother(FilterSettings(method="gaussian", window=3), fps=30.0)
    released = []
    for i in range(6):
        released += smoother.push(1, i, torch.full((2, 3), 4.0))
        released += smoother.push(2, i, torch.full((2, 3), -1.0))
    released += smoother.end_track(1)
    released += smoother.flush()
    assert len(released) == 12
    for track, _frame, value in released:
        assert torch.allclose(value, torch.full((2, 3), 4.0 if track == 1 else -1.0))


def test_alignment_smoothing_is_the_same_at_any_resolution() -> None:
    """The same head motion filmed at twice the resolution is smoothed alike (scale-normalised)."""
    from reenact.temporal import AlignmentSmoother

    gen = torch.Generator().manual_seed(0)
    small = AlignmentSmoother(FilterSettings(), fps=25.0, size=64)
    large = AlignmentSmoother(FilterSettings(), fps=25.0, size=64)
    for i in range(30):
        scale = 0.5 + 0.02 * torch.randn(1, generator=gen).item()
        shift = torch.tensor([float(i), 2.0]) + torch.randn(2, generator=gen)
        M = torch.tensor([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], dtype=torch.float64)
        M2 = M.clone()
        M2[:, :2] /= 2  # frame pixels twice as many: same crop
        [(_t, _f, a)] = small.push(0, i, M)
        [(_t, _f, b)] = large.push(0, i, M2)
        assert torch.allclose(b[:, :2] * 2, a[:, :2], atol=1e-9) and torch.allclose(b[:, 2], a[:, 2], atol=1e-7)
        if i > 5:
            assert not torch.allclose(a, M), "the transform is smoothed"
