"""Shared helpers for the face tests: fixture clips, photos and models (session-cached)."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reenact.faces.detect import DetectorSettings, FaceDetections, make_detector
from reenact.faces.identity import DlibFaceEncoder, OnnxArcFaceEncoder
from testing.models import MOBILEFACE, SCRFD


@lru_cache(maxsize=8)
def _read_clip(path: str, count: int | None) -> torch.Tensor:
    import av

    frames = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if count is not None and len(frames) >= count:
                break
    return torch.from_numpy(np.stack(frames))


@pytest.fixture(scope="session")
def read_clip(fixtures: Path):
    """``read_clip(name, count=None)`` -> uint8 [T,H,W,3] of the first ``count`` frames."""

    def read(name: str, count: int | None = None) -> torch.Tensor:
        return _read_clip(str(fixtures / "videos" / name), count)

    return read


def _load_photo(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy())


@pytest.fixture(scope="session")
def load_photo():
    """``load_photo(path)`` -> uint8 [H,W,3] RGB."""
    return _load_photo


@pytest.fixture(scope="session")
def scrfd(fixtures: Path):
    return make_detector("insightface", SCRFD.file(fixtures))


@pytest.fixture(scope="session")
def centerface():
    return make_detector("offline", settings=DetectorSettings(working_size=512))


@pytest.fixture(scope="session")
def mobileface(fixtures: Path) -> OnnxArcFaceEncoder:
    return OnnxArcFaceEncoder(MOBILEFACE.file(fixtures), input_mean=MOBILEFACE.mean, input_std=MOBILEFACE.std)


@pytest.fixture(scope="session")
def dlib_encoder() -> DlibFaceEncoder:
    return DlibFaceEncoder()


@pytest.fixture(scope="session")
def labelled_photos(fixtures: Path, scrfd) -> list[tuple[str, str, torch.Tensor, FaceDetections]]:
    """(relative path, identity label, image uint8 [H,W,3], SCRFD detections) per labelled photo."""
    with open(fixtures / "identities.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    out = []
    for row in rows:
        image = _load_photo(fixtures / row["image"])
        out.append((row["image"], row["identity"], image, scrfd.detect(image[None])[0]))
    return out


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    """Small tensor ops stall on a loaded 2-core machine with several OpenMP threads; the
    face tests use one torch thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_DETECTION_CACHE: dict[tuple[str, int], list[FaceDetections]] = {}


@pytest.fixture(scope="session")
def clip_detections(read_clip, scrfd):
    """``clip_detections(name, count)`` -> SCRFD detections of the first ``count`` frames (cached)."""

    def detect(name: str, count: int) -> list[FaceDetections]:
        key = (name, count)
        if key not in _DETECTION_CACHE:
            _DETECTION_CACHE[key] = scrfd.detect(read_clip(name, count))
        return _DETECTION_CACHE[key]

    return detect
