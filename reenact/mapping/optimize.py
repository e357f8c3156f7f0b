"""The ``optimize`` mapping backend: per-frame optimisation in W, warm-started over time.

A mapping that needs no training (Nitzan et al. 2020 train a mapper; here each face-frame's
latent is found directly by gradient descent against the same kind of losses):

* identity: ``1 - cos(E_id(G(w)), target)`` with a frozen, differentiable identity network
  on the generated face warped to its template (ArcFace 112 for MobileFace/ArcFace);
* landmarks: mean squared distance of the 51 inner (non-jaw) points of the 68-point model
  between the generated face and the input crop, in units of the landmark crop's side;
* pixels outside the inner face (a fixed ellipse in the aligned crop): masked L1 and
  ``1 - MS-SSIM`` (pytorch_msssim) against the input crop;
* prior: squared distance of ``w`` to ``G.mapping.w_avg`` (per dimension);
* temporal: squared distance of ``w`` to the previous frame's latent of the same track.

The first frame of a track starts from the best of a few random ``z`` mapped by ``G``
(or from a trained mapper's latent given as ``initial``); later frames start from the
previous frame's answer with fewer steps. Faces of a chunk are optimised together (one
batch per time step of the chunk), each with its own Adam state, step budget and early
stop. A face whose loss turns NaN or rises well above its starting loss is stopped and
gets the previous frame's latent (or its starting latent); it is counted in the report.

Conventions:
    crops float ``[F,3,R,R]`` in [-1,1], RGB, aligned to the generator's FFHQ-style crop
    (:func:`reenact.faces.align.ffhq_template` at ``R = G.img_resolution``); target
    identities float ``[F,D]`` with unit L2 norm; track ids int64 ``[F]``; latents float
    ``[F,K,w_dim]`` with ``K = 1`` (W) or ``K = G.num_ws`` (W+). Faces of one track must
    be given in time order (within and across calls).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim
from torch import nn

from reenact.errors import ConfigError, ShapeError
from reenact.faces.align import arcface_template, ffhq_template, similarity_from_points, warp_affine
from reenact.models.onnx_modules import OnnxIdentity, OnnxLandmarks, OnnxModelSpec

log = logging.getLogger(__name__)

# Where the detector's five points fall inside the square crop that the PFLD landmark
# model is fed (reenact.faces.landmarks with its default LandmarkSettings), as a fraction
# of the crop side. Measured once with the offline CenterFace detector on 30 single-face
# fixture photos (spread about 0.02-0.03), then made left/right symmetric.
_LANDMARK_CROP_UNIT = (
    (0.341, 0.417),
    (0.659, 0.417),
    (0.500, 0.597),
    (0.364, 0.723),
    (0.636, 0.723),
)

INNER_POINTS = tuple(range(17, 68))
"""The 51 non-jaw points of the 68-point (iBUG 300-W) layout: brows, nose, eyes, mouth."""

LOSS_TERMS = ("identity", "landmarks", "l1", "ms_ssim", "prior", "temporal")
"""Names of the loss terms, as used in weights and reports."""


@dataclass(frozen=True)
class OptimizeLossWeights:
    """Weight of each loss term in the objective (0 switches a term off)."""

    identity: float = 1.0
    landmarks: float = 100.0
    l1: float = 1.0
    ms_ssim: float = 1.0
    prior: float = 0.01
    temporal: float = 0.5

    def __post_init__(self) -> None:
        for name in LOSS_TERMS:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"optimize.weights.{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class OptimizeSettings:
    """Settings of the optimisation mapping backend.

    ``space``: optimise one ``w`` (``w``) or one per generator layer (``w+``).
    ``steps_first``/``lr_first``: budget and Adam learning rate of a track's first frame;
    ``steps_warm``/``lr_warm``: of later frames (warm-started from the previous one).
    ``init_candidates`` random ``z`` (mapped with ``init_truncation_psi``) are scored by the
    losses and the best starts a new track. Early stop: a face stops once its loss has not
    improved by ``early_stop_rel_tol`` (relative) for ``early_stop_patience`` steps.
    Divergence: loss NaN/inf, or above ``divergence_factor`` x its starting loss.
    ``inner_face_scale``: size of the inner-face ellipse excluded from the pixel losses, in
    eye-to-mouth distances. ``batch_size``: faces optimised together at most.
    ``min_target_score``: a target identity photo detected with a lower score is warned
    about. The random starts are seeded by the pipeline's top-level ``seed`` (given to
    :class:`OptimizingMapper`), not by a setting here.
    ``landmark_model``: the differentiable 68-point landmark ONNX model the pipeline loads
    (:func:`make_optimizing_mapping`; PFLD: RGB/255 input, ``input_scale: 1``); may stay
    unset only when ``weights.landmarks`` is 0.
    """

    space: Literal["w", "w+"] = "w"
    steps_first: int = 100
    steps_warm: int = 20
    lr_first: float = 0.1
    lr_warm: float = 0.02
    init_candidates: int = 8
    init_truncation_psi: float = 0.7
    early_stop_patience: int = 5
    early_stop_rel_tol: float = 1e-3
    divergence_factor: float = 1.5
    inner_face_scale: float = 1.0
    batch_size: int = 8
    min_target_score: float = 0.6
    weights: OptimizeLossWeights = field(default_factory=OptimizeLossWeights)
    landmark_model: OnnxModelSpec = field(default_factory=lambda: OnnxModelSpec(input_scale=1.0))

    def __post_init__(self) -> None:
        if self.space not in ("w", "w+"):
            raise ConfigError(f"optimize.space must be 'w' or 'w+', got {self.space!r}")
        for name in ("steps_first", "steps_warm", "init_candidates", "early_stop_patience", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"optimize.{name} must be >= 1, got {value}")
        for name in ("lr_first", "lr_warm", "inner_face_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"optimize.{name} must be a finite number > 0, got {value}")
        if not 0 < self.init_truncation_psi <= 1:
            raise ConfigError(f"optimize.init_truncation_psi must be in (0, 1], got {self.init_truncation_psi}")
        if not 0 <= self.early_stop_rel_tol < 1:
            raise ConfigError(f"optimize.early_stop_rel_tol must be in [0, 1), got {self.early_stop_rel_tol}")
        if not self.divergence_factor > 1:
            raise ConfigError(f"optimize.divergence_factor must be > 1, got {self.divergence_factor}")
        if not 0 <= self.min_target_score <= 1:
            raise ConfigError(f"optimize.min_target_score must be in [0, 1], got {self.min_target_score}")


@dataclass(frozen=True)
class CropGeometry:
    """Fixed geometry of the generator's aligned crop.

    Conventions:
        ``identity_matrix`` / ``landmark_matrix`` float ``[1,2,3]`` map crop pixels (of the
        ``R x R`` FFHQ-style crop) to the identity network's / landmark network's input
        pixels; ``mask`` float ``[1,1,R,R]`` is 1 outside the inner face, 0 inside (soft edge).
    """

    resolution: int
    identity_size: int
    landmark_size: int
    identity_matrix: torch.Tensor
    landmark_matrix: torch.Tensor
    mask: torch.Tensor


def crop_geometry(
    resolution: int, identity_size: int = 112, landmark_size: int = 112, inner_face_scale: float = 1.0
) -> CropGeometry:
    """Geometry of an FFHQ-style ``resolution`` crop: warps to the ArcFace and landmark crops
    and the outer-face mask (an ellipse around eyes, nose and mouth, 0 inside).

    Conventions: see :class:`CropGeometry`.
    """
    if resolution < 16:
        raise ShapeError(f"crop resolution must be >= 16 pixels, got {resolution}")
    src = ffhq_template(resolution)[None]
    id_m = similarity_from_points(src, arcface_template(identity_size))
    lnd_template = torch.tensor(_LANDMARK_CROP_UNIT) * landmark_size - 0.5
    lnd_m = similarity_from_points(src, lnd_template)
    t = src[0]
    eyes = (t[0] + t[1]) / 2
    mouth = (t[3] + t[4]) / 2
    centre = (eyes + mouth) / 2
    em = float((mouth - eyes).norm())
    # semi-axes: from brows to chin vertically, cheek to cheek horizontally
    ax, ay = 0.95 * em * inner_face_scale, 1.25 * em * inner_face_scale
    ys, xs = torch.meshgrid(torch.arange(resolution, dtype=torch.float32),
                            torch.arange(resolution, dtype=torch.float32), indexing="ij")
    r = torch.sqrt(((xs - centre[0]) / ax) ** 2 + ((ys - centre[1]) / ay) ** 2)
    edge = max(2.0 / resolution * 8, 0.05)
    mask = ((r - 1.0) / edge + 0.5).clamp(0.0, 1.0)
    return CropGeometry(resolution, identity_size, landmark_size, id_m, lnd_m, mask[None, None])


def _repeat(x: torch.Tensor, i: int, n: int) -> torch.Tensor:
    return x[i : i + 1].expand(n, *x.shape[1:])


def _time_steps(track_ids: list[int]) -> list[torch.Tensor]:
    """Faces of a chunk grouped by their rank within their track: faces of one rank form one
    time step (at most one face per track), optimised together; int64 index tensors in rank order."""
    seen: dict[int, int] = {}
    rank = []
    for tid in track_ids:
        rank.append(seen.get(tid, 0))
        seen[tid] = rank[-1] + 1
    rank_t = torch.tensor(rank)
    return [torch.nonzero(rank_t == r).flatten() for r in range(max(rank) + 1)]


@dataclass
class FrameStats:
    """What one :meth:`OptimizingMapper.map` call did, per face-frame.

    ``steps`` int64 ``[F]`` optimisation steps taken; ``warm`` bool ``[F]`` started from the
    previous frame; ``diverged`` bool ``[F]`` fell back; ``initial``/``final``: per-term
    losses (unweighted, float ``[F]``) at the start latent and at the returned latent, plus
    ``total`` (weighted sum) and ``task`` (total without the temporal term). ``history``:
    the total loss after each step, per face, when asked for.
    """

    track_ids: torch.Tensor
    steps: torch.Tensor
    warm: torch.Tensor
    diverged: torch.Tensor
    initial: dict[str, torch.Tensor]
    final: dict[str, torch.Tensor]
    history: list[list[float]] | None = None
    task_history: list[list[float]] | None = None

    def per_track(self) -> dict[int, dict[str, Any]]:
        """JSON-able summary per track: frames, steps, fallbacks, mean final losses."""
        out: dict[int, dict[str, Any]] = {}
        for tid in sorted(set(self.track_ids.tolist())):
            sel = self.track_ids == tid
            out[int(tid)] = {
                "frames": int(sel.sum()),
                "steps": int(self.steps[sel].sum()),
                "diverged": int(self.diverged[sel].sum()),
                "final": {k: float(v[sel].mean()) for k, v in self.final.items()},
            }
        return out


@dataclass
class _TrackState:
    latent: torch.Tensor  # [K, w_dim], detached
    adam_m: torch.Tensor  # Adam moments carried into the next frame, [K, w_dim]
    adam_v: torch.Tensor
    adam_t: int = 0
    frames: int = 0
    steps: int = 0
    diverged: int = 0
    final: dict[str, float] = field(default_factory=dict)


@dataclass
class _ChunkOut:
    """What :meth:`OptimizingMapper.map` fills in face by face (the fields of :class:`FrameStats`)."""

    ws: torch.Tensor
    steps: torch.Tensor
    warm: torch.Tensor
    diverged: torch.Tensor
    initial: dict[str, torch.Tensor]
    final: dict[str, torch.Tensor]
    history: list[list[float]] | None
    task_history: list[list[float]] | None

    @classmethod
    def empty(cls, n: int, rows: int, w_dim: int, device: torch.device, record_history: bool) -> _ChunkOut:
        names = (*LOSS_TERMS, "total", "task")
        return cls(
            torch.empty(n, rows, w_dim, device=device),
            torch.zeros(n, dtype=torch.long),
            torch.zeros(n, dtype=torch.bool),
            torch.zeros(n, dtype=torch.bool),
            {k: torch.zeros(n) for k in names},
            {k: torch.zeros(n) for k in names},
            [[] for _ in range(n)] if record_history else None,
            [[] for _ in range(n)] if record_history else None,
        )

    def stats(self, track_ids: torch.Tensor) -> FrameStats:
        return FrameStats(track_ids.cpu(), self.steps, self.warm, self.diverged, self.initial, self.final,
                          self.history, self.task_history)


class BatchAdam:
    """Adam on a batch of latents, one face per row, each with its own rate and step count.

    A warm face continues its track's moments and step count from the previous frame (so its
    first steps are not oversized); a new face starts them at zero. :attr:`taken` counts the
    steps of this frame. Non-finite gradient entries count as zero.

    Conventions: ``w``, ``m``, ``v`` float ``[B,K,w_dim]`` on the latents' device; ``lr`` float
    ``[B,1,1]`` on that device; ``t0`` and ``taken`` int64 ``[B]`` on the CPU.
    """

    BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

    def __init__(
        self, start: torch.Tensor, lr: torch.Tensor, carried: list[tuple[torch.Tensor, torch.Tensor, int] | None]
    ) -> None:
        b = start.shape[0]
        assert lr.shape == (b, 1, 1) and len(carried) == b, (tuple(lr.shape), len(carried), b)
        self.w = start.clone()
        self.lr = lr
        self.m = torch.zeros_like(self.w)
        self.v = torch.zeros_like(self.w)
        self.t0 = torch.zeros(b, dtype=torch.long)
        self.taken = torch.zeros(b, dtype=torch.long)
        for f, moments in enumerate(carried):
            if moments is not None:
                self.m[f], self.v[f], self.t0[f] = moments

    def step(self, sel: torch.Tensor, grad: torch.Tensor) -> None:
        """One step for the faces ``sel`` (int64 ``[S]`` rows, CPU), gradients ``grad`` ``[S,K,w_dim]``."""
        b1, b2 = self.BETA1, self.BETA2
        g = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        self.taken[sel] += 1
        t = (self.taken[sel] + self.t0[sel]).to(self.w.device, torch.float32)[:, None, None]
        self.m[sel] = b1 * self.m[sel] + (1 - b1) * g
        self.v[sel] = b2 * self.v[sel] + (1 - b2) * g * g
        m_hat = self.m[sel] / (1 - b1**t)
        v_hat = self.v[sel] / (1 - b2**t)
        self.w[sel] = self.w[sel] - self.lr[sel] * m_hat / (v_hat.sqrt() + self.EPS)

    def carried(self, f: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Face ``f``'s moments and total step count, for its track's next frame."""
        return self.m[f].detach().clone(), self.v[f].detach().clone(), int(self.t0[f] + self.taken[f])


class EarlyStop:
    """When each face of a batch stops, and the best latent it reached.

    A face stops when its step budget is spent, when its loss has not improved by
    ``early_stop_rel_tol`` (relative) for ``early_stop_patience`` steps, or when it diverges
    (loss NaN/inf, or above ``divergence_factor`` x its first loss: :attr:`diverged`).
    :attr:`best_w` and :attr:`best_terms` hold the lowest-loss latent seen and its losses.

    Conventions: ``start`` float ``[B,K,w_dim]``; ``max_steps`` int64 ``[B]``; the other
    per-face tensors are ``[B]`` on the CPU.
    """

    def __init__(self, start: torch.Tensor, max_steps: torch.Tensor, settings: OptimizeSettings) -> None:
        b = start.shape[0]
        assert max_steps.shape == (b,), (tuple(max_steps.shape), b)
        self.max_steps = max_steps
        self.patience = settings.early_stop_patience
        self.rel_tol = settings.early_stop_rel_tol
        self.divergence_factor = settings.divergence_factor
        self.best_w = start.clone()
        self.best = torch.full((b,), float("inf"))
        self.best_terms: dict[str, torch.Tensor] = {k: torch.zeros(b) for k in (*LOSS_TERMS, "total", "task")}
        self.first = torch.full((b,), float("nan"))
        self.last = torch.full((b,), float("nan"))
        self.since_best = torch.zeros(b, dtype=torch.long)
        self.active = torch.ones(b, dtype=torch.bool)
        self.diverged = torch.zeros(b, dtype=torch.bool)

    def observe(self, f: int, step: int, taken: int, w: torch.Tensor, terms: dict[str, float]) -> None:
        """Face ``f`` has loss ``terms["total"]`` at latent ``w`` after ``taken`` steps (batch step ``step``)."""
        value = terms["total"]
        if step == 0:
            self.first[f] = value
        self.last[f] = value
        if not math.isfinite(value) or (step > 0 and value > self.divergence_factor * float(self.first[f])):
            self.diverged[f] = True
            self.active[f] = False
            return
        if value < float(self.best[f]) * (1 - self.rel_tol) or step == 0:
            self.since_best[f] = 0
        else:
            self.since_best[f] += 1
        if value < float(self.best[f]):
            self.best[f] = value
            self.best_w[f] = w
            for k, term in terms.items():
                self.best_terms[k][f] = term
        if taken >= int(self.max_steps[f]) or int(self.since_best[f]) >= self.patience:
            self.active[f] = False


class OptimizingMapper:
    """Find each face-frame's latent by optimisation, warm-started along each track.

    ``generator``: a StyleGAN2 generator (frozen; only the latents get gradients).
    ``identity_net``: aligned ArcFace-template crop float ``[B,3,S,S]`` in [-1,1] ->
    unit embedding ``[B,D]`` (e.g. :class:`reenact.models.onnx_modules.OnnxIdentity`).
    ``landmark_net``: landmark crop ``[B,3,S,S]`` in [-1,1] -> ``[B,68,2]`` pixels of that
    crop (e.g. :class:`reenact.models.onnx_modules.OnnxLandmarks`); None only when the
    landmark weight is 0. All three are frozen and moved to the generator's device.
    ``seed``: seeds each track's random starts (per track, so chunking does not matter).
    """

    def __init__(
        self,
        generator: nn.Module,
        identity_net: nn.Module,
        landmark_net: nn.Module | None,
        settings: OptimizeSettings | None = None,
        geometry: CropGeometry | None = None,
        seed: int = 0,
    ) -> None:
        self.settings = settings or OptimizeSettings()
        self.seed = int(seed)
        gen_any: Any = generator
        self.G: Any = gen_any
        for name in ("num_ws", "w_dim", "z_dim", "img_resolution", "mapping", "synthesis"):
            if not hasattr(generator, name):
                raise ConfigError(f"generator has no attribute {name!r}; pass a reenact StyleGAN2 Generator")
        if landmark_net is None and self.settings.weights.landmarks > 0:
            raise ConfigError("the optimize mapper's landmark term (weights.landmarks > 0) needs a landmark "
                              "network; pass one or set optimize.weights.landmarks: 0")
        try:
            self.device = next(generator.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")
        self.identity_net: Any = identity_net
        self.landmark_net: Any = landmark_net
        for net in (generator, identity_net, landmark_net):
            if net is not None:
                net.to(self.device).eval().requires_grad_(False)
        res = int(self.G.img_resolution)
        if geometry is None:
            id_size = int(getattr(getattr(identity_net, "spec", None), "input_size", 112))
            lnd_size = int(getattr(getattr(landmark_net, "spec", None), "input_size", 112))
            geometry = crop_geometry(res, id_size, lnd_size, self.settings.inner_face_scale)
        if geometry.resolution != res:
            raise ShapeError(f"crop geometry is for {geometry.resolution} px, the generator makes {res} px")
        self.geometry = geometry
        self._id_m = geometry.identity_matrix.to(self.device)
        self._lnd_m = geometry.landmark_matrix.to(self.device)
        self._mask = geometry.mask.to(self.device)
        self._mask_sum = self._mask.sum() * 3
        w_avg = getattr(self.G.mapping, "w_avg", None)
        self._w_avg = (w_avg.detach().to(self.device) if w_avg is not None
                       else torch.zeros(int(self.G.w_dim), device=self.device))
        self._k = 1 if self.settings.space == "w" else int(self.G.num_ws)
        self._tracks: dict[int, _TrackState] = {}
        self._ssim_win = 3 if res <= 176 else 11
        self._ssim_size = max(res, 64)

    # --- state -------------------------------------------------------------------------

    @property
    def latent_rows(self) -> int:
        """K of the returned latents ``[F,K,w_dim]``: 1 for W, ``G.num_ws`` for W+."""
        return self._k

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self._tracks.clear()

    def end_track(self, track_id: int) -> None:
        """Forget one track (it left the video); its next face starts from scratch."""
        self._tracks.pop(int(track_id), None)

    def previous(self, track_id: int) -> torch.Tensor | None:
        """The last latent ``[K,w_dim]`` of ``track_id``, or None."""
        state = self._tracks.get(int(track_id))
        return None if state is None else state.latent.clone()

    def report(self) -> dict[int, dict[str, Any]]:
        """JSON-able per-track totals since the last reset: frames, steps, fallbacks, last losses."""
        return {
            tid: {
                "frames": s.frames,
                "steps": s.steps,
                "mean_steps": s.steps / max(s.frames, 1),
                "diverged": s.diverged,
                "final": dict(s.final),
            }
            for tid, s in sorted(self._tracks.items())
        }

    # --- losses ------------------------------------------------------------------------

    def _synth(self, w: torch.Tensor) -> torch.Tensor:
        ws = w.expand(-1, int(self.G.num_ws), -1) if w.shape[1] == 1 else w
        img: torch.Tensor = self.G.synthesis(ws, noise_mode="const")
        return img

    def _features(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity embedding [B,D] and inner landmarks [B,51,2] (crop-side units)."""
        b = img.shape[0]
        g = self.geometry
        id_in = warp_affine(img, self._id_m.expand(b, -1, -1), (g.identity_size, g.identity_size))
        emb = self.identity_net(id_in)
        if self.landmark_net is None:
            return emb, torch.zeros(b, len(INNER_POINTS), 2, device=img.device)
        lnd_in = warp_affine(img, self._lnd_m.expand(b, -1, -1), (g.landmark_size, g.landmark_size))
        pts = self.landmark_net(lnd_in)
        if pts.ndim != 3 or pts.shape[1:] != (68, 2):
            source = getattr(getattr(self.landmark_net, "spec", None), "path", "the landmark network")
            raise ShapeError(f"landmark model {source} (--landmark-model) must give 68 points [B,68,2], got "
                             f"{tuple(pts.shape)}; give a 68-point PFLD-style ONNX model")
        return emb, pts[:, list(INNER_POINTS)] / float(g.landmark_size)

    def _pixel_terms(self, img: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked L1 [B] and 1 - MS-SSIM [B] outside the inner face."""
        m = self._mask
        l1 = ((img - ref).abs() * m).flatten(1).sum(1) / self._mask_sum
        x = (img * m + 1) / 2
        y = (ref * m + 1) / 2
        if self._ssim_size != img.shape[-1]:
            size = (self._ssim_size, self._ssim_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        ssim = ms_ssim(x, y, data_range=1.0, size_average=False, win_size=self._ssim_win)
        return l1, 1.0 - ssim

    def _terms(
        self,
        w: torch.Tensor,
        crops: torch.Tensor,
        target: torch.Tensor,
        ref_pts: torch.Tensor,
        prev: torch.Tensor,
        has_prev: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        img = self._synth(w)
        emb, pts = self._features(img)
        l1, ssim = self._pixel_terms(img, crops)
        terms = {
            "identity": 1.0 - (F.normalize(emb, dim=1) * target).sum(1),
            "landmarks": ((pts - ref_pts) ** 2).sum(-1).mean(-1),
            "l1": l1,
            "ms_ssim": ssim,
            "prior": ((w - self._w_avg) ** 2).mean((1, 2)),
            "temporal": ((w - prev) ** 2).mean((1, 2)) * has_prev,
        }
        return terms

    def _combine(self, terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        wts = self.settings.weights
        task = sum(getattr(wts, k) * terms[k] for k in LOSS_TERMS if k != "temporal")
        total = task + wts.temporal * terms["temporal"]
        assert isinstance(total, torch.Tensor) and isinstance(task, torch.Tensor)
        return total, task

    @torch.no_grad()
    def evaluate(
        self, ws: torch.Tensor, crops: torch.Tensor, target_id: torch.Tensor, previous: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The unweighted loss terms (plus ``total`` and ``task``) of given latents.

        Conventions:
            ``ws`` float ``[F,K,w_dim]`` (K = 1 or ``G.num_ws``); ``crops``, ``target_id`` as in
            :meth:`map`; ``previous`` float ``[F,K,w_dim]`` or None (no temporal term).
            Returns float ``[F]`` tensors on the CPU keyed by :data:`LOSS_TERMS`.
        """
        n = crops.shape[0] if isinstance(crops, torch.Tensor) else -1
        crops, target_id, _, _ = self._check(crops, target_id, torch.zeros(max(n, 0), dtype=torch.long), None)
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[0] != n \
                or ws.shape[1] not in (1, int(self.G.num_ws)) or ws.shape[2] != int(self.G.w_dim):
            raise ShapeError(f"ws must be [F={n},K,{self.G.w_dim}] with K 1 or {self.G.num_ws}, "
                             f"got {tuple(getattr(ws, 'shape', ()))}")
        ws_checked = ws.to(self.device, torch.float32)
        prev = ws_checked if previous is None else previous.to(self.device, torch.float32)
        if prev.shape != ws_checked.shape:
            raise ShapeError(f"previous must be {tuple(ws_checked.shape)}, got {tuple(prev.shape)}")
        has_prev = torch.full((n,), 0.0 if previous is None else 1.0, device=self.device)
        out: dict[str, list[torch.Tensor]] = {}
        bs = self.settings.batch_size
        for i in range(0, n, bs):
            sl = slice(i, i + bs)
            _, ref = self._features(crops[sl])
            terms = self._terms(ws_checked[sl], crops[sl], target_id[sl], ref, prev[sl], has_prev[sl])
            terms["total"], terms["task"] = self._combine(terms)
            for k, v in terms.items():
                out.setdefault(k, []).append(v.cpu())
        return {k: torch.cat(v) for k, v in out.items()}

    # --- initialisation ----------------------------------------------------------------

    def _candidates(self, track_id: int) -> torch.Tensor:
        s = self.settings
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(track_id) % 1_000_003)
        z = torch.randn(s.init_candidates, int(self.G.z_dim), generator=gen).to(self.device)
        with torch.no_grad():
            ws: torch.Tensor = self.G.mapping(z, None, truncation_psi=s.init_truncation_psi)
        return ws[:, :1] if self._k == 1 else ws

    @torch.no_grad()
    def _best_start(
        self, track_ids: list[int], crops: torch.Tensor, target: torch.Tensor, ref_pts: torch.Tensor
    ) -> torch.Tensor:
        """For each new face: the candidate latent with the lowest task loss."""
        out = []
        n = self.settings.init_candidates
        for i, tid in enumerate(track_ids):
            cand = self._candidates(tid)
            zero = torch.zeros(n, device=self.device)
            terms = self._terms(cand, _repeat(crops, i, n), _repeat(target, i, n), _repeat(ref_pts, i, n),
                                cand, zero)
            _, task = self._combine(terms)
            task = torch.where(torch.isfinite(task), task, torch.full_like(task, float("inf")))
            out.append(cand[int(task.argmin())])
        return torch.stack(out)

    # --- the public call ---------------------------------------------------------------

    def map(
        self,
        crops: torch.Tensor,
        target_id: torch.Tensor,
        track_ids: torch.Tensor,
        *,
        initial: torch.Tensor | None = None,
        record_history: bool = False,
        warm_start: bool = True,
    ) -> tuple[torch.Tensor, FrameStats]:
        """Latents for the faces of a chunk, and what it took.

        Conventions:
            ``crops`` float ``[F,3,R,R]`` in [-1,1] (aligned input faces, R =
            ``G.img_resolution``); ``target_id`` float ``[F,D]`` unit rows (the identity
            each face should get); ``track_ids`` int64 ``[F]``, faces of a track in time
            order. ``initial`` (optional) float ``[F,K,w_dim]`` or ``[F,w_dim]``: start
            latents for faces whose track has no previous frame (e.g. the trained mapper's;
            in W mode a W+ start is averaged to one row).
            Returns ``ws`` float ``[F,K,w_dim]`` (K = :attr:`latent_rows`; expand to
            ``G.num_ws`` rows for synthesis) on the generator's device, and
            :class:`FrameStats`. ``warm_start=False`` starts every face from scratch, without
            the temporal term (for comparisons); the track state is still updated.
        """
        crops, target_id, track_ids, initial = self._check(crops, target_id, track_ids, initial)
        n = crops.shape[0]
        out = _ChunkOut.empty(n, self._k, int(self.G.w_dim), self.device, record_history)
        if n == 0:
            return out.ws, out.stats(track_ids)
        with torch.no_grad():
            feats = [self._features(crops[i : i + self.settings.batch_size])
                     for i in range(0, n, self.settings.batch_size)]
        ref_pts = torch.cat([f[1] for f in feats])
        if feats[0][0].shape[1] != target_id.shape[1]:
            raise ShapeError(f"target_id has {target_id.shape[1]}-d codes but the identity network gives "
                             f"{feats[0][0].shape[1]}-d; embed the target with the same identity model")
        ids = track_ids.tolist()
        for wave in _time_steps(ids):
            for start in range(0, wave.numel(), self.settings.batch_size):
                idx = wave[start : start + self.settings.batch_size]
                self._run_batch(idx, crops, target_id, ids, ref_pts, initial, warm_start, out)
        return out.ws, out.stats(track_ids)

    def _check(
        self, crops: torch.Tensor, target_id: torch.Tensor, track_ids: torch.Tensor, initial: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        res = int(self.G.img_resolution)
        if not isinstance(crops, torch.Tensor) or crops.ndim != 4 or tuple(crops.shape[1:]) != (3, res, res) \
                or not crops.is_floating_point():
            raise ShapeError(f"crops must be float [F,3,{res},{res}] in [-1,1] (aligned to the generator's "
                             f"crop), got {tuple(getattr(crops, 'shape', ()))} {getattr(crops, 'dtype', '')}")
        n = crops.shape[0]
        if not torch.isfinite(crops).all() or (n and crops.abs().max() > 1.0 + 1e-3):
            raise ShapeError("crops must be finite and in [-1,1]; convert uint8 with x / 127.5 - 1")
        if not isinstance(target_id, torch.Tensor) or target_id.ndim != 2 or target_id.shape[0] != n \
                or not target_id.is_floating_point():
            raise ShapeError(f"target_id must be float [F={n},D], got {tuple(getattr(target_id, 'shape', ()))}")
        if not torch.isfinite(target_id).all():
            raise ShapeError("target_id contains NaN or infinity")
        norms = target_id.norm(dim=1)
        if n and ((norms - 1).abs() > 1e-3).any():
            raise ShapeError(f"target_id rows must have unit L2 norm (got norms {norms.tolist()[:4]}...); "
                             "L2-normalise the identity embeddings")
        if not isinstance(track_ids, torch.Tensor) or track_ids.shape != (n,) or track_ids.is_floating_point() \
                or track_ids.dtype == torch.bool:
            raise ShapeError(f"track_ids must be int64 [F={n}], got {tuple(getattr(track_ids, 'shape', ()))} "
                             f"{getattr(track_ids, 'dtype', '')}")
        if initial is not None:
            if initial.ndim == 2:
                initial = initial[:, None]
            if initial.ndim != 3 or initial.shape[0] != n or initial.shape[2] != int(self.G.w_dim) \
                    or initial.shape[1] not in (1, int(self.G.num_ws)):
                raise ShapeError(f"initial must be [F={n},K,{self.G.w_dim}] with K 1 or {self.G.num_ws}, "
                                 f"got {tuple(initial.shape)}")
            if not torch.isfinite(initial).all():
                raise ShapeError("initial latents contain NaN or infinity")
            initial = initial.to(self.device, torch.float32)
            initial = initial.mean(1, keepdim=True) if self._k == 1 else initial.expand(-1, self._k, -1)
        return (crops.to(self.device, torch.float32), target_id.to(self.device, torch.float32),
                track_ids.to(torch.long), initial)

    def _run_batch(
        self,
        idx: torch.Tensor,
        crops: torch.Tensor,
        target_id: torch.Tensor,
        ids: list[int],
        ref_pts: torch.Tensor,
        initial: torch.Tensor | None,
        warm_start: bool,
        out: _ChunkOut,
    ) -> None:
        """Optimise the faces ``idx`` of a chunk together (one time step: one face per track).

        Steps: 1. start latents; 2. Adam steps until :class:`EarlyStop` stops every face;
        3. results into ``out`` and the tracks' state.
        """
        s = self.settings
        dev = self.device
        tids = [ids[i] for i in idx.tolist()]
        states = [self._tracks.get(t) for t in tids]
        is_warm = torch.tensor([st is not None and warm_start for st in states], dtype=torch.bool)
        has_prev = is_warm.to(dev, torch.float32)  # the temporal term applies to warm starts
        prev = torch.stack([st.latent if st is not None else torch.zeros(self._k, int(self.G.w_dim), device=dev)
                            for st in states])
        c, tgt, rp = crops[idx], target_id[idx], ref_pts[idx]
        # 1. starting points
        start = self._starts(prev, is_warm, idx, tids, c, tgt, rp, initial)
        # 2. optimise: warm faces continue the track's Adam state
        lr = torch.where(is_warm, s.lr_warm, s.lr_first).to(dev)[:, None, None]
        adam = BatchAdam(start, lr, [(st.adam_m, st.adam_v, st.adam_t) if st is not None and bool(is_warm[f])
                                     else None for f, st in enumerate(states)])
        stop = EarlyStop(start, torch.where(is_warm, s.steps_warm, s.steps_first), s)
        step = 0
        while True:
            act = torch.nonzero(stop.active).flatten()
            # evaluate at the current latent (every active face), then step
            wa = adam.w[act].detach().requires_grad_(True)
            terms, total, task, grad = self._loss_and_grad(wa, c[act], tgt[act], rp[act], prev[act], has_prev[act])
            self._observe(step, act, idx, terms, total, task, wa, adam, stop, out)
            still = stop.active[act].to(dev)
            if not still.any():
                break
            adam.step(act[still.cpu()], grad[still])
            step += 1
        # 3. results
        self._finish_batch(idx, tids, states, is_warm, start, adam, stop, out)

    def _starts(
        self,
        prev: torch.Tensor,
        is_warm: torch.Tensor,
        idx: torch.Tensor,
        tids: list[int],
        crops: torch.Tensor,
        target: torch.Tensor,
        ref_pts: torch.Tensor,
        initial: torch.Tensor | None,
    ) -> torch.Tensor:
        """Start latents ``[B,K,w_dim]``: the previous frame's for warm faces; for the others the
        given ``initial`` latent, else the best random start."""
        start = prev.clone()
        cold = torch.nonzero(~is_warm).flatten()
        if cold.numel():
            if initial is not None:
                start[cold] = initial[idx[cold]]
            else:
                start[cold] = self._best_start([tids[i] for i in cold.tolist()], crops[cold], target[cold],
                                               ref_pts[cold])
        return start

    def _loss_and_grad(
        self,
        w: torch.Tensor,
        crops: torch.Tensor,
        target: torch.Tensor,
        ref_pts: torch.Tensor,
        prev: torch.Tensor,
        has_prev: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss terms, total and task loss ``[B]`` at the leaf latents ``w``, and d(total)/dw
        (faces whose total is not finite add nothing to it)."""
        with torch.enable_grad():
            terms = self._terms(w, crops, target, ref_pts, prev, has_prev)
            total, task = self._combine(terms)
            finite = torch.isfinite(total)
            if finite.any():
                (grad,) = torch.autograd.grad(total[finite].sum(), w)
            else:
                grad = torch.zeros_like(w)
        return terms, total, task, grad

    @staticmethod
    def _observe(
        step: int,
        act: torch.Tensor,
        idx: torch.Tensor,
        terms: dict[str, torch.Tensor],
        total: torch.Tensor,
        task: torch.Tensor,
        w: torch.Tensor,
        adam: BatchAdam,
        stop: EarlyStop,
        out: _ChunkOut,
    ) -> None:
        """Record the active faces' losses (initial terms, history) and let :class:`EarlyStop` judge them."""
        tot = total.detach().cpu()
        tsk = task.detach().cpu()
        terms_cpu = {k: v.detach().cpu() for k, v in terms.items()}
        for j, f in enumerate(act.tolist()):
            face = int(idx[f])
            row = {**{k: float(terms_cpu[k][j]) for k in LOSS_TERMS}, "total": float(tot[j]), "task": float(tsk[j])}
            if step == 0:
                for k, value in row.items():
                    out.initial[k][face] = value
            if out.history is not None and out.task_history is not None:
                out.history[face].append(row["total"])
                out.task_history[face].append(row["task"])
            stop.observe(f, step, int(adam.taken[f]), w[j].detach(), row)

    def _finish_batch(
        self,
        idx: torch.Tensor,
        tids: list[int],
        states: list[_TrackState | None],
        is_warm: torch.Tensor,
        start: torch.Tensor,
        adam: BatchAdam,
        stop: EarlyStop,
        out: _ChunkOut,
    ) -> None:
        """Each face's latent and losses into ``out``; each track's latent and Adam state carried on.

        A diverged face gets its start latent (the previous frame's, or the first start), whose
        losses on this frame were measured at step 0.
        """
        for f, (tid, st) in enumerate(zip(tids, states, strict=True)):
            face = int(idx[f])
            taken = int(adam.taken[f])
            bad = bool(stop.diverged[f])
            if bad:
                result = st.latent if st is not None else start[f]
                out.diverged[face] = True
                log.warning("optimize: track %d diverged after %d steps (loss %.4g from %.4g); using the "
                            "previous latent", tid, taken, float(stop.last[f]), float(stop.first[f]))
                for k in out.final:
                    out.final[k][face] = out.initial[k][face]
            else:
                result = stop.best_w[f]
                for k in out.final:
                    out.final[k][face] = stop.best_terms[k][f]
            out.ws[face] = result
            out.steps[face] = taken
            out.warm[face] = bool(is_warm[f])
            if st is None:
                st = _TrackState(result.detach().clone(), torch.zeros_like(result), torch.zeros_like(result))
                self._tracks[tid] = st
            if not bad:
                st.adam_m, st.adam_v, st.adam_t = adam.carried(f)
            st.latent = result.detach().clone()
            st.frames += 1
            st.steps += taken
            st.diverged += int(bad)
            st.final = {k: float(out.final[k][face]) for k in out.final}


class OptimizingMapping:
    """The pipeline's view of the backend: ``(crops, id_codes, track_ids) -> ws``.

    Wraps an :class:`OptimizingMapper`; ``last_stats`` holds the latest chunk's
    :class:`FrameStats` and :meth:`report` the per-track totals (steps, final losses,
    fallbacks) for the run's JSON report.
    """

    def __init__(self, mapper: OptimizingMapper, initial: Any = None) -> None:
        self.mapper = mapper
        self.initial = initial
        """Optional ``(crops, id_codes, track_ids) -> ws`` giving new tracks their start (a trained mapper)."""
        self.last_stats: FrameStats | None = None
        self._finished: dict[int, dict[str, Any]] = {}

    def __call__(self, crops: torch.Tensor, id_codes: torch.Tensor, track_ids: list[int]) -> torch.Tensor:
        """Conventions: crops float ``[F,3,R,R]`` in [-1,1]; id_codes float ``[F,D]`` unit rows
        (the identity model's, target or synthetic); returns ws float ``[F,G.num_ws,w_dim]``."""
        ids = torch.as_tensor(list(track_ids), dtype=torch.long)
        start = None
        if self.initial is not None and any(self.mapper.previous(t) is None for t in track_ids):
            with torch.no_grad():
                start = self.initial(crops, id_codes, list(track_ids))
        ws, self.last_stats = self.mapper.map(crops, id_codes, ids, initial=start)
        return ws.expand(-1, int(self.mapper.G.num_ws), -1).contiguous()

    def end_track(self, track_id: int) -> None:
        """The track has left the video: keep its report, free its latent and optimiser state."""
        finished = self.mapper.report().get(int(track_id))
        if finished is not None:
            self._finished[int(track_id)] = finished
        self.mapper.end_track(track_id)

    def report(self) -> dict[int, dict[str, Any]]:
        """Per-track frames, steps, fallbacks and last final losses (JSON-able), ended tracks included."""
        return {**self._finished, **self.mapper.report()}


def identity_net_for(encoder: Any) -> OnnxIdentity:
    """The differentiable twin of a pack's identity encoder (same file, same normalisation).

    Only ONNX ArcFace-family encoders have one; dlib's descriptor is not differentiable.
    """
    path = getattr(encoder, "path", None)
    mean, std = getattr(encoder, "input_mean", None), getattr(encoder, "input_std", None)
    if path is None or mean is None or std is None or Path(str(path)).suffix.lower() != ".onnx":
        raise ConfigError(
            f"the optimize mapper needs a differentiable identity model, but the pack's identity model "
            f"is {getattr(encoder, 'name', type(encoder).__name__)}; use an ONNX ArcFace-family model "
            "(--identity-model with --identity-mean/--identity-std, or --faces-backend insightface)"
        )
    size = int(getattr(encoder, "crop_size", 112))
    return OnnxIdentity(OnnxModelSpec(str(path), input_size=size, input_scale=255.0, mean=float(mean),
                                      std=float(std)))


def make_optimizing_mapping(pack: Any, settings: OptimizeSettings, seed: int) -> OptimizingMapping:
    """Build the ``optimize`` backend for a loaded pack, its settings and the run's seed.

    The identity network is the differentiable twin of ``pack.identity`` (so the target
    codes and the loss share one embedding space); the landmark network is
    ``settings.landmark_model``; ``seed`` (the pipeline's ``seed``) seeds the random starts.
    """
    if not isinstance(settings, OptimizeSettings):
        raise ConfigError(f"optimize settings must be OptimizeSettings, got {type(settings).__name__}")
    identity = identity_net_for(pack.identity)
    landmarks: OnnxLandmarks | None = None
    if settings.landmark_model.path:
        landmarks = OnnxLandmarks(settings.landmark_model)
    elif settings.weights.landmarks > 0:
        raise ConfigError(
            "the optimize mapper needs a differentiable 68-point landmark ONNX model: give --landmark-model "
            "(optimize.landmark_model.path; PFLD-style, Nx3x112x112 RGB/255 -> [N,136]) or set "
            "optimize.weights.landmarks: 0"
        )
    return OptimizingMapping(OptimizingMapper(pack.generator, identity, landmarks, settings, seed=seed))


__all__ = [
    "INNER_POINTS",
    "OptimizingMapping",
    "identity_net_for",
    "make_optimizing_mapping",
    "LOSS_TERMS",
    "BatchAdam",
    "CropGeometry",
    "EarlyStop",
    "FrameStats",
    "OptimizeLossWeights",
    "OptimizeSettings",
    "OptimizingMapper",
    "crop_geometry",
]
