"""``reenact-train``: make-dataset, fit (one process or torchrun) and export.

The authors' flags (``--resolution``, ``--batch_size``, ``--num_images``, ``--output_path``,
``--pretrained_models_path``, ``--dataset_path``, ``--cross_frequency``,
``--train_data_size``, ``--results_dir``, ``--load_checkpoint``) override the config keys
listed in :data:`AUTHOR_FLAGS`; ``--set key=value`` overrides any key.

Registered in :data:`reenact.cli.COMMANDS` like every command (``add_args``/``run``), so its
errors become exit statuses in the one guard. Training (:mod:`reenact.train`, which loads
torch) is imported inside the ``run`` functions. Several processes:
``torchrun --nproc_per_node N -m reenact.cli.train fit ...``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reenact.errors import ConfigError

if TYPE_CHECKING:
    from reenact.train.config import TrainConfig

HELP = "train the identity-disentanglement model: make-dataset, fit (torchrun for several GPUs), export"
#: what a stopped or interrupted training run leaves behind
LEFT = "the last checkpoint is kept"

#: The authors' command-line flags and the config key each one sets (see README, "Training").
AUTHOR_FLAGS: dict[str, str] = {
    "resolution": "generator.resolution",
    "batch_size": "run.batch_size",
    "num_images": "dataset.num_images",
    "output_path": "dataset.path",
    "pretrained_models_path": "generator.path",
    "dataset_path": "dataset.path",
    "cross_frequency": "optim.cross_frequency",
    "train_data_size": "run.train_data_size",
    "results_dir": "run.results_dir",
    "load_checkpoint": "run.resume",
}

_FLAG_TYPES: dict[str, type] = {
    "resolution": int,
    "batch_size": int,
    "num_images": int,
    "output_path": str,
    "pretrained_models_path": str,
    "dataset_path": str,
    "cross_frequency": int,
    "train_data_size": int,
    "results_dir": str,
    "load_checkpoint": str,
}
_FLAGS_FOR = {
    "make-dataset": ["resolution", "batch_size", "num_images", "output_path", "pretrained_models_path"],
    "fit": ["resolution", "batch_size", "pretrained_models_path", "dataset_path", "cross_frequency",
            "train_data_size", "results_dir", "load_checkpoint"],
}


def _overrides(args: argparse.Namespace, command: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag in _FLAGS_FOR.get(command, []):
        value = getattr(args, flag, None)
        if value is None:
            continue
        key = AUTHOR_FLAGS[flag]
        if command == "make-dataset" and flag == "batch_size":
            key = "dataset.batch_size"
        out[key] = value
    for item in args.set or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    if getattr(args, "steps", None) is not None:
        out["run.steps"] = args.steps
    if getattr(args, "quiet", False):
        out["run.progress"] = False
    return out


def _config(args: argparse.Namespace, command: str) -> TrainConfig:
    from reenact.train.config import load_train_config

    return load_train_config(args.config, _overrides(args, command))


def _cmd_make_dataset(args: argparse.Namespace) -> int:
    from reenact.train.dataset import make_dataset
    from reenact.train.trainer import build_generator

    config = _config(args, "make-dataset")
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and config.run.device in ("auto", "cuda") else "cpu")
    G = build_generator(config.generator, device)
    name = config.generator.path or f"tiny(seed={config.generator.tiny_seed}, resolution={config.generator.resolution})"
    manifest = make_dataset(G, config.dataset, generator_name=str(name), progress=not args.quiet)
    print(f"dataset: {manifest.parent} ({config.dataset.num_images} images)")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from reenact.train.trainer import Trainer

    config = _config(args, "fit")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        import torch

        dist.init_process_group(backend="nccl" if torch.cuda.is_available() and config.run.device != "cpu" else "gloo")
        if torch.cuda.is_available() and config.run.device != "cpu":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        trainer = Trainer(config)
        trainer.fit()
        if trainer.is_main:
            print(f"trained to step {trainer.step}; checkpoint {trainer.last_checkpoint}")
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from reenact.train.export import export_identity_model

    out = export_identity_model(args.checkpoint, args.out)
    print(f"identity model written to {out}")
    return 0


def add_args(parser: argparse.ArgumentParser) -> None:
    """The subcommands make-dataset, fit and export with their flags (each has its own --quiet)."""
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("make-dataset", "sample the training set from the generator"),
                            ("fit", "train the attribute encoder and mapper (torchrun for several GPUs)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", type=Path, default=None, help="configs/train_*.yaml")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key (YAML value)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "fit":
            p.add_argument("--steps", type=int, default=None, help="total steps (run.steps)")
        for flag in _FLAGS_FOR[name]:
            p.add_argument(f"--{flag}", type=_FLAG_TYPES[flag], default=None,
                           help=f"authors' flag: overrides {AUTHOR_FLAGS[flag]}")
    p = sub.add_parser("export", help="write a checkpoint's attribute encoder + mapper for the pipeline")
    p.add_argument("--checkpoint", "--load_checkpoint", dest="checkpoint", required=True, type=Path)
    p.add_argument("--out", "--output_path", dest="out", required=True, type=Path)
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand ``args.command``; returns its exit status."""
    commands = {"make-dataset": _cmd_make_dataset, "fit": _cmd_fit, "export": _cmd_export}
    return commands[args.command](args)
