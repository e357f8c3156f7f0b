"""What a model pack is: plain, frozen descriptions of packs and their components.

A *pack* (``reenact/packs/<name>.yaml``) names every model the pipeline needs (generator,
detector, identity encoder, landmarks, attribute encoder + mapper), each with its source,
sha256 where known, licence, cache file name, input size, normalisation and template.
``source`` forms:

* ``https://...`` / ``http://...`` / ``file://...``: downloaded by ``reenact models pull``
  into the cache (resumable, checked, atomic) and, for generators, converted once.
* ``insightface:<pack>/<file>``: models that insightface itself downloads into
  ``~/.insightface/models`` (``INSIGHTFACE_HOME`` overrides the root); never downloaded by us.
* ``package:<module>/<path>``: files shipped inside an installed package.
* ``builtin:<name>``: made in code (the ``tiny`` pack's seeded networks).
* ``import:<where to get it>``: files the user downloads and imports
  (``reenact models import paper FOLDER``); never downloaded by us. The text after
  ``import:`` says where the file comes from and is quoted in "missing" messages.
* no source: produced by ``reenact-train`` into the cache.

This module is data only: it imports nothing of reenact (the import contract in
``.importlinter`` checks it) and nothing outside the standard library. Reading and
validating pack files is :mod:`reenact.models.registry`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "COMPONENT_KINDS",
    "SCHEMES",
    "Component",
    "ComponentKind",
    "Normalisation",
    "Pack",
    "SourceFormat",
]

ComponentKind = Literal[
    "stylegan2", "onnx", "insightface", "dlib", "identity_model",
    "stylegan1", "stylegan1_mapping", "paper_id_encoder", "paper_attr_encoder", "paper_mapper",
]
SourceFormat = Literal["nvlabs-pkl", "rosinality-pt", "reenact", "raw"]

COMPONENT_KINDS: tuple[str, ...] = (
    "stylegan2", "onnx", "insightface", "dlib", "identity_model",
    "stylegan1", "stylegan1_mapping", "paper_id_encoder", "paper_attr_encoder", "paper_mapper",
)
SCHEMES: tuple[str, ...] = ("https", "http", "file", "insightface", "package", "builtin", "import")
"""The ``source`` schemes a component may use (no source: made by training)."""


@dataclass(frozen=True)
class Normalisation:
    """Model input = (pixel_0_255 - mean) / std, in ``channels`` order."""

    mean: float
    std: float
    channels: Literal["RGB", "BGR"] = "RGB"


@dataclass(frozen=True)
class Component:
    """One model of a pack (see the module docstring for the ``source`` forms).

    ``optional``: the pack loads without it (``verify`` reports it absent, not failed).
    ``size``: the download's size in bytes where the source publishes it (a download stops
    there; a longer one is refused). ``file`` is a name inside the cache (no ``..``).
    """

    kind: ComponentKind
    licence: str
    source: str | None = None
    sha256: str | None = None
    size: int | None = None
    source_format: SourceFormat = "raw"
    file: str | None = None
    input_size: int | None = None
    output_size: int | None = None
    normalisation: Normalisation | None = None
    template: str | None = None
    architecture: dict[str, Any] | None = None
    seed: int | None = None
    optional: bool = False
    notes: str = ""

    @property
    def scheme(self) -> str:
        """``https``/``http``/``file``/``insightface``/``package``/``builtin``/``import`` or ``trained``."""
        return self.source.split(":", 1)[0] if self.source else "trained"

    @property
    def builtin(self) -> str | None:
        """The name after ``builtin:`` for components made in code, else None."""
        return self.source.split(":", 1)[1] if self.scheme == "builtin" and self.source else None


@dataclass(frozen=True)
class Pack:
    """A named set of components, as in ``reenact/packs/<name>.yaml``."""

    name: str
    description: str
    components: dict[str, Component] = field(default_factory=dict)
