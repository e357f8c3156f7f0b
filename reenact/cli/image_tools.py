"""``reenact grid`` and ``reenact interpolate``: the paper's image tools (reenact.image_tools)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from reenact.errors import InputError, OutputExistsError

if TYPE_CHECKING:
    from reenact.packs import LoadedPack

GRID_HELP = "identity x attribute grid of two image folders (PNG)"
INTERPOLATE_HELP = "attribute interpolation at a fixed identity (GIF or PNG strip)"


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", default="tiny", help="model pack: tiny (untrained) or full (trained mapper)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _load_pack(args: argparse.Namespace) -> LoadedPack:
    # torch and the models: loaded here, after parsing.
    from reenact.device import resolve_device
    from reenact.packs import PackSettings, load_pack

    return load_pack(PackSettings(pack=args.pack), device=resolve_device(args.device))


def _output(args: argparse.Namespace, default_name: str) -> Path:
    if args.output is None and args.output_dir is None:
        raise InputError("give --output FILE (or the authors' --output_dir DIR)")
    out = Path(args.output) if args.output is not None else Path(args.output_dir) / default_name
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    return out


def grid_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id-dir", "--id_dir", dest="id_dir", required=True, type=Path, help="identity images")
    p.add_argument("--attr-dir", "--attr_dir", dest="attr_dir", required=True, type=Path, help="attribute images")
    p.add_argument("--output", "-o", type=Path, default=None, help="grid PNG to write")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", type=Path, default=None,
                   help="folder to write grid.png into (authors' flag)")
    _common_args(p)


def grid_run(args: argparse.Namespace) -> int:
    from reenact.image_tools import identity_attribute_grid, list_images, save_image

    out = _output(args, "grid.png")
    pack = _load_pack(args)
    grid = identity_attribute_grid(list_images(args.id_dir), list_images(args.attr_dir), pack)
    save_image(grid, out)
    print(out)
    return 0


def interpolate_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", type=Path, default=None, help="identity image")
    p.add_argument("--attr", action="append", type=Path, default=[],
                   help="attribute image (two or more, in order)")
    p.add_argument("--input-dir", "--input_dir", dest="input_dir", type=Path, default=None,
                   help="authors' layout: the first image (by name) is the identity, the rest the attributes")
    p.add_argument("--steps", type=int, default=8, help="frames per attribute segment")
    p.add_argument("--output", "-o", type=Path, default=None, help=".gif (animation) or .png (strip)")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", type=Path, default=None,
                   help="folder to write interpolation.gif into (authors' flag)")
    _common_args(p)


def interpolate_run(args: argparse.Namespace) -> int:
    from reenact.image_tools import attribute_interpolation, list_images, save_frames

    if args.input_dir is not None:
        images = list_images(args.input_dir)
        identity, attrs = images[0], images[1:]
    else:
        if args.identity is None:
            raise InputError("give --identity IMAGE and two or more --attr IMAGE (or --input_dir DIR)")
        identity, attrs = args.identity, list(args.attr)
    out = _output(args, "interpolation.gif")
    pack = _load_pack(args)
    frames = attribute_interpolation(identity, attrs, pack, steps=args.steps)
    save_frames(frames, out)
    print(out)
    return 0
