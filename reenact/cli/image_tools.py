"""``reenact grid`` and ``reenact interpolate``: the paper's image tools (reenact.image_tools)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from reenact.cli.checks import check_output_file
from reenact.errors import InputError

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


#: what each tool writes (the same lists as reenact.image_tools, kept here so the check
#: runs before torch is imported; tests/cli checks they agree)
GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
INTERPOLATE_SUFFIXES = (".gif", *GRID_SUFFIXES)


def _output(args: argparse.Namespace, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """The output path, checked before any work (extension, folder, existing file)."""
    if args.output is None and args.output_dir is None:
        raise InputError("give --output FILE (or the authors' --output_dir DIR)")
    if args.output is not None:
        out = Path(args.output)
    else:
        if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
            raise InputError(f"--output_dir {args.output_dir} is a file, not a folder")
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        out = Path(args.output_dir) / default_name
    check_output_file(None, out, args.overwrite, suffixes=suffixes, what="--output")
    return out


def _folder(path: Path, flag: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{flag} {path}: {'is a file, not' if path.exists() else 'no such'} folder")
    return path


def grid_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id-dir", "--id_dir", dest="id_dir", required=True, type=Path, help="identity images")
    p.add_argument("--attr-dir", "--attr_dir", dest="attr_dir", required=True, type=Path, help="attribute images")
    p.add_argument("--output", "-o", type=Path, default=None, help="grid PNG to write")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", type=Path, default=None,
                   help="folder to write grid.png into (authors' flag)")
    _common_args(p)


def grid_run(args: argparse.Namespace) -> int:
    out = _output(args, "grid.png", GRID_SUFFIXES)
    _folder(args.id_dir, "--id-dir")
    _folder(args.attr_dir, "--attr-dir")
    from reenact.image_tools import (  # torch: after the checks
        identity_attribute_grid,
        list_images,
        save_image,
    )

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
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    out = _output(args, "interpolation.gif", INTERPOLATE_SUFFIXES)
    from reenact.image_tools import (  # torch: after the checks
        attribute_interpolation,
        list_images,
        save_frames,
    )

    if args.input_dir is not None:
        images = list_images(_folder(args.input_dir, "--input_dir"))
        identity, attrs = images[0], images[1:]
    else:
        if args.identity is None:
            raise InputError("give --identity IMAGE and two or more --attr IMAGE (or --input_dir DIR)")
        identity, attrs = args.identity, list(args.attr)
    if len(attrs) < 2:
        raise InputError(f"interpolation needs two or more attribute images (--attr), got {len(attrs)}")
    pack = _load_pack(args)
    frames = attribute_interpolation(identity, attrs, pack, steps=args.steps)
    save_frames(frames, out)
    print(out)
    return 0
