"""Make the bundled samples from public-domain material inside registry packages.

Sources, both shipped inside the scikit-image wheel: its ``astronaut`` photo (Eileen
Collins, NASA portrait, public domain) and its ``camera`` photo (a man with a film camera on
a tripod, CC0 by the photographer, Lav Varshney). Outputs, written next to this script:

* ``astronaut_clip.mp4``: 384x384, 25 fps, 2 s; a synthetic camera pans, zooms and rolls
  over the photo while the light changes; a generated AAC audio track (a soft chord).
* ``astronaut_identity.jpg``: the same photo mirrored, re-framed and warmed (the tests' photo
  of the clip's own person).
* ``cameraman_identity.jpg``: the ``camera`` photo's head and shoulders, 256x256 RGB: another
  person, the identity photo of the README's demo.

Run: ``python samples/make_samples.py`` (deterministic; the committed files came from it).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

HERE = Path(__file__).resolve().parent
SIZE = 384
FPS = 25
SECONDS = 2
SAMPLE_RATE = 44100


def _camera_frames(photo: torch.Tensor) -> list[np.ndarray]:
    """Render the photo through a moving camera: float [3,H,W] in [0,1] -> uint8 [S,S,3]."""
    frames = []
    n = FPS * SECONDS
    for i in range(n):
        t = i / (n - 1)
        angle = math.radians(4.0 * math.sin(2 * math.pi * t))
        zoom = 0.46 + 0.05 * math.sin(math.pi * t)
        cx = -0.1 + 0.06 * math.sin(2 * math.pi * t)
        cy = -0.36 + 0.04 * math.cos(2 * math.pi * t)
        cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
        theta = torch.tensor([[cos, -sin, cx], [sin, cos, cy]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 3, SIZE, SIZE], align_corners=False)
        frame = F.grid_sample(photo[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        frame = frame * (0.9 + 0.1 * math.cos(2 * math.pi * t))
        frames.append((frame.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    return frames


def _chord(seconds: float) -> np.ndarray:
    """A soft A-major chord with a fade in and out: float32 [2, samples] in [-1,1]."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)) / 3
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.2)
    mono = (0.3 * tone * envelope).astype(np.float32)
    return np.stack([mono, mono])


def write_clip(path: Path, frames: list[np.ndarray], audio: np.ndarray) -> None:
    """Encode H.264 video and AAC audio with PyAV."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "20", "preset": "medium"}
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "stereo"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        chunk = 1024
        for start in range(0, audio.shape[1], chunk):
            piece = np.ascontiguousarray(audio[:, start:start + chunk])
            audio_frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="stereo")
            audio_frame.sample_rate = SAMPLE_RATE
            audio_frame.pts = start
            audio_frame.time_base = Fraction(1, SAMPLE_RATE)
            for packet in sound.encode(audio_frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)


def main() -> None:
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    write_clip(HERE / "astronaut_clip.mp4", _camera_frames(photo), _chord(SECONDS))
    mirrored = Image.fromarray(data.astronaut()[20:340, 60:380][:, ::-1].copy())
    warm = np.asarray(mirrored.resize((256, 256), Image.Resampling.LANCZOS)).astype(np.float32)
    warm = np.clip(warm * np.array([1.06, 1.0, 0.92]), 0, 255).astype(np.uint8)
    Image.fromarray(warm).save(HERE / "astronaut_identity.jpg", quality=92)
    other = Image.fromarray(data.camera()).crop((100, 40, 340, 280)).convert("RGB")
    other.resize((256, 256), Image.Resampling.LANCZOS).save(HERE / "cameraman_identity.jpg", quality=92)


if __name__ == "__main__":
    main()
