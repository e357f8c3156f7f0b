"""A contact sheet of deidentify's output: original | deface | each method, three frames of each fixture clip.

Rows: three frames (first, middle, last of the cut) of each fixture clip; columns: the
input, deface's blur (its defaults) and ``deidentify`` with each ``--methods``; every cell
scaled to ``--height`` px, labelled on top. Outputs already made by
``bench/privacy.py --keep DIR`` are reused with ``--outputs DIR`` (same ``--frames``);
whatever is missing there is made (in DIR, or a temporary folder).

Run:  python bench/sheet.py [--frames 12] [--outputs DIR] [-o sheet.png]
The sheet shows the fixture people: look at it, never commit it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from privacy import METHODS, read_frames, run_deface, run_deidentify  # noqa: E402

from testing.fixtures import CLIPS, fixtures_dir  # noqa: E402
from testing.media import cut_clip  # noqa: E402

LABEL = 16


def cell(frame: torch.Tensor, height: int, label: str) -> Image.Image:
    """One frame scaled to ``height`` px, with ``label`` on a strip above it."""
    image = Image.fromarray(frame.numpy())
    width = max(1, round(image.width * height / image.height))
    out = Image.new("RGB", (width, height + LABEL), (255, 255, 255))
    out.paste(image.resize((width, height), Image.BILINEAR), (0, LABEL))
    ImageDraw.Draw(out).text((3, 2), label, fill=(0, 0, 0))
    return out


def outputs_for(name: str, src: Path, work: Path, frames: int, methods: list[str]) -> list[tuple[str, Path]]:
    """The cut clip, deface's output and each method's output of clip ``name`` (made when missing)."""
    clip = work / f"{name}.mp4"
    if not clip.is_file():
        cut_clip(src, clip, frames)
    made = [("original", clip)]
    deface = work / f"{name}.deface.mp4"
    if not deface.is_file():
        run_deface(clip, deface)
    made.append(("deface", deface))
    for method in methods:
        out = work / f"{name}.{method}.mp4"
        if not out.is_file():
            run_deidentify(clip, out, method)
        made.append((method, out))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--methods", nargs="*", default=[m for m in METHODS if m != "auto"], choices=METHODS)
    parser.add_argument("--outputs", type=Path, default=None, help="reuse (and keep) outputs here")
    parser.add_argument("--height", type=int, default=200, help="height of each cell in pixels")
    parser.add_argument("-o", "--output", type=Path, default=Path("privacy_sheet.png"))
    args = parser.parse_args()
    fx = fixtures_dir()
    if fx is None:
        print("SKIPPED: no fixtures (set REENACT_FIXTURES)")
        return 0
    rows: list[Image.Image] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.outputs or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.clips:
            src = fx / "videos" / CLIPS[name]
            if not src.is_file():
                print(f"{name}: SKIPPED (missing {src.name})")
                continue
            columns = [(label, read_frames(path)) for label, path in outputs_for(name, src, work, args.frames,
                                                                                   args.methods)]
            height, width = columns[0][1].shape[1:3]
            count = columns[0][1].shape[0]
            for t in sorted({0, count // 2, count - 1}):
                cells = [cell(frames[t, :height, :width], args.height, f"{name} #{t} {label}")
                         for label, frames in columns]
                row = Image.new("RGB", (sum(c.width for c in cells), cells[0].height), (255, 255, 255))
                x = 0
                for c in cells:
                    row.paste(c, (x, 0))
                    x += c.width
                rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    sheet.save(args.output)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height}, {len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
