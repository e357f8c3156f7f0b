"""Pipeline pieces a user relies on: identity kept across tracks, settings refused early, folder plans."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reenact.batch import plan_folder
from reenact.cli import deidentify_main
from reenact.config import replace
from reenact.errors import ConfigError
from reenact.pipeline import FaceReplacer, PipelineConfig, TrackIdentity, cached_pack


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def test_a_person_seen_again_keeps_their_synthetic_identity() -> None:
    config = PipelineConfig(device="cpu")
    pack = cached_pack(config, torch.device("cpu"))
    replacer = FaceReplacer(pack, config, "deidentify", 25.0)
    gen = torch.Generator().manual_seed(0)
    person = _unit(torch.randn(pack.identity.dim, generator=gen))
    code = _unit(torch.randn(pack.identity.dim, generator=gen))
    replacer.identities[0] = TrackIdentity(code=code, original=person, draws=1)
    # the same person after a cut (a slightly different embedding): same synthetic identity
    again = replacer._same_person_identity(_unit(person + 0.02 * torch.randn(pack.identity.dim, generator=gen)))
    assert again is not None and torch.equal(again.code, code)
    # somebody else: no reuse, a new identity will be drawn
    assert replacer._same_person_identity(_unit(torch.randn(pack.identity.dim, generator=gen))) is None


def test_fail_closed_deidentify_refuses_sparse_detection() -> None:
    config = replace(PipelineConfig(device="cpu"), {"tracker.detect_every": 3, "tracker.max_gap": 5})
    pack = cached_pack(config, torch.device("cpu"))
    with pytest.raises(ConfigError, match="detect_every"):
        FaceReplacer(pack, config, "deidentify", 25.0)


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
