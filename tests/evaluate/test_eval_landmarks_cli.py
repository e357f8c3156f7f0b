"""PFLD landmarks on real faces, and the `reenact eval` command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_media import D0

from reenact.cli import main
from reenact.errors import ModelError, ShapeError
from reenact.faces.landmarks import PfldLandmarks
from testing.models import MOBILEFACE, PFLD, SCRFD


def _photo(fixtures: Path, name: str) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(fixtures / "images" / name).convert("RGB")).copy())


@pytest.mark.parametrize("model", ["pfld", "dlib"])
def test_landmarks_land_on_the_detected_eyes_nose_and_mouth(fixtures: Path, model: str) -> None:
    from reenact.faces import make_detector
    from reenact.faces.dlib_landmarks import DlibLandmarks68

    det = make_detector("insightface", SCRFD.file(fixtures))
    lm = PfldLandmarks(PFLD.file(fixtures)) if model == "pfld" else DlibLandmarks68()
    images = [_photo(fixtures, n) for n in ("deepface/img1.jpg", "deepface/img2.jpg")]
    for image in images:
        d = det.detect(image[None])[0]
        k = int(np.argmax(d.areas()))
        pts = lm.detect(image[None], np.zeros(1, np.int64), d.boxes[k : k + 1])
        assert pts.shape == (1, 68, 2)
        p = pts[0]
        five = np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
        iod = np.linalg.norm(d.points[k, 0] - d.points[k, 1])
        # every one of the 5 points within 15 % of the eye distance of the detector's
        assert np.linalg.norm(five - d.points[k], axis=1).max() < 0.15 * iod


def test_landmarks_bad_input(fixtures: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        PfldLandmarks(tmp_path / "missing.onnx")
    lm = PfldLandmarks(PFLD.file(fixtures))
    frames = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
    with pytest.raises(ShapeError, match="boxes"):
        lm.detect(frames, np.zeros(2, np.int64), np.zeros((1, 4)))
    with pytest.raises(ShapeError, match="uint8"):
        lm.detect(frames.float(), np.zeros(1, np.int64), np.zeros((1, 4)))


def _args(fixtures: Path, output: Path, out: Path) -> list[str]:
    return [
        "eval", str(fixtures / D0), str(output), "--out", str(out), "--max-frames", "4",
        "--landmarks", str(PFLD.file(fixtures)),
        "--detector", "insightface", "--detector-model", str(SCRFD.file(fixtures)),
        "--identity-model", str(MOBILEFACE.file(fixtures)),
        "--identity-mean", f"{MOBILEFACE.mean:g}", "--identity-std", f"{MOBILEFACE.std:g}", "--json",
    ]


def test_cli_writes_json_report_and_plots(fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(_args(fixtures, fixtures / D0, out)) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert printed["summary"] == report["summary"]
    assert report["summary"]["privacy"]["reidentification_rate"] == 1.0
    for png in ("per_frame.png", "summary.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run refuses to overwrite the report
    assert main(_args(fixtures, fixtures / D0, out)) == 2
    assert "exists" in capsys.readouterr().err


def test_cli_unreadable_output_is_one_clear_line(fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    assert main(_args(fixtures, junk, tmp_path / "eval")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "junk.mp4" in err[0]
    assert not (tmp_path / "eval" / "report.json").exists()


def test_cli_identity_model_needs_its_normalisation(fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(fixtures, fixtures / D0, tmp_path / "eval")
    i = args.index("--identity-mean")
    del args[i : i + 4]
    assert main(args) == 2
    assert "--identity-mean" in capsys.readouterr().err


def test_cli_gallery_must_be_a_folder_of_photos(fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for gallery in (tmp_path / "missing", empty):
        assert main([*_args(fixtures, fixtures / D0, tmp_path / "eval"), "--gallery", str(gallery)]) == 2
        assert str(gallery) in capsys.readouterr().err
