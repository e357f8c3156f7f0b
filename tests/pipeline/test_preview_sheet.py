"""The labelled preview sheet: faces numbered like the app (face K = track K-1), the rung per face,
boxes drawn on both halves, one labelled row per kept frame."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from reenact.pipeline.preview_sheet import BOX, face_labels, write_sheet


def test_labels_name_each_face_by_track_and_rung() -> None:
    box = np.array([10.0, 12.0, 40.0, 50.0])
    tracks = {0: SimpleNamespace(privacy_frames=[[3, "synthetic", {}, None], [7, "pixelate", {}, None]]),
              2: SimpleNamespace(privacy_frames=[[7, "solid", {}, None]])}
    labels = face_labels({7: [(2, box, None), (-1, box, None), (0, box, None)], 3: [(0, box, None)]}, tracks,
                         ladder=True)
    assert [(f["face"], f["rung"]) for f in labels[7]] == [
        (1, "face pixelated"), (3, "head filled solid"), (None, "redacted (untracked detection)")]
    assert labels[3] == [{"face": 1, "track": 0, "box": [10.0, 12.0, 40.0, 50.0], "rung": "first synthetic identity"}]
    plain = face_labels({0: [(0, box, None), (1, box, "blend refused")]}, {}, ladder=False)
    assert [f["rung"] for f in plain[0]] == ["replaced", "blurred (blend refused)"]


def test_sheet_has_a_labelled_row_per_frame_with_boxes_on_both_halves(tmp_path: Path) -> None:
    frame = torch.full((96, 128, 3), 40, dtype=torch.uint8)
    kept = {0: (frame, frame.clone()), 9: (frame, frame.clone())}
    labels = {0: [{"face": 1, "track": 0, "box": [20.0, 30.0, 60.0, 80.0], "rung": "head blurred"}], 9: []}
    path = tmp_path / "o.mp4.preview.png"
    write_sheet(kept, labels, path, mode=0o600)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    strip = 2 * max(11, round(96 / 28))
    assert sheet.shape == (2 * (96 + strip), 256, 3)
    assert path.stat().st_mode & 0o777 == 0o600
    row = strip + 55  # the box's left edge, below its label, on the first row
    assert tuple(sheet[row, 20]) == BOX and tuple(sheet[row, 128 + 20]) == BOX, "a box on before and on after"
    assert not (sheet[strip + 96 + strip:] == BOX).all(axis=-1).any(), "frame 9 has no faces: no box drawn"
    assert (sheet[2:strip - 2, 4:200] > 200).any(), "the strip holds the label text"
