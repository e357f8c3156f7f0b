"""The trainer: the paper's recipe on a frozen generator, single process or torchrun (DDP).

One step (``s``): identity image = attribute image, except every ``cross_frequency``-th
step (``s % cross_frequency == 0``) where the identity images are the batch rolled by one.
The attribute encoder and mapper take one Adam step on the identity + landmark (+ pixel
on same-identity steps) losses; on every ``d_every``-th step the W discriminator takes
one on the logistic loss with R1; then the mapper takes one adversarial step at
``adv_g_lr_mult`` x lr. In a multi-process run every gradient is averaged over the
processes before each optimiser step and batch-norm buffers follow rank 0, so the replicas
stay identical (checked at every checkpoint).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from reenact.config import dump_yaml, from_dict, to_dict
from reenact.errors import ConfigError, TrainingError
from reenact.models.encoders import AttributeEncoder
from reenact.models.mapper import Mapper, WDiscriminator
from reenact.train import losses as L
from reenact.train.config import GeneratorConfig, TrainConfig
from reenact.train.dataset import ShardDataset, StepBatchSampler
from reenact.train.face_nets import FaceCritics

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "reenact-train-checkpoint"
LAST = "last.safetensors"
BEST_IDENTITY = "best_identity.safetensors"
BEST_LANDMARK = "best_landmark.safetensors"
LOG_FIELDS = ["step", "cross", "loss", "identity", "landmarks", "pixel", "d_loss", "r1", "g_adv", "d_acc", "seconds"]


def build_generator(config: GeneratorConfig, device: torch.device | str = "cpu") -> Any:
    """The frozen generator named by ``config`` (eval mode, no gradients), checked for its resolution."""
    from reenact.models.onnx_modules import resolve_model_path
    from reenact.models.stylegan2 import load_generator, tiny_generator

    G: Any
    if config.kind == "stylegan1":
        from reenact.models.stylegan1 import load_stylegan1, tiny_stylegan1

        G = (load_stylegan1(resolve_model_path(config.path), device=device) if config.path
             else tiny_stylegan1(config.tiny_seed, config.resolution))
        if not G.has_mapping:
            raise ConfigError(
                f"generator {config.path}: training samples w through the StyleGAN v1 mapping network, "
                "which this file lacks; import the official v1 .pkl with it (reenact models import paper)"
            )
    else:
        G = (load_generator(resolve_model_path(config.path), device=device) if config.path
             else tiny_generator(config.tiny_seed, config.resolution))
    if int(G.img_resolution) != config.resolution:
        raise ConfigError(
            f"generator.resolution is {config.resolution} but {config.path or 'the tiny generator'} "
            f"renders {G.img_resolution} px; set generator.resolution (--resolution) to {G.img_resolution}"
        )
    G = G.to(device).eval()
    G.requires_grad_(False)
    return G


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def param_checksum(modules: list[nn.Module]) -> float:
    """A float64 fingerprint of all parameters and buffers (equal replicas give equal values)."""
    total = 0.0
    for module in modules:
        for i, t in enumerate(list(module.parameters()) + list(module.buffers())):
            if t.is_floating_point():
                total += float(t.detach().double().sum()) * (1 + 1e-3 * i) + float(t.detach().double().abs().sum())
    return total


@dataclass
class StepResult:
    """Losses of one step (``nan`` where a loss was not computed on that step)."""

    step: int
    cross: bool
    loss: float
    identity: float
    landmarks: float
    pixel: float
    d_loss: float
    r1: float
    g_adv: float
    d_acc: float
    seconds: float

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in LOG_FIELDS}


class Trainer:
    """Trains the attribute encoder, mapper and W discriminator of ``config``.

    ``G`` and ``critics`` may be passed in (to share them between runs); otherwise they are
    built from the config. Construction resumes from ``config.run.resume`` when set.
    """

    def __init__(self, config: TrainConfig, G: Any = None, critics: FaceCritics | None = None) -> None:
        self.config = config
        if config.run.num_threads > 0:
            torch.set_num_threads(config.run.num_threads)
        self.rank, self.world_size = _dist_info()
        local_rank = self.rank % max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 0
        self.device = _resolve_device(config.run.device, local_rank)
        self.results = Path(config.run.results_dir)
        self.is_main = self.rank == 0

        self.G: Any = G if G is not None else build_generator(config.generator, self.device)
        self.G.to(self.device)
        if int(self.G.img_resolution) != config.generator.resolution:
            raise ConfigError(f"generator renders {self.G.img_resolution} px, generator.resolution is {config.generator.resolution}")
        if int(self.G.w_dim) != config.mapper.w_dim:
            raise ConfigError(f"mapper.w_dim {config.mapper.w_dim} must equal the generator's w_dim {self.G.w_dim}")
        self.num_ws = int(self.G.num_ws)
        self.resolution = int(self.G.img_resolution)
        self.critics = (critics if critics is not None else FaceCritics(config.face_models, self.resolution)).to(self.device)
        if self.critics.id_dim != config.mapper.id_dim:
            raise ConfigError(
                f"mapper.id_dim {config.mapper.id_dim} must equal the identity model's embedding size {self.critics.id_dim}"
            )

        torch.manual_seed(config.run.seed)
        self.attr = AttributeEncoder(config.attribute_encoder).to(self.device).train()
        self.mapper = Mapper(config.mapper).to(self.device).train()
        self.disc = WDiscriminator(config.discriminator).to(self.device).train()
        self._broadcast_state()
        o = config.optim
        self.opt_main = torch.optim.Adam(list(self.attr.parameters()) + list(self.mapper.parameters()), lr=o.lr, betas=o.betas)
        self.opt_adv = torch.optim.Adam(self.mapper.parameters(), lr=o.lr * o.adv_g_lr_mult, betas=o.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=o.lr * o.d_lr_mult, betas=o.betas)
        self.mask = L.inverse_gaussian_mask(self.resolution, config.loss.mask_sigma, self.device)

        self.dataset = ShardDataset(config.dataset.path)
        info = self.dataset.info
        if info.resolution != self.resolution or info.w_dim != config.mapper.w_dim:
            raise TrainingError(
                f"dataset {info.root} was made at {info.resolution} px / w_dim {info.w_dim}, the generator is "
                f"{self.resolution} px / w_dim {config.mapper.w_dim}; make a dataset with this generator"
            )
        n = len(self.dataset)
        if config.run.eval_size >= n:
            raise ConfigError(f"run.eval_size {config.run.eval_size} must be smaller than the dataset ({n} images)")
        n_train = n - config.run.eval_size
        if config.run.train_data_size:
            n_train = min(n_train, config.run.train_data_size)
        self.train_indices = list(range(n_train))
        self.eval_indices = list(range(n - config.run.eval_size, n))

        self.step = 0
        self.best: dict[str, float] = {"identity": -math.inf, "landmarks": math.inf}
        self.last_checkpoint: Path | None = None
        resume = config.run.resume
        if resume == "auto":
            resume = str(self.results / LAST) if (self.results / LAST).is_file() else None
        if resume:
            self.load_checkpoint(resume)

    # --- distributed helpers ------------------------------------------------------------
    def _modules(self) -> list[nn.Module]:
        return [self.attr, self.mapper, self.disc]

    def _broadcast_state(self) -> None:
        if self.world_size == 1:
            return
        for module in self._modules():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def _sync_grads(self, params: Iterator[nn.Parameter] | list[nn.Parameter]) -> None:
        if self.world_size == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    def _sync_buffers(self) -> None:
        if self.world_size == 1:
            return
        for t in self.attr.buffers():
            dist.broadcast(t.data, src=0)

    # --- one step -------------------------------------------------------------------------
    def _images(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True).float() / 127.5 - 1.0

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """One w per image, repeated over every style layer -> images ``[B,3,R,R]`` in [-1,1]."""
        ws = w[:, None, :].expand(w.shape[0], self.num_ws, w.shape[1])
        out: torch.Tensor = self.G.synthesis(ws, noise_mode="const")
        return out

    def train_step(self, images: torch.Tensor, w_real: torch.Tensor) -> StepResult:
        """One step of the recipe on a batch (images uint8 ``[B,3,R,R]``, real w ``[B,w_dim]``)."""
        cfg, lw, step = self.config, self.config.loss, self.step
        start = time.perf_counter()
        x = self._images(images)
        w_real = w_real.to(self.device).float()
        cross = step % cfg.optim.cross_frequency == 0
        id_img = x.roll(1, dims=0) if cross else x
        with torch.no_grad():
            id_emb = self.critics.embed(id_img)
            attr_points = self.critics.points(x)

        attr_code = self.attr(x)
        codes = torch.cat([id_emb, attr_code], dim=1)
        w = self.mapper(codes)
        out = self.synthesize(w)
        loss_id = L.identity_loss(id_emb, self.critics.embed(out))
        loss_lmk = L.landmark_loss(attr_points, self.critics.points(out), cfg.face_models.landmarks.input_size,
                                   cfg.face_models.landmark_first)
        total = lw.identity * loss_id + lw.landmarks * loss_lmk
        loss_pix = torch.tensor(float("nan"))
        if not cross:
            loss_pix = L.pixel_loss(x, out, self.mask, lw.ms_ssim, lw.l1, lw.ms_ssim_weights, lw.ms_ssim_window)
            total = total + lw.pixel * loss_pix
        self._check_finite(total, "reconstruction loss")
        self.opt_main.zero_grad(set_to_none=True)
        total.backward()
        self._sync_grads(list(self.attr.parameters()) + list(self.mapper.parameters()))
        self.opt_main.step()
        self._sync_buffers()

        d_loss = r1 = d_acc = float("nan")
        if step % cfg.optim.d_every == 0:
            real = w_real.detach().requires_grad_(True)
            real_logits = self.disc(real)
            fake_logits = self.disc(w.detach())
            loss_d = L.d_logistic_loss(real_logits, fake_logits)
            loss_r1 = L.r1_penalty(real_logits, real, lw.r1_gamma)
            self._check_finite(loss_d + loss_r1, "discriminator loss")
            self.opt_d.zero_grad(set_to_none=True)
            (loss_d + loss_r1).backward()
            self._sync_grads(list(self.disc.parameters()))
            self.opt_d.step()
            d_loss, r1 = float(loss_d.detach()), float(loss_r1.detach())
            d_acc = L.discriminator_accuracy(real_logits.detach(), fake_logits.detach())

        g_adv = float("nan")
        if lw.adversarial > 0:
            fake_logits = self.disc(self.mapper(codes.detach()))
            loss_g = lw.adversarial * L.g_nonsaturating_loss(fake_logits)
            self._check_finite(loss_g, "adversarial loss")
            self.opt_adv.zero_grad(set_to_none=True)
            loss_g.backward()
            self._sync_grads(list(self.mapper.parameters()))
            self.opt_adv.step()
            g_adv = float(loss_g.detach())
        self.disc.zero_grad(set_to_none=True)
        self.step += 1
        return StepResult(step, cross, float(total.detach()), float(loss_id.detach()), float(loss_lmk.detach()),
                          float(loss_pix.detach()),
                          d_loss, r1, g_adv, d_acc, time.perf_counter() - start)

    def _check_finite(self, loss: torch.Tensor, what: str) -> None:
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self.world_size > 1:  # every process stops together (no one left waiting in a collective)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if float(finite) < 1:
            kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
            raise TrainingError(
                f"{what} is {float(loss.detach())} at step {self.step}; training stopped, {kept}. Lower optim.lr or check the data"
            )

    # --- data -----------------------------------------------------------------------------
    def batches(self, start_step: int, steps: int) -> torch.utils.data.DataLoader:
        """The data loader for steps ``start_step..steps-1`` (this process's share of each batch)."""
        sampler = StepBatchSampler(self.train_indices, self.config.run.batch_size, self.config.run.seed,
                                   start_step, steps, self.rank, self.world_size)
        workers = self.config.run.num_workers
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
        )

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, write_grid: bool = True) -> dict[str, float]:
        """Identity similarity and landmark error on the held-out images (cross pairs), and a grid PNG.

        identity_similarity: mean cosine between the identity input's embedding and the
        output's; landmark_error: RMS landmark distance (non-jaw) as a fraction of the crop.
        """
        self.attr.eval()
        self.mapper.eval()
        try:
            items = [self.dataset[i] for i in self.eval_indices]
            x = self._images(torch.stack([im for im, _ in items]))
            id_img = x.roll(1, dims=0)
            id_emb = self.critics.embed(id_img)
            out = self.synthesize(self.mapper(torch.cat([id_emb, self.attr(x)], 1)))
            sim = float((self.critics.embed(out) * id_emb).sum(1).mean())
            lmk = float(L.landmark_loss(self.critics.points(x), self.critics.points(out),
                                        self.config.face_models.landmarks.input_size,
                                        self.config.face_models.landmark_first).sqrt())
            if write_grid and self.is_main:
                self.write_grid(x[: min(4, x.shape[0])], self.results / "grids" / f"step_{self.step:07d}.png")
        finally:
            self.attr.train()
            self.mapper.train()
        return {"identity_similarity": sim, "landmark_error": lmk}

    @torch.no_grad()
    def write_grid(self, faces: torch.Tensor, path: Path) -> Path:
        """PNG grid: first row attribute images, first column identity images, cells the outputs.

        Conventions: ``faces`` float ``[N,3,R,R]`` in [-1,1].
        """
        from PIL import Image

        n, r = faces.shape[0], self.resolution
        id_emb = self.critics.embed(faces)
        attr_code = self.attr(faces)
        canvas = torch.full((3, (n + 1) * r, (n + 1) * r), -1.0, device=faces.device)
        for j in range(n):
            canvas[:, :r, (j + 1) * r : (j + 2) * r] = faces[j]
        for i in range(n):
            canvas[:, (i + 1) * r : (i + 2) * r, :r] = faces[i]
            codes = torch.cat([id_emb[i : i + 1].expand(n, -1), attr_code], 1)
            row = self.synthesize(self.mapper(codes))
            for j in range(n):
                canvas[:, (i + 1) * r : (i + 2) * r, (j + 1) * r : (j + 2) * r] = row[j]
        array = ((canvas.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().byte().cpu().numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        return path

    # --- checkpoints ----------------------------------------------------------------------
    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": self.opt_main, "adv": self.opt_adv, "d": self.opt_d}

    def save_checkpoint(self, path: str | Path) -> Path:
        """Weights, optimiser state, step and resolved config in one safetensors file (atomic)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("attr", self.attr), ("mapper", self.mapper), ("disc", self.disc)):
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
        groups: dict[str, Any] = {}
        for name, opt in self._optimizers().items():
            state = opt.state_dict()
            groups[name] = state["param_groups"]
            for idx, pstate in state["state"].items():
                for key, value in pstate.items():
                    tensors[f"opt.{name}.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
        metadata = {
            "format": CHECKPOINT_FORMAT,
            "step": str(self.step),
            "config": json.dumps(to_dict(self.config)),
            "architecture": json.dumps(self.config.architecture(), sort_keys=True),
            "optimizer_groups": json.dumps(groups),
            "best": json.dumps(self.best),
            "num_ws": str(self.num_ws),
            "resolution": str(self.resolution),
            "id_dim": str(self.critics.id_dim),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimiser state and step exactly; a different architecture is refused."""
        tensors, meta = read_checkpoint(path)
        theirs = json.loads(meta["architecture"])
        ours = json.loads(json.dumps(self.config.architecture(), sort_keys=True))
        if theirs != ours:
            diff = sorted(k for k in ours if theirs.get(k) != ours.get(k))
            raise TrainingError(
                f"cannot resume from {path}: it was trained with a different architecture ({', '.join(diff)}: "
                f"{ {k: theirs.get(k) for k in diff} }); use the config it was made with or start a new run"
            )
        for prefix, module in (("attr", self.attr), ("mapper", self.mapper), ("disc", self.disc)):
            state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            module.load_state_dict(state, strict=True)
        groups = json.loads(meta["optimizer_groups"])
        for name, opt in self._optimizers().items():
            opt_state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith(f"opt.{name}."):
                    idx, skey = key.split(".", 3)[2:]
                    opt_state.setdefault(int(idx), {})[skey] = value.to(self.device)
            opt.load_state_dict({"state": opt_state, "param_groups": groups[name]})
        self.step = int(meta["step"])
        self.best = json.loads(meta["best"])
        self.last_checkpoint = Path(path)
        self._broadcast_state()

    # --- the loop -------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> list[StepResult]:
        """Train up to ``steps`` (default ``run.steps``) total steps; returns this call's step results.

        Writes (rank 0) ``config.yaml``, ``log.csv``, ``eval.csv``, ``grids/*.png``,
        ``last.safetensors``, ``best_identity.safetensors``, ``best_landmark.safetensors``
        and ``summary.json`` under ``run.results_dir``.
        """
        from tqdm import tqdm

        run = self.config.run
        total_steps = run.steps if steps is None else steps
        if self.is_main:
            self.results.mkdir(parents=True, exist_ok=True)
            dump_yaml(self.config, self.results / "config.yaml")
        history: list[StepResult] = []
        log_path = self.results / "log.csv"
        new_log = not log_path.is_file() or self.step == 0
        log_fh = log_path.open("w" if new_log else "a", newline="") if self.is_main else None
        writer = csv.DictWriter(log_fh, fieldnames=LOG_FIELDS) if log_fh else None
        if writer and new_log:
            writer.writeheader()
        bar = tqdm(total=total_steps, initial=self.step, unit="step", disable=not (run.progress and self.is_main),
                   desc="fit")
        try:
            for images, w_real in self.batches(self.step, total_steps):
                result = self.train_step(images, w_real)
                history.append(result)
                if writer is not None and log_fh is not None:
                    writer.writerow(result.row())
                    if self.step % run.log_every == 0:
                        log_fh.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss:.4f}", id=f"{result.identity:.4f}")
                if self.step % run.eval_every == 0 or self.step == total_steps:
                    self._evaluate_and_keep_best()
                if self.step % run.checkpoint_every == 0 or self.step == total_steps:
                    self._checkpoint()
        finally:
            bar.close()
            if log_fh is not None:
                log_fh.close()
        return history

    def _evaluate_and_keep_best(self) -> None:
        metrics = self.evaluate()
        if not self.is_main:
            return
        eval_path = self.results / "eval.csv"
        new = not eval_path.is_file()
        with eval_path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["step", "identity_similarity", "landmark_error"])
            if new:
                writer.writeheader()
            writer.writerow({"step": self.step, **metrics})
        if metrics["identity_similarity"] > self.best["identity"]:
            self.best["identity"] = metrics["identity_similarity"]
            self.save_checkpoint(self.results / BEST_IDENTITY)
        if metrics["landmark_error"] < self.best["landmarks"]:
            self.best["landmarks"] = metrics["landmark_error"]
            self.save_checkpoint(self.results / BEST_LANDMARK)

    def _checkpoint(self) -> None:
        checksum = param_checksum(self._modules())
        sums = [checksum]
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, checksum)
            sums = [float(v) for v in gathered]
            if len(set(sums)) != 1:
                raise TrainingError(f"replicas diverged at step {self.step}: parameter checksums {sums}")
        if self.is_main:
            self.last_checkpoint = self.save_checkpoint(self.results / LAST)
            summary = {"step": self.step, "world_size": self.world_size, "replica_checksums": sums,
                       "best": self.best, "last_checkpoint": str(self.last_checkpoint)}
            (self.results / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a training checkpoint; errors name the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise TrainingError(f"checkpoint {path} is unreadable: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a reenact-train checkpoint")
    return tensors, meta


def checkpoint_config(path: str | Path) -> TrainConfig:
    """The resolved training config stored in a checkpoint."""
    _, meta = read_checkpoint(path)
    return from_dict(TrainConfig, json.loads(meta["config"]), where=f"{path} (config)")
