"""How each component kind is converted and loaded, registered into the pack registry.

The registry (:mod:`reenact.models.registry`) imports no network module; it calls these
by component ``kind``. :func:`install` registers them; ``import reenact.packs`` runs it.
"""

from __future__ import annotations

from pathlib import Path

from reenact.errors import ModelError
from reenact.models import registry
from reenact.models.convert import convert_nvlabs_pickle, convert_rosinality, detect_format
from reenact.models.mapper import load_identity_model
from reenact.models.spec import Component
from reenact.models.stylegan2 import load_generator, save_generator


def _convert_generator(comp: Component, src: Path, target: Path, what: str) -> None:
    """NVlabs ``.pkl``, rosinality ``.pt`` or our ``.safetensors`` -> our format at ``target``."""
    fmt = detect_format(src)
    if fmt == "nvlabs-pkl":
        G = convert_nvlabs_pickle(src)
    elif fmt == "rosinality-pt":
        G = convert_rosinality(src)
    else:
        G = load_generator(src)
    registry.check_architecture(comp, G.config, what, src)
    save_generator(G, target)


def _check_generator(name: str, comp: Component, path: Path) -> None:
    G = load_generator(path)
    registry.check_architecture(comp, G.config, name, path)


def _check_identity_model(name: str, comp: Component, path: Path) -> None:
    load_identity_model(path)


def _check_onnx(name: str, comp: Component, path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises its own ValidationError types
        raise ModelError(f"{path} is not a valid ONNX model: {exc}") from exc


def _check_dlib(name: str, comp: Component, path: Path) -> None:
    """dlib models by role: ``landmarks`` is a shape predictor, ``identity`` the ResNet descriptor."""
    import dlib

    kinds = {"landmarks": dlib.shape_predictor, "identity": dlib.face_recognition_model_v1}
    if name not in kinds:
        raise ModelError(f"dlib component {name!r} ({path}): only 'landmarks' and 'identity' can be loaded")
    try:
        kinds[name](str(path))
    except RuntimeError as exc:  # dlib reports bad files as RuntimeError
        raise ModelError(f"{path} is not a loadable dlib model: {exc}") from exc


def install() -> None:
    """Register the loader of every component kind with the registry."""
    registry.register_loader("stylegan2", registry.KindLoader(check=_check_generator, convert=_convert_generator))
    registry.register_loader("identity_model", registry.KindLoader(check=_check_identity_model))
    registry.register_loader("onnx", registry.KindLoader(check=_check_onnx))
    registry.register_loader("insightface", registry.KindLoader(check=_check_onnx))
    registry.register_loader("dlib", registry.KindLoader(check=_check_dlib))
