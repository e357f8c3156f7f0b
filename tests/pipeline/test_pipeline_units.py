"""Pipeline pieces a user relies on: identity kept across tracks, settings refused early, folder plans."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reenact.batch import plan_folder
from reenact.cli import deidentify_main
from reenact.config import replace
from reenact.errors import ConfigError
from reenact.pipeline import PipelineConfig, SyntheticIdentities, cached_pack, plan_run
from testing.models import MOBILEFACE, PFLD

D = 128


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _random_candidates(seed: int) -> torch.Tensor:
    return _unit(torch.randn(D, generator=torch.Generator().manual_seed(seed)))


def test_a_person_seen_again_keeps_their_synthetic_identity() -> None:
    policy = SyntheticIdentities(_random_candidates, threshold=0.4, seed=0, max_draws=8)
    gen = torch.Generator().manual_seed(0)
    person = _unit(torch.randn(D, generator=gen))
    first = policy.identity_for(0, lambda: person)
    assert first.code is not None and first.draws >= 1
    # the same person after a cut (a slightly different embedding): same synthetic identity
    again = policy.identity_for(1, lambda: _unit(person + 0.02 * torch.randn(D, generator=gen)))
    assert again.code is not None and torch.equal(again.code, first.code) and again.draws == 0
    # somebody else: a new identity is drawn
    other = policy.identity_for(2, lambda: _unit(torch.randn(D, generator=gen)))
    assert other.code is not None and not torch.equal(other.code, first.code)


def test_fail_closed_deidentify_refuses_sparse_detection() -> None:
    config = replace(PipelineConfig(device="cpu"), {"tracker.detect_every": 3, "tracker.max_gap": 5})
    with pytest.raises(ConfigError, match="detect_every"):  # refused by the plan, before any model loads
        plan_run("deidentify", config)


def test_two_inputs_never_share_one_output(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.mov").write_bytes(b"x")
    (src / "a.mp4").write_bytes(b"x")
    plan = plan_folder(src, tmp_path / "out")
    assert len(plan.jobs) == 1
    [clash] = plan.known
    assert clash.status == "failed" and "rename" in (clash.error or "")


def test_current_folder_as_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert deidentify_main([".", "--dry-run"]) == 0
    assert f"{tmp_path.name}_deidentified" in capsys.readouterr().out


def test_optimize_starts_new_tracks_from_a_trained_mapper(fixtures: Path) -> None:
    import dataclasses

    from reenact.packs import PackSettings
    from reenact.pipeline import TrainedMapping, make_mapping

    config = replace(PipelineConfig(device="cpu", mapper="optimize", models=PackSettings(
        identity_model=str(MOBILEFACE.file(fixtures)),
        identity_model_mean=0.0, identity_model_std=1.0)), {
        "optimize.landmark_model.path": str(PFLD.file(fixtures)),
        "optimize.steps_first": 1, "optimize.steps_warm": 1, "optimize.init_candidates": 1,
        "deidentify.method": "synthetic"})
    pack = dataclasses.replace(cached_pack(plan_run("deidentify", config)), trained=True)
    mapping = make_mapping(pack, config)
    assert isinstance(getattr(mapping, "initial", None), TrainedMapping)
    calls: list[list[int]] = []
    trained = mapping.initial

    def spy(crops: torch.Tensor, codes: torch.Tensor, tracks: list[int]) -> torch.Tensor:
        calls.append(list(tracks))
        return trained(crops, codes, tracks)

    mapping.initial = spy
    R = pack.generator.img_resolution
    crops = torch.rand(1, 3, R, R) * 2 - 1
    code = torch.nn.functional.normalize(torch.randn(1, pack.identity.dim), dim=1)
    mapping(crops, code, [5])
    mapping(crops, code, [5])
    assert calls == [[5]], "only a track's first frame asks the trained mapper"


def test_first_renders_and_the_ladders_renders_share_one_path_bounded_by_max_batch() -> None:
    import numpy as np

    from reenact.faces import similarity_from_points
    from reenact.pipeline import FaceRecord, FaceReplacer

    plan = plan_run("deidentify", replace(PipelineConfig(device="cpu"), {"max_batch": 2, "deidentify.method": "synthetic"}))
    pack = cached_pack(plan)
    replacer = FaceReplacer(plan.bind(pack), pack, 25.0)
    G = pack.generator
    synthesized: list[int] = []
    hook = G.synthesis.register_forward_pre_hook(lambda _m, args: synthesized.append(args[0].shape[0]))
    mapped: list[int] = []
    real_mapping = replacer.mapping
    assert real_mapping is not None

    def counting_mapping(crops: torch.Tensor, codes: torch.Tensor, tracks: list[int]) -> torch.Tensor:
        mapped.append(crops.shape[0])
        return real_mapping(crops, codes, tracks)

    replacer.mapping = counting_mapping  # type: ignore[assignment]
    points = np.array([[40, 50], [88, 50], [64, 75], [45, 100], [83, 100]], np.float32)
    M = similarity_from_points(torch.from_numpy(points[None]), replacer.template)[0]
    faces = [(0, FaceRecord(k, np.array([20, 20, 108, 120], np.float32), points, M=M,
                            ws=torch.zeros(G.num_ws, G.w_dim))) for k in range(5)]
    frames = torch.full((1, 128, 128, 3), 90, dtype=torch.uint8)
    code = torch.nn.functional.normalize(torch.ones(pack.identity.dim), dim=0)
    try:
        out = replacer._rerender(frames, frames, faces, [code, code, code, None, None], grown=False)
        assert mapped == [2, 1], "three new identities mapped in batches of at most max_batch"
        assert synthesized == [2, 2, 1], "five faces synthesized in batches of at most max_batch"
        assert out.shape == frames.shape and not torch.equal(out, frames)
        synthesized.clear()
        replacer._render(frames, faces, [f.ws for _j, f in faces], plan.config.blend)
        assert synthesized == [2, 2, 1], "a first render goes the same way"
    finally:
        hook.remove()
