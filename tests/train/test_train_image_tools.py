"""``reenact grid`` and ``reenact interpolate`` on real photos with the tiny pack."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from reenact.cli import main


@pytest.fixture()
def photo_dirs(fixtures: Path, tmp_path: Path) -> tuple[Path, Path]:
    src = fixtures / "images" / "deepface"
    ids, attrs = tmp_path / "ids", tmp_path / "attrs"
    ids.mkdir()
    attrs.mkdir()
    for name in ("img1.jpg", "img2.jpg"):
        shutil.copy(src / name, ids / name)
    for name in ("img3.jpg", "img4.jpg", "img5.jpg"):
        shutil.copy(src / name, attrs / name)
    return ids, attrs


def test_grid_and_interpolation(photo_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    ids, attrs = photo_dirs
    out = tmp_path / "grid.png"
    assert main(["grid", "--id_dir", str(ids), "--attr_dir", str(attrs), "-o", str(out), "--device", "cpu"]) == 0
    with Image.open(out) as im:
        r = im.size[1] // 3
        assert im.size == (4 * r, 3 * r) and r >= 32
        cells = [im.crop((c * r, r, (c + 1) * r, 2 * r)).tobytes() for c in range(1, 4)]
    assert len(set(cells)) == 3  # one identity, three attribute codes: three different renders
    assert main(["grid", "--id_dir", str(ids), "--attr_dir", str(attrs), "-o", str(out)]) == 2  # exists
    strip = tmp_path / "interp.png"  # authors' layout: first image the identity, the rest attributes
    assert main(["interpolate", "--input_dir", str(attrs), "--steps", "3", "-o", str(strip), "--device", "cpu"]) == 0
    with Image.open(strip) as im:
        assert im.size == (4 * r, r)  # 3 steps + the last attribute image
        frames = [im.crop((c * r, 0, (c + 1) * r, r)).tobytes() for c in range(4)]
    assert len(set(frames)) == 4


def test_save_frames_gif(tmp_path: Path) -> None:
    import torch

    from reenact.image_tools import save_frames

    frames = torch.arange(3, dtype=torch.uint8).mul(80).view(3, 1, 1, 1).expand(3, 8, 8, 3).contiguous()
    out = save_frames(frames, tmp_path / "a.gif")
    with Image.open(out) as im:
        assert im.n_frames == 3


def test_image_tools_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["grid", "--id_dir", str(empty), "--attr_dir", str(empty), "-o", str(tmp_path / "g.png")]) == 2
    assert "no images" in capsys.readouterr().err
    blank = tmp_path / "blank"
    blank.mkdir()
    Image.new("RGB", (128, 128), (120, 120, 120)).save(blank / "a.png")
    Image.new("RGB", (128, 128), (120, 120, 120)).save(blank / "b.png")
    assert main(["grid", "--id_dir", str(blank), "--attr_dir", str(blank), "-o", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "no face" in err
