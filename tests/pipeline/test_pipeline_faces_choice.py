"""--faces largest / reference:IMAGE: only the chosen person is changed, everyone else is untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pipeline_media import decode, fixture_config

from reenact.config import replace
from reenact.faces import make_detector
from reenact.pipeline import PipelineConfig, process_video
from testing.media import cut_clip
from testing.models import SCRFD

FRAMES = 4


@pytest.fixture(scope="module")
def crowd(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_clip(fixtures / "videos" / "mobileface_friends1.mp4", tmp_path_factory.mktemp("faces") / "f.mp4", FRAMES)


@pytest.fixture(scope="module")
def config(fixtures: Path) -> PipelineConfig:
    return fixture_config(fixtures)


def _changed_faces(src: np.ndarray, dst: np.ndarray, boxes: np.ndarray) -> list[bool]:
    """Per face box of frame 0: did its inner part change visibly?"""
    out = []
    for x1, y1, x2, y2 in boxes.astype(int):
        cx, cy, r = (x1 + x2) // 2, (y1 + y2) // 2, max(2, (x2 - x1) // 4)
        a = src[0, cy - r:cy + r, cx - r:cx + r].astype(int)
        b = dst[0, cy - r:cy + r, cx - r:cx + r].astype(int)
        out.append(float(np.abs(a - b).mean()) > 4.0)
    return out


def test_reference_changes_only_that_person(crowd: Path, config: PipelineConfig, fixtures: Path, tmp_path: Path) -> None:
    src = decode(crowd)[0]
    dets = make_detector("insightface", SCRFD.file(fixtures)).detect(src[:1])[0]
    assert len(dets) >= 3
    pick = int(np.argmax(dets.areas()))
    x1, y1, x2, y2 = dets.boxes[pick].astype(int)
    w, h = x2 - x1, y2 - y1
    crop = src[0, max(0, y1 - h):y2 + h, max(0, x1 - w):x2 + w]
    photo = tmp_path / "who.png"
    Image.fromarray(crop).save(photo)
    out = tmp_path / "ref.mp4"
    report = process_video(crowd, out, "deidentify", replace(config, {"faces": f"reference:{photo}"}))
    assert len(report["tracks"]) == 1
    changed = _changed_faces(src, decode(out)[0], dets.boxes)
    assert changed[pick] and sum(changed) == 1, changed


def test_largest_changes_one_face_per_frame(crowd: Path, config: PipelineConfig, fixtures: Path, tmp_path: Path) -> None:
    src = decode(crowd)[0]
    dets = make_detector("insightface", SCRFD.file(fixtures)).detect(src[:1])[0]
    out = tmp_path / "largest.mp4"
    report = process_video(crowd, out, "deidentify", replace(config, {"faces": "largest"}))
    assert report["counts"]["faces_replaced"] + report["counts"]["faces_blurred"] == FRAMES
    changed = _changed_faces(src, decode(out)[0], dets.boxes)
    assert changed[int(np.argmax(dets.areas()))] and sum(changed) == 1, changed
