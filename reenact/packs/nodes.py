"""Models on every node of a cluster, without the user copying them.

A folder run on a cluster (:func:`reenact.storage.run_url_job`) calls :func:`ready_on_node`
on each node before its first video: each component the run loads is made ready from the
pack's own source and checked by hash there:

* ``builtin:`` components are generated from their seed (nothing to fetch or hash);
* ``package:`` files ship inside an installed wheel: hashed against the pack's sha256;
* ``https:``/``http:``/``file:`` sources are pulled into this node's cache when missing
  (:func:`reenact.models.registry.pull`, which checks the download against the sha256);
* ``import``/trained components and insightface's models must already be on the node:
  a missing one raises :class:`WeightsMissingError` naming the command that gets it.
"""

from __future__ import annotations

from reenact.errors import ChecksumError, WeightsMissingError
from reenact.models import registry

#: the components a classic redaction (blur, pixelate, solid) loads: no generator
FACE_COMPONENTS = ("detector", "identity", "landmarks")


def ready_on_node(pack: str, components: tuple[str, ...] | None = None) -> dict[str, str]:
    """Make ``components`` of ``pack`` (default: all) ready on this machine and verify them.

    Returns component -> how it was checked (``"sha256 ok"``, ``"generated from seed 0"``,
    ...). Raises :class:`ChecksumError` for a file whose hash differs from the pack's and
    :class:`WeightsMissingError` for one that cannot be fetched here.
    """
    spec = registry.get_pack(pack)
    checked: dict[str, str] = {}
    for name, comp in spec.components.items():
        if components is not None and name not in components:
            continue
        scheme = comp.scheme
        if scheme == "builtin":
            checked[name] = f"generated from seed {comp.seed}"
            continue
        if scheme == "insightface":
            checked[name] = "left to insightface"
            continue
        if scheme in ("http", "https", "file"):
            path = registry.pull(pack, name, progress=False)[name]
            if path is None:
                raise WeightsMissingError(f"{pack}/{name} could not be fetched on this node from {comp.source}")
            checked[name] = "fetched and checked by sha256"
            continue
        try:
            path = registry.resolve(pack, name)
        except WeightsMissingError:
            if comp.optional:
                continue
            raise
        if comp.sha256:
            digest = registry.sha256_file(path)
            if digest != comp.sha256.lower():
                raise ChecksumError(f"{pack}/{name}: {path} has sha256 {digest}, the pack lists {comp.sha256}; "
                                    "reinstall the package that ships it on this node")
            checked[name] = "sha256 ok"
        else:
            checked[name] = "present (no reference hash)"
    return checked
