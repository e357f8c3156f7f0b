"""The one resolve step: ``--config`` file, then flags, then ``--set`` -> the frozen settings.

:func:`resolve_settings` is pure (it reads the ``--config`` file and nothing else, loads no
model, touches no video), so each flag's effect is testable on its own: every flag of
``reenact``/``deidentify`` that is a setting is a row of :data:`FLAG_SETTINGS`, naming the
dotted keys of :class:`reenact.pipeline.PipelineConfig` it sets. Later sources win:
defaults < ``--config`` < flags < ``--set``. Run options that are not settings (output
path, ``--overwrite``, ``--workers``...) are listed in :data:`RUN_OPTIONS`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reenact.config import load_yaml, parse_override, replace
from reenact.errors import InputError

if TYPE_CHECKING:
    from reenact.pipeline import PipelineConfig

_FROM_FLAG = object()


@dataclass(frozen=True)
class FlagSetting:
    """A flag that sets settings: the dotted ``keys`` it sets, to its value or to ``value``."""

    keys: tuple[str, ...]
    value: Any = _FROM_FLAG

    def overrides(self, given: Any) -> dict[str, Any]:
        value = given if self.value is _FROM_FLAG else self.value
        return dict.fromkeys(self.keys, value)


#: argparse ``dest`` -> what the flag sets. A flag left at its parser default (None/False)
#: sets nothing, so a ``--config`` file's value stands.
FLAG_SETTINGS: dict[str, FlagSetting] = {
    "faces": FlagSetting(("faces",)),
    "seed": FlagSetting(("seed",)),
    "device": FlagSetting(("device",)),
    "mapper": FlagSetting(("mapper",)),
    "pack": FlagSetting(("models.pack",)),
    "faces_backend": FlagSetting(("models.faces_backend",)),
    "detector_model": FlagSetting(("models.detector_model",)),
    "detector_threshold": FlagSetting(("detector.score_threshold",)),
    "keep_metadata": FlagSetting(("encode.metadata",), "keep"),
    "audio": FlagSetting(("encode.audio",)),
    "identity_model": FlagSetting(("models.identity_model",)),
    "identity_mean": FlagSetting(("models.identity_model_mean",)),
    "identity_std": FlagSetting(("models.identity_model_std",)),
    "landmark_model": FlagSetting(("optimize.landmark_model.path",)),
    "smooth": FlagSetting(("smoothing.latent.method",)),
    "method": FlagSetting(("deidentify.method",)),
    "privacy_threshold": FlagSetting(("deidentify.privacy_threshold",)),
    "no_smooth": FlagSetting(
        ("smoothing.latent.method", "smoothing.alignment.method", "smoothing.points.method"),
        value="none",
    ),
}

#: argparse ``dest`` of the options that are read by the resolve step itself.
SOURCE_OPTIONS = ("config", "set")

#: argparse ``dest`` of the options that steer the run, not the settings.
RUN_OPTIONS = (
    "input", "identity", "output", "overwrite", "preview", "json", "dry_run", "workers", "ray",
    "gpus_per_task", "quiet", "audit", "threads",
)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["blend.feather=0.1", ...]`` -> ``{"blend.feather": 0.1}`` (values parsed as YAML)."""
    return dict(parse_override(item, "--set") for item in items)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted-key settings the given flags set (flags left at their default set nothing)."""
    if getattr(args, "smooth", None) and getattr(args, "no_smooth", False):
        raise InputError("--smooth and --no-smooth contradict each other: give one")
    overrides: dict[str, Any] = {}
    for dest, setting in FLAG_SETTINGS.items():
        given = getattr(args, dest, None)
        if given is None or given is False:
            continue
        overrides.update(setting.overrides(given))
    return overrides


def resolve_settings(args: argparse.Namespace) -> PipelineConfig:
    """Defaults < ``--config`` file < flags < ``--set``: the frozen, validated settings tree.

    Unknown keys and wrong types raise :class:`ConfigError` naming the key; contradicting
    flags raise :class:`InputError`.
    """
    from reenact.pipeline import PipelineConfig  # imports torch: only once parsing is done

    config = load_yaml(PipelineConfig, args.config) if getattr(args, "config", None) else PipelineConfig()
    overrides = flag_overrides(args)
    overrides.update(parse_set(list(getattr(args, "set", None) or [])))
    if not overrides:
        return config
    return replace(config, overrides, where="settings")
