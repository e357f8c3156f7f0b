"""One case per flag of ``reenact``/``deidentify``: parse it, resolve, and the field its consumer reads changed.

Each case names the dotted settings it must set and their values, and checks first that the
default differs, so the case fails if the flag stops reaching its field. A new flag without a
case here fails :func:`test_every_flag_has_a_case`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from reenact.cli import build_parser
from reenact.cli.settings import FLAG_SETTINGS, RUN_OPTIONS, SOURCE_OPTIONS, resolve_settings
from reenact.config import to_dict
from reenact.errors import ConfigError, InputError
from reenact.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZE_YAML = str(ROOT / "configs" / "optimize.yaml")

#: flag -> (its arguments, {dotted key: value after resolving})
CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "--faces": (["--faces", "largest"], {"faces": "largest"}),
    "--seed": (["--seed", "7"], {"seed": 7}),
    "--pack": (["--pack", "full"], {"models.pack": "full"}),
    "--faces-backend": (["--faces-backend", "insightface"], {"models.faces_backend": "insightface"}),
    "--detector-model": (["--detector-model", "scrfd.onnx"], {"models.detector_model": "scrfd.onnx"}),
    "--detector-threshold": (["--detector-threshold", "0.3"], {"detector.score_threshold": 0.3}),
    "--keep-metadata": (["--keep-metadata"], {"encode.metadata": "keep"}),
    "--audio": (["--audio", "drop"], {"encode.audio": "drop"}),
    "--identity-model": (["--identity-model", "arc.onnx"], {"models.identity_model": "arc.onnx"}),
    "--identity-mean": (["--identity-mean", "127.5"], {"models.identity_model_mean": 127.5}),
    "--identity-std": (["--identity-std", "128"], {"models.identity_model_std": 128.0}),
    "--mapper": (["--mapper", "optimize"], {"mapper": "optimize"}),
    "--landmark-model": (["--landmark-model", "pfld.onnx"], {"optimize.landmark_model.path": "pfld.onnx"}),
    "--smooth": (["--smooth", "gaussian"], {"smoothing.latent.method": "gaussian"}),
    "--no-smooth": (["--no-smooth"], {"smoothing.latent.method": "none", "smoothing.alignment.method": "none",
                                      "smoothing.points.method": "none"}),
    "--device": (["--device", "cpu"], {"device": "cpu"}),
    "--config": (["--config", OPTIMIZE_YAML], {"mapper": "optimize"}),
    "--set": (["--set", "blend.feather=0.1", "--set", "encode.crf=23"], {"blend.feather": 0.1, "encode.crf": 23}),
    "--method": (["--method", "blur"], {"deidentify.method": "blur"}),
    "--privacy-threshold": (["--privacy-threshold", "0.5"], {"deidentify.privacy_threshold": 0.5}),
}

#: flags only ``deidentify`` has
DEIDENTIFY_ONLY = {"--method", "--privacy-threshold"}

#: flags that steer the run rather than the settings, and the test that covers each
RUN_FLAGS = {
    "input": "tests/pipeline/test_pipeline_cli.py::test_missing_video_and_unknown_setting",
    "--identity": "tests/pipeline/test_pipeline_cli.py::test_dry_run_checks_the_inputs_it_can",
    "-o": "tests/pipeline/test_pipeline_cli.py::test_input_as_output_is_refused",
    "--overwrite": "tests/pipeline/test_pipeline_cli.py::test_existing_output_is_not_overwritten",
    "--preview": "tests/pipeline/test_readme_command.py",
    "--json": "tests/pipeline/test_pipeline_folders.py",
    "--dry-run": "tests/pipeline/test_pipeline_cli.py::test_dry_run_prints_the_resolved_plan",
    "--workers": "tests/pipeline/test_pipeline_folders.py",
    "--ray": "tests/pipeline/test_pipeline_folders.py",
    "--gpus-per-task": "tests/pipeline/test_pipeline_folders.py",
    "--threads": "tests/core/test_threads.py::test_threads_flag_sets_the_share_of_the_process_and_its_workers",
    "--quiet": "tests/cli/test_cli_table.py",
    "--version": "tests/cli/test_cli_table.py",
    "--audit": "tests/pipeline/test_privacy_cli.py::test_blur_run_default_report_and_audit_file",
    "--help": "argparse",
}


def _parse(mode: str, flags: list[str]) -> argparse.Namespace:
    identity = ["--identity", "face.jpg"] if mode == "reenact" else []
    return build_parser(mode).parse_args(["clip.mp4", *identity, *flags])


def _get(config: PipelineConfig, dotted: str) -> Any:
    node = to_dict(config)
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"settings have no {dotted}"
        node = node[part]
    return node


@pytest.mark.parametrize(
    ("flag", "mode"),
    [(flag, mode) for flag in sorted(CASES) for mode in ("reenact", "deidentify")
     if not (mode == "reenact" and flag in DEIDENTIFY_ONLY)],
)
def test_flag_sets_its_setting(flag: str, mode: str) -> None:
    argv, expected = CASES[flag]
    default = resolve_settings(_parse(mode, []))
    config = resolve_settings(_parse(mode, argv))
    for key, value in expected.items():
        assert _get(config, key) == value, f"{flag}: {key}"
        assert _get(default, key) != value, f"{flag}: the case must change {key} from its default"
    now, before = _leaves(to_dict(config)), _leaves(to_dict(default))
    extra = {key for key in now if now[key] != before[key]} - set(expected)
    assert not extra, f"{flag} also changed {sorted(extra)}"


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    return out


def test_every_flag_has_a_case() -> None:
    for mode in ("reenact", "deidentify"):
        for action in build_parser(mode)._actions:
            names = action.option_strings or [action.dest]
            assert any(n in CASES or n in RUN_FLAGS for n in names), f"{mode} {names[0]}: add a case to CASES"
            if action.dest in FLAG_SETTINGS:
                assert any(n in CASES for n in names), f"{names[0]} is a setting: it needs a case in CASES"
    dests = {a.dest for m in ("reenact", "deidentify") for a in build_parser(m)._actions} - {"help", "version"}
    assert dests == set(FLAG_SETTINGS) | set(SOURCE_OPTIONS) | set(RUN_OPTIONS)


def test_seed_is_the_one_seed_the_optimiser_reads() -> None:
    """``--seed`` reaches ``--mapper optimize``'s random starts: no separate ``optimize.seed`` to miss."""
    config = resolve_settings(_parse("reenact", ["--mapper", "optimize", "--seed", "5"]))
    assert config.seed == 5
    assert "seed" not in to_dict(config)["optimize"]


def test_later_sources_win(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("faces: largest\nmapper: optimize\nblend:\n  feather: 0.2\n")
    config = resolve_settings(_parse("deidentify", ["--config", str(cfg), "--faces", "all",
                                                    "--set", "blend.feather=0.3"]))
    assert config.faces == "all"  # flag beats file
    assert config.mapper == "optimize"  # a flag left out keeps the file's value
    assert config.blend.feather == 0.3  # --set beats file
    config = resolve_settings(_parse("deidentify", ["--device", "cpu", "--set", "device=cuda"]))
    assert config.device == "cuda"  # --set beats flag


@pytest.mark.parametrize(("flags", "error", "words"), [
    (["--smooth", "gaussian", "--no-smooth"], InputError, "contradict"),
    (["--set", "blend.feather"], ConfigError, "KEY=VALUE"),
    (["--set", "blend.colour=1"], ConfigError, "blend.colour"),
    (["--set", "blend.feather=[1"], ConfigError, "not a valid YAML value"),
    (["--set", "blend.feather=wide"], ConfigError, "blend.feather"),
    (["--config", "/nonexistent/settings.yaml"], ConfigError, "settings.yaml"),
])
def test_bad_settings_are_refused_naming_the_culprit(flags: list[str], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("[", r"\[")):
        resolve_settings(_parse("deidentify", flags))


def test_a_train_config_is_not_a_pipeline_config() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_settings(_parse("deidentify", ["--config", str(ROOT / "configs" / "train_tiny.yaml")]))
