"""Temporal smoothing of per-track values (W codes, alignment transforms, points) over a video.

The pipeline smooths three things, each with its own settings in :class:`SmoothingSettings`:
``latent`` (the W code of each face), ``alignment`` (the frame-to-crop transform, filtered
in units of the face's size so one setting works at any resolution, see
:class:`AlignmentSmoother`) and ``points`` (the tracker's causal filter of boxes and
landmarks, :class:`PointSmoothing`). ``method: none`` on all three turns smoothing off.

Two filters behind one streaming interface, :class:`TrackSmoother`:

* ``one_euro`` (default): the causal One-Euro filter (Casiez et al., CHI 2012), applied
  element-wise. Its cut-off frequency rises with the speed of the signal, so slow drift
  is smoothed strongly and fast motion follows with little lag. No delay.
* ``gaussian``: a centred Gaussian over ``window`` frames on each side. A value is
  released once ``window`` later frames of its track have been seen (or the track
  ends), so the stream is delayed by ``window`` frames and memory stays bounded.

Conventions: values are float tensors of any fixed shape per track (``[D]`` for a W
code, ``[2,3]`` for an affine matrix); time is the frame's presentation time in seconds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from reenact.errors import ConfigError, ShapeError


@dataclass(frozen=True)
class FilterSettings:
    """How one kind of value is smoothed along each track.

    ``min_cutoff`` (Hz) and ``beta`` are the One-Euro parameters: a lower ``min_cutoff``
    smooths more when still, a higher ``beta`` lags less in motion (``beta`` multiplies the
    speed of the value: per unit of the value per second, or per face size per second for
    the scale-normalised alignment filter). ``window`` and ``sigma`` (frames) define the
    centred Gaussian.
    """

    method: Literal["one_euro", "gaussian", "none"] = "one_euro"
    min_cutoff: float = 0.5
    beta: float = 0.5
    d_cutoff: float = 1.0
    window: int = 4
    sigma: float = 2.0

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ConfigError(
                f"smoothing: min_cutoff and d_cutoff must be > 0 and beta >= 0, got "
                f"min_cutoff={self.min_cutoff}, d_cutoff={self.d_cutoff}, beta={self.beta}"
            )
        if self.window < 0 or self.sigma <= 0:
            raise ConfigError(
                f"smoothing: window must be >= 0 and sigma > 0, got window={self.window}, sigma={self.sigma}"
            )

    @property
    def delay(self) -> int:
        """Frames by which the filter delays its output (0 for causal filters)."""
        return self.window if self.method == "gaussian" else 0


@dataclass(frozen=True)
class PointSmoothing:
    """The tracker's causal One-Euro filter of each track's box corners and landmarks.

    ``beta`` is per face height per second (the speed is measured in face heights, so one
    setting works at any resolution); ``method: none`` leaves the detected points as they are.
    """

    method: Literal["one_euro", "none"] = "one_euro"
    min_cutoff: float = 1.5
    beta: float = 5.0
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ConfigError(
                f"smoothing.points: min_cutoff and d_cutoff must be > 0 and beta >= 0, got "
                f"min_cutoff={self.min_cutoff}, d_cutoff={self.d_cutoff}, beta={self.beta}"
            )

    def make_filter(self) -> OneEuroFilter | None:
        """A fresh filter for one track, or None when smoothing is off."""
        if self.method == "none":
            return None
        return OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)


@dataclass(frozen=True)
class SmoothingSettings:
    """Every temporal filter of the pipeline, each with its own settings.

    ``latent``: the W code of each track. ``alignment``: each track's frame-to-crop
    transform, filtered as the frame positions of the crop's corners with the One-Euro speed
    measured in crop widths per second (scale-normalised). ``points``: the tracker's filter
    of boxes and landmarks.
    """

    latent: FilterSettings = FilterSettings()
    alignment: FilterSettings = FilterSettings(beta=30.0)
    points: PointSmoothing = PointSmoothing()


def _alpha(cutoff: torch.Tensor | float, dt: float) -> torch.Tensor | float:
    """Smoothing factor of an exponential filter with ``cutoff`` Hz sampled every ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Causal One-Euro filter of one signal: a numpy array or torch tensor of fixed shape.

    The cut-off frequency is ``min_cutoff + beta * speed``. The speed is element-wise
    (``|dx/dt|``, each element gets its own cut-off) unless ``__call__`` is given a
    ``point_scale``: then the signal is a set of 2-D points and one speed, the fastest
    point's in units of ``point_scale`` (e.g. face heights per second), drives all of them.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: Any = None
        self._dx: Any = None

    def __call__(self, x: Any, dt: float, point_scale: float | None = None) -> Any:
        """Filter the next sample ``x``, taken ``dt`` seconds after the previous one."""
        if self._x is None:
            self._x, self._dx = x, x * 0
            return x
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * ((x - self._x) / dt) + (1 - a_d) * self._dx
        if point_scale is None:
            speed = abs(self._dx)
        else:
            velocity = self._dx.reshape(-1, 2)
            speed = float(((velocity**2).sum(-1) ** 0.5).max()) / max(point_scale, 1.0)
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        self._x = a * x + (1 - a) * self._x
        return self._x


@dataclass
class _GaussianState:
    pending: deque[tuple[int, float, torch.Tensor]] = field(default_factory=deque)
    history: deque[torch.Tensor] = field(default_factory=deque)


Released = tuple[int, int, torch.Tensor]
"""(track id, frame index, smoothed value)."""


class TrackSmoother:
    """Streaming smoother of one kind of per-track value.

    ``push`` returns the values that are ready, as ``(track_id, frame_index, value)``
    tuples, in push order per track; ``end_track`` and ``flush`` release what a
    Gaussian filter still holds.
    """

    def __init__(self, settings: FilterSettings, fps: float) -> None:
        if fps <= 0 or not math.isfinite(fps):
            raise ConfigError(f"smoothing needs a positive frame rate, got {fps}")
        self.settings = settings
        self.fps = float(fps)
        self._euro: dict[int, tuple[OneEuroFilter, float]] = {}
        self._gauss: dict[int, _GaussianState] = {}
        self._shapes: dict[int, torch.Size] = {}
        radius = settings.window
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
        self._kernel = torch.exp(-0.5 * (offsets / settings.sigma) ** 2)

    def push(
        self, track_id: int, frame_index: int, value: torch.Tensor, time: float | None = None,
        scale: float | None = None,
    ) -> list[Released]:
        """Add the value of ``track_id`` at ``frame_index``; return the released values.

        ``scale``: the value is a set of 2-D points and the One-Euro speed is measured in
        units of ``scale`` (e.g. the face's size in pixels) instead of element-wise.
        """
        shape = self._shapes.setdefault(track_id, value.shape)
        if value.shape != shape:
            raise ShapeError(f"track {track_id}: value shape {tuple(value.shape)} differs from {tuple(shape)}")
        if time is None:
            time = frame_index / self.fps
        method = self.settings.method
        if method == "none":
            return [(track_id, frame_index, value)]
        if method == "one_euro":
            return [(track_id, frame_index, self._one_euro(track_id, value, time, scale))]
        state = self._gauss.setdefault(track_id, _GaussianState())
        state.pending.append((frame_index, time, value))
        state.history.append(value)
        return self._release_gaussian(track_id, final=False)

    def end_track(self, track_id: int) -> list[Released]:
        """The track has ended: release all its held values and forget its state."""
        self._euro.pop(track_id, None)
        self._shapes.pop(track_id, None)
        if track_id not in self._gauss:
            return []
        released = self._release_gaussian(track_id, final=True)
        del self._gauss[track_id]
        return released

    def flush(self) -> list[Released]:
        """End of the video: release everything still held, for every track."""
        released: list[Released] = []
        for track_id in list(self._gauss):
            released.extend(self.end_track(track_id))
        self._euro.clear()
        self._shapes.clear()
        return released

    @property
    def held(self) -> int:
        """How many values are held back (bounded by tracks x window)."""
        return sum(len(s.pending) for s in self._gauss.values())

    def _one_euro(self, track_id: int, value: torch.Tensor, time: float, scale: float | None) -> torch.Tensor:
        s = self.settings
        if track_id not in self._euro:
            self._euro[track_id] = (OneEuroFilter(s.min_cutoff, s.beta, s.d_cutoff), time)
        euro, last = self._euro[track_id]
        dt = time - last if time > last else 1.0 / self.fps
        self._euro[track_id] = (euro, time)
        smoothed: torch.Tensor = euro(value, dt, point_scale=scale)
        return smoothed

    def _release_gaussian(self, track_id: int, final: bool) -> list[Released]:
        state = self._gauss[track_id]
        radius = self.settings.window
        released: list[Released] = []
        # history holds, in order, up to `radius` values before the oldest pending one,
        # then every pending value.
        while state.pending:
            before = len(state.history) - len(state.pending)
            after = len(state.pending) - 1
            if after < radius and not final:
                break
            frame_index, _time, _value = state.pending.popleft()
            lo, hi = max(0, before - radius), min(len(state.history), before + radius + 1)
            window = torch.stack(list(state.history)[lo:hi]).to(torch.float64)
            weights = self._kernel[radius - (before - lo): radius + (hi - before)]
            weights = (weights / weights.sum()).reshape(-1, *([1] * (window.dim() - 1)))
            smoothed = (window * weights).sum(0).to(_value.dtype)
            released.append((track_id, frame_index, smoothed))
            while len(state.history) - len(state.pending) > radius:
                state.history.popleft()
        return released


class AlignmentSmoother:
    """Streaming smoother of each track's frame-to-crop transform, scale-normalised.

    A transform ``M`` (frame pixels -> crop pixels of a ``size`` crop) is filtered as the
    frame positions of three crop corners, with the One-Euro speed in crop widths per
    second, then turned back into a transform. The same settings thus smooth alike at any
    video resolution, face size and generator resolution.

    Conventions: ``M`` float ``[2,3]`` mapping frame pixels to crop pixels; released
    values the same.
    """

    def __init__(self, settings: FilterSettings, fps: float, size: int) -> None:
        if size < 1:
            raise ConfigError(f"crop size must be >= 1, got {size}")
        self.smoother = TrackSmoother(settings, fps)
        self.size = float(size)
        self._corners = torch.tensor([[0.0, 0.0], [size, 0.0], [0.0, size]], dtype=torch.float64)
        self._dtypes: dict[int, torch.dtype] = {}

    def push(self, track_id: int, frame_index: int, M: torch.Tensor) -> list[Released]:
        """Add the transform of ``track_id`` at ``frame_index``; return the released ones."""
        if M.shape != (2, 3):
            raise ShapeError(f"alignment transform must be [2,3], got {tuple(M.shape)}")
        if self.smoother.settings.method == "none":
            return [(track_id, frame_index, M)]
        self._dtypes[track_id] = M.dtype
        corners = self._to_corners(M)
        width = float((corners[1] - corners[0]).norm())
        released = self.smoother.push(track_id, frame_index, corners, scale=width)
        return [(t, f, self._from_corners(c, M.dtype)) for t, f, c in released]

    def end_track(self, track_id: int) -> list[Released]:
        """The track has ended: release its held transforms."""
        dtype = self._dtypes.pop(track_id, torch.float32)
        return [(t, f, self._from_corners(c, dtype)) for t, f, c in self.smoother.end_track(track_id)]

    def _to_corners(self, M: torch.Tensor) -> torch.Tensor:
        full = torch.eye(3, dtype=torch.float64, device=M.device)
        full[:2] = M.to(torch.float64)
        inv = torch.linalg.inv(full)
        corners = self._corners.to(M.device)
        return corners @ inv[:2, :2].T + inv[:2, 2]

    def _from_corners(self, corners: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        c = corners.to(torch.float64)
        inv = torch.eye(3, dtype=torch.float64, device=c.device)
        inv[:2, 0] = (c[1] - c[0]) / self.size
        inv[:2, 1] = (c[2] - c[0]) / self.size
        inv[:2, 2] = c[0]
        return torch.linalg.inv(inv)[:2].to(dtype)
