"""``reenact models import paper FOLDER [FOLDER2 ...]``: the authors' files into the ``paper`` pack.

The user downloads the files the authors link (see ``reenact/packs/paper.yaml`` and the
README) and gives either one folder holding everything or the authors' layout: the
pretrained-models folder (``vggface2.h5``, ``stylegan_G_256x256_synthesis.index`` +
``.data-*`` or ``stylegan_G_256x256_synthesis.h5``) and the checkpoint folder
(``AttrEncoder.h5``, ``LatentMappingNetwork.h5``). An official StyleGAN v1 ``.pkl`` in any of
the folders adds the mapping network (z -> w) that ``deidentify`` needs.

Every file is converted once into the cache (our safetensors format), then the pack is
verified by loading each component. Refusals name the file and where it comes from: a
missing file (:class:`InputError`), a file that is a link leading out of its folder
(:class:`InputError`, never followed), a truncated ``.data`` shard, an ``.index`` that is not
a checkpoint table, an HDF5 file of another network, or a checkpoint at another resolution
than the pack's (:class:`ModelError`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from reenact.errors import InputError, ModelError
from reenact.models import registry

__all__ = ["PAPER_FILES", "find_paper_files", "import_paper"]

log = logging.getLogger(__name__)

#: component -> (file name, what it is)
PAPER_FILES: dict[str, tuple[str, str]] = {
    "identity": ("vggface2.h5", "the VGGFace2 identity network"),
    "attribute_encoder": ("AttrEncoder.h5", "the authors' trained attribute encoder"),
    "mapper": ("LatentMappingNetwork.h5", "the authors' trained latent mapping network"),
}


def _where(pack: str, component: str) -> str:
    source = registry.get_component(pack, component).source or ""
    return source.split(":", 1)[1] if source.startswith("import:") else source


def _inside(path: Path, folder: Path) -> Path:
    """``path`` itself when it (after links) stays inside ``folder``; else InputError."""
    real = path.resolve()
    if not real.is_relative_to(folder.resolve()):
        raise InputError(
            f"{path} is a link to {real}, outside {folder}; links out of the given folders are not "
            "followed: copy the file into the folder"
        )
    return path


def _listing(folders: Sequence[Path]) -> dict[str, Path]:
    """File name -> path over the folders (not recursive); a name in two folders is refused."""
    found: dict[str, Path] = {}
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            if entry.name in found:
                raise InputError(f"{entry.name} is in both {found[entry.name].parent} and {folder}; keep one")
            found[entry.name] = entry
    return found


def find_paper_files(folders: Sequence[str | Path], pack: str = "paper") -> dict[str, Path]:
    """The file to import for each component of ``pack`` (the mapping only when present).

    The generator entry is the ``.index`` of the TF checkpoint when there is one, else the
    ``.h5``. Raises :class:`InputError` naming a missing file and where it comes from.
    """
    dirs = [Path(f) for f in folders]
    if not dirs:
        raise InputError("give the folder(s) holding the paper's files")
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"{d} is not a folder; give the folder(s) holding the paper's files")
    listing = _listing(dirs)
    folder_of = {name: path.parent for name, path in listing.items()}
    shown = ", ".join(str(d) for d in dirs)
    out: dict[str, Path] = {}
    for component, (name, what) in PAPER_FILES.items():
        if name not in listing:
            raise InputError(f"{name} ({what}) is missing from {shown}; download it from {_where(pack, component)}")
        out[component] = _inside(listing[name], folder_of[name])

    res = registry.get_component(pack, "generator").output_size or 256
    stem = f"stylegan_G_{res}x{res}_synthesis"
    if f"{stem}.index" in listing:
        index = _inside(listing[f"{stem}.index"], folder_of[f"{stem}.index"])
        shards = sorted(n for n in listing if n.startswith(f"{stem}.data-"))
        if not shards:
            raise InputError(
                f"{index} has no data shard beside it ({stem}.data-00000-of-00001 is missing); "
                f"download the whole folder from {_where(pack, 'generator')}"
            )
        for shard in shards:
            if folder_of[shard] != index.parent:
                raise InputError(f"{listing[shard]} must sit beside {index} (same folder)")
            _inside(listing[shard], folder_of[shard])
        out["generator"] = index
    elif f"{stem}.h5" in listing:
        out["generator"] = _inside(listing[f"{stem}.h5"], folder_of[f"{stem}.h5"])
    else:
        others = sorted(n for n in listing if n.startswith("stylegan_G_") and "_synthesis" in n)
        hint = (f"; found {others[0]} and others, but the {pack} pack is {res}x{res}: it needs "
                f"{stem}" if others else "")
        raise InputError(
            f"{stem}.index + .data-* (or {stem}.h5), the StyleGAN v1 synthesis network, is missing "
            f"from {shown}{hint}; download it from {_where(pack, 'generator')}"
        )
    pickles = sorted(n for n in listing if n.endswith(".pkl"))
    if len(pickles) > 1:
        raise InputError(f"several .pkl files in {shown} ({pickles}); keep the one StyleGAN v1 pickle")
    if pickles:
        out["mapping"] = _inside(listing[pickles[0]], folder_of[pickles[0]])
    return out


def import_paper(folders: Sequence[str | Path], pack: str = "paper") -> dict[str, Path]:
    """Convert the paper's files in ``folders`` into the cache and verify them; component -> path.

    Every file is found before anything is converted (so a missing one changes nothing).
    Each component is converted into its cache file atomically; the imported components are
    then loaded once more from the cache, and a failure raises :class:`ModelError`.
    """
    files = find_paper_files(folders, pack)
    stored: dict[str, Path] = {}
    for component in ("generator", "identity", "attribute_encoder", "mapper", "mapping"):
        if component in files:
            log.info("importing %s/%s from %s", pack, component, files[component])
            stored[component] = registry.import_file(files[component], f"{pack}/{component}")
    failed = [r for r in registry.verify(pack) if r.component in stored and not r.ok]
    if failed:
        raise ModelError("; ".join(f"{pack}/{r.component}: {r.message}" for r in failed))
    return stored
