"""Make ``docs/output_example.png``: the first row of the preview sheets of the README's two commands.

Runs, on the bundled sample, ``reenact ... --identity samples/cameraman_identity.jpg
--preview`` and ``deidentify ... --method blur --preview --audit`` (the ``tiny`` pack, CPU),
takes frame 0's row (label strip, before | after) of each sheet and stacks them, 640 px wide,
in 128 colours.

Run: ``python docs/make_output_example.py`` from the repository root (about a minute or two
on a CPU).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from reenact.cli import deidentify_main, main

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "samples" / "astronaut_clip.mp4"
PHOTO = ROOT / "samples" / "cameraman_identity.jpg"
WIDTH = 640
ROWS = 4  # the sheet keeps four frames of equal size


def first_row(sheet: Path) -> Image.Image:
    image = Image.open(sheet).convert("RGB")
    return image.crop((0, 0, image.width, image.height // ROWS))


def build() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        common = ["--device", "cpu", "--quiet"]
        assert main([str(CLIP), "--identity", str(PHOTO), "-o", str(out / "r.mp4"), "--preview", *common]) == 0
        assert deidentify_main([str(CLIP), "-o", str(out / "b.mp4"), "--method", "blur", "--preview", "--audit",
                                *common]) == 0
        rows = [first_row(out / "r.mp4.preview.png"), first_row(out / "b.mp4.preview.png")]
    scale = WIDTH / rows[0].width
    rows = [r.resize((WIDTH, round(r.height * scale)), Image.Resampling.LANCZOS) for r in rows]
    picture = Image.new("RGB", (WIDTH, sum(r.height for r in rows)))
    top = 0
    for row in rows:
        picture.paste(row, (0, top))
        top += row.height
    small(picture).save(ROOT / "docs" / "output_example.png", optimize=True)


def small(picture: Image.Image) -> Image.Image:
    """A 128-colour palette image: the README's picture stays about a quarter of its RGB size."""
    return picture.quantize(colors=128, dither=Image.Dither.FLOYDSTEINBERG)


if __name__ == "__main__":
    build()
