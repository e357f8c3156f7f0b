"""How each component kind is converted and loaded, registered into the pack registry.

The registry (:mod:`reenact.models.registry`) imports no network module; it calls these
by component ``kind``. :func:`install` registers them; ``import reenact.packs`` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reenact.errors import ModelError
from reenact.models import inception_attr, paper_mapper, registry, stylegan1, vggface2
from reenact.models.convert import convert_nvlabs_pickle, convert_rosinality, detect_format
from reenact.models.mapper import load_identity_model
from reenact.models.spec import Component
from reenact.models.stylegan2 import load_generator, read_generator_config, save_generator


def _convert_generator(comp: Component, src: Path, target: Path, what: str) -> None:
    """NVlabs ``.pkl``, rosinality ``.pt`` or our ``.safetensors`` -> our format at ``target``."""
    fmt = detect_format(src)
    if fmt == "nvlabs-pkl":
        G = convert_nvlabs_pickle(src)
    elif fmt == "rosinality-pt":
        G = convert_rosinality(src)
    else:
        registry.check_architecture(comp, read_generator_config(src), what, src)  # before any tensor
        G = load_generator(src)
    registry.check_architecture(comp, G.config, what, src)
    save_generator(G, target)


def _check_stylegan1(comp: Component, G: stylegan1.Generator, what: str, src: Path) -> None:
    if comp.output_size is not None and G.img_resolution != comp.output_size:
        raise ModelError(
            f"{src} is a {G.img_resolution}x{G.img_resolution} StyleGAN v1 network, but {what} "
            f"needs {comp.output_size}x{comp.output_size} (stylegan_G_{comp.output_size}x"
            f"{comp.output_size}_synthesis)"
        )
    registry.check_architecture(comp, {**G.config["synthesis"], "z_dim": G.z_dim, "c_dim": 0}, what, src)


def _convert_stylegan1(comp: Component, src: Path, target: Path, what: str) -> None:
    """The authors' TF checkpoint (``.index``) or ``.h5``, an official ``.pkl`` or ours -> ours."""
    if src.suffix == ".safetensors":
        G = stylegan1.load_stylegan1(src)
    else:
        G = stylegan1._read_foreign(src, comp.output_size)
    _check_stylegan1(comp, G, what, src)
    stylegan1.save_stylegan1(G, target)


def _check_stylegan1_file(name: str, comp: Component, path: Path) -> None:
    _check_stylegan1(comp, stylegan1.load_stylegan1(path), name, path)


def _convert_v1_mapping(comp: Component, src: Path, target: Path, what: str) -> None:
    """The ``G_mapping`` of an official StyleGAN v1 ``.pkl`` (or ours) -> our format."""
    if src.suffix == ".safetensors":
        mapping = stylegan1.load_mapping(src, num_ws=1)
    else:
        mapping = stylegan1.mapping_from_nvidia_pickle(src, num_ws=1)
    registry.check_architecture(comp, mapping.config, what, src)
    stylegan1.save_mapping(mapping, target)


def _check_v1_mapping(name: str, comp: Component, path: Path) -> None:
    registry.check_architecture(comp, stylegan1.load_mapping(path, num_ws=1).config, name, path)


def _convert_with(read: Callable[[Path], Any], save: Callable[[Any, Path], Path]) -> Callable[..., None]:
    """A converter for the authors' ``.h5`` files (or our own ``.safetensors``, re-saved)."""

    def convert(comp: Component, src: Path, target: Path, what: str) -> None:
        save(read(src), target)

    return convert


def _check_generator(name: str, comp: Component, path: Path) -> None:
    registry.check_architecture(comp, read_generator_config(path), name, path)  # before any tensor
    G = load_generator(path)
    registry.check_architecture(comp, G.config, name, path)


def _check_identity_model(name: str, comp: Component, path: Path) -> None:
    load_identity_model(path)


def _check_onnx(name: str, comp: Component, path: Path) -> None:
    from reenact.faces.onnx_session import load_onnx_model

    load_onnx_model(path, name)  # checked, and sized: no tensor over the limit


def _check_dlib(name: str, comp: Component, path: Path) -> None:
    """dlib models by role: ``landmarks`` is a shape predictor, ``identity`` the ResNet descriptor."""
    import dlib

    kinds = {"landmarks": dlib.shape_predictor, "identity": dlib.face_recognition_model_v1,
             "recogniser": dlib.face_recognition_model_v1}
    if name not in kinds:
        raise ModelError(
            f"dlib component {name!r} ({path}): only 'landmarks', 'identity' and 'recogniser' can be loaded"
        )
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
    registry.register_loader("stylegan1", registry.KindLoader(check=_check_stylegan1_file, convert=_convert_stylegan1))
    registry.register_loader("stylegan1_mapping", registry.KindLoader(check=_check_v1_mapping, convert=_convert_v1_mapping))
    registry.register_loader("paper_id_encoder", registry.KindLoader(
        check=lambda name, comp, path: vggface2.load_id_encoder(path),
        convert=_convert_with(
            lambda src: vggface2.load_id_encoder(src) if src.suffix == ".safetensors"
            else vggface2.id_encoder_from_keras_h5(src),
            vggface2.save_id_encoder),
    ))
    registry.register_loader("paper_attr_encoder", registry.KindLoader(
        check=lambda name, comp, path: inception_attr.load_attr_encoder(path),
        convert=_convert_with(
            lambda src: inception_attr.load_attr_encoder(src) if src.suffix == ".safetensors"
            else inception_attr.attr_encoder_from_keras_h5(src),
            inception_attr.save_attr_encoder),
    ))
    registry.register_loader("paper_mapper", registry.KindLoader(
        check=lambda name, comp, path: paper_mapper.load_paper_mapper(path),
        convert=_convert_with(
            lambda src: paper_mapper.load_paper_mapper(src) if src.suffix == ".safetensors"
            else paper_mapper.mapper_from_keras_h5(src),
            paper_mapper.save_paper_mapper),
    ))
