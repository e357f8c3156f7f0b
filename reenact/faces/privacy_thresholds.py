"""Privacy thresholds: how dissimilar a de-identified face must be from its original.

**The attacker's operating point** (:data:`OPERATING_POINTS`, :func:`operating_point`): the
similarity at which a recogniser calls two photos the same person at the loosest point an
attacker would use: the looser of 1 % false matches on the different-person pairs of the
labelled fixture photos and the recogniser's documented rule (dlib: descriptor distance
0.6), per identity model and chip, with its provenance. Together with the **same-context
baseline** (a face's original frame with the face region filled with its mean colour: what
the recogniser says when the face is gone and the context stays) it decides whether an
output face is private (the rule: ``reenact.pipeline.privacy.checkers.passes``). The genuine-pair quantiles below
(:data:`PRIVACY_THRESHOLDS`) are statistics for the report.

The same-person threshold of an identity model (``SAME_PERSON_THRESHOLDS``) is an operating
point for *telling people apart*. A privacy check needs the other end of the same-person
distribution: an output face must be **less similar to its original than nearly any real
photo of the same person is**. So each identity model has a privacy threshold per chip, the
0.1 % quantile of its same-person similarities, measured by ``bench/calibrate_privacy.py`` on
the labelled fixture photos plus face tracks of the single-person fixture clips.

Chips: ``tight`` is the model's own alignment (what the pipeline embeds); ``loose`` keeps
more context (hair, ears, jaw line: what a face swap keeps and a recogniser with its own
crop would see), made by shrinking the model's five-point template towards the chip centre.

Conventions:
    frames uint8 [T,H,W,3] RGB; frame_index long [F]; points float [F,5,2] frame pixels;
    embeddings float32 [F,D] unit rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from reenact.errors import ConfigError
from reenact.faces.align import similarity_from_points, warp_to_crop
from reenact.faces.identity import IdentityEncoder

Chip = Literal["tight", "loose"]
CHIPS: tuple[Chip, ...] = ("tight", "loose")
#: share of same-person pairs allowed below a privacy threshold
GENUINE_QUANTILE = 0.001
#: the loose chip: the template's points are pulled this far towards the chip centre,
#: so the face fills less of the chip (about 1.5x the context on each side)
LOOSE_SCALE = 0.7


@dataclass(frozen=True)
class PrivacyThreshold:
    """A calibrated privacy threshold and how it was measured."""

    threshold: float
    genuine_pairs: int
    false_match_rate: float
    source: str = "bench/calibrate_privacy.py on the fixture photos and single-person clips"


def chip_template(encoder: IdentityEncoder, chip: Chip) -> torch.Tensor:
    """The five-point template of ``encoder``'s chip, tight (its own) or loose.

    Conventions:
        returns float32 [5,2] chip pixels
    """
    template = encoder.template().float()
    if chip == "tight":
        return template
    if chip != "loose":
        raise ConfigError(f"unknown chip {chip!r}; use one of {CHIPS}")
    centre = (encoder.crop_size - 1) / 2.0
    return (template - centre) * LOOSE_SCALE + centre


def chip_crops(
    encoder: IdentityEncoder, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor, chip: Chip
) -> torch.Tensor:
    """The chips of faces cut from ``frames`` with ``encoder``'s tight or loose template, ready
    for ``encoder.embed_aligned``.

    Conventions:
        frames uint8 [T,H,W,3]; frame_index long [F]; points float [F,5,2] frame pixels;
        returns float [F,3,S,S] in [-1,1] (S: the encoder's ``crop_size``)
    """
    M = similarity_from_points(points.float().to(frames.device), chip_template(encoder, chip).to(frames.device))
    return warp_to_crop(frames, torch.as_tensor(frame_index), M, encoder.crop_size)


def embed_with_chip(
    encoder: IdentityEncoder, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor, chip: Chip
) -> torch.Tensor:
    """Embed faces cut from ``frames`` with the tight or the loose chip (see module docstring)."""
    if chip == "tight":
        return encoder.embed(frames, frame_index, points)
    return encoder.embed_aligned(chip_crops(encoder, frames, frame_index, points, chip))


#: Per identity model and chip, measured by ``bench/calibrate_privacy.py --gap 10`` (545
#: same-person pairs: 99 from the labelled photos, the rest from frames of the three
#: single-person clips; 2,122 different-person pairs). With 545 pairs the 0.1 % quantile is
#: in effect the lowest same-person similarity seen. ``false_match_rate``: share of
#: different-person pairs at or above the threshold (a synthetic identity that lands there
#: is rejected and redrawn). MobileFace V2 stands in for the ArcFace family.
PRIVACY_THRESHOLDS: dict[str, dict[Chip, PrivacyThreshold]] = {
    "dlib-resnet": {
        "tight": PrivacyThreshold(0.9317, 545, 0.0005),
        "loose": PrivacyThreshold(0.9206, 545, 0.1310),
    },
    "arcface-onnx": {
        "tight": PrivacyThreshold(0.3554, 545, 0.0042),
        "loose": PrivacyThreshold(0.1804, 545, 0.7488),
    },
}


def privacy_threshold(model: str, chip: Chip, override: float | None = None) -> float:
    """The privacy threshold of identity model ``model`` (its ``name``) for ``chip``.

    ``override`` (``deidentify.privacy_threshold``) wins when given. An identity model with
    no calibration is a :class:`ConfigError` naming the fix.
    """
    if override is not None:
        return float(override)
    if model not in PRIVACY_THRESHOLDS:
        raise ConfigError(
            f"identity model {model!r} has no calibrated privacy threshold; calibrate it with "
            "bench/calibrate_privacy.py or set deidentify.privacy_threshold"
        )
    return PRIVACY_THRESHOLDS[model][chip].threshold


@dataclass(frozen=True)
class OperatingPoint:
    """The attacker's operating point of one recogniser and chip (module docstring).

    ``threshold``: the cosine at or above which the attacker calls a face the person;
    ``false_match_rate``: share of the ``impostor_pairs`` different-person fixture photo pairs
    at or above it; ``provenance``: where the number comes from. ``allowance``: how far above
    a face's same-context baseline it may be where that baseline reaches ``threshold``
    (:data:`BASELINE_ALLOWANCE`).
    ``genuine_pairs`` / ``genuine_at_or_above``: same-person pairs measured and the share the
    recogniser accepts at ``threshold`` (for the report; never part of the decision).
    """

    threshold: float
    false_match_rate: float
    impostor_pairs: int
    provenance: str
    allowance: float
    genuine_pairs: int
    genuine_at_or_above: float


#: Where context alone (the same-context baseline) reaches the operating point, a face must be
#: no more similar than that baseline: the allowance above it is 0. It was the 90 % quantile of
#: (another person's face pasted there - baseline) on the fixture clips (dlib tight 0.0108,
#: loose 0.0261): a recogniser that cannot tell the face from its context then passes any
#: redaction within it, and on the fixture ``friends`` clip (``bench/privacy.py --frames 4``)
#: the fixture MobileFace, which can, still linked 8 of 24 blurred faces (the black-box floor:
#: 4). With 0: 4 of 24, the floor (those tracks end on ``fill``, which is the baseline).
BASELINE_ALLOWANCE = 0.0

#: The attacker's operating points, measured by ``python bench/calibrate_privacy.py --gap 10
#: --frames 6`` (2,122 different-person pairs of the 68 labelled fixture photos; the baseline
#: on 97 faces of 6 sampled frames of every fixture clip; the table and its genuine and
#: baseline statistics: the bench's Markdown output). MobileFace V2 stands in for the
#: ArcFace family (``arcface-onnx``).
_FMR = "1 % false matches on 2,122 different-person fixture photo pairs"
OPERATING_POINTS: dict[str, dict[Chip, OperatingPoint]] = {
    "dlib-resnet": {
        # dlib's rule (distance < 0.6) is cosine 0.9236 at the descriptors' median norm 1.496
        # and accepts 0.61 % of the pairs: stricter than 1 %, so 1 % is the attacker's point
        "tight": OperatingPoint(0.9100, 0.0104, 2122, _FMR + " (looser than dlib's documented distance < 0.6: "
                                "cosine 0.9236 at the median descriptor norm 1.496, 0.61 % false matches)",
                                BASELINE_ALLOWANCE, 545, 1.0),
        "loose": OperatingPoint(0.9466, 0.0104, 2122, _FMR, BASELINE_ALLOWANCE, 545, 0.9064),
    },
    "arcface-onnx": {
        "tight": OperatingPoint(0.3259, 0.0104, 2122, _FMR, BASELINE_ALLOWANCE, 545, 1.0),
        "loose": OperatingPoint(0.6446, 0.0104, 2122, _FMR, BASELINE_ALLOWANCE, 545, 0.6037),
    },
}


def operating_point(model: str, chip: Chip) -> OperatingPoint:
    """The attacker's operating point of identity model ``model`` (its ``name``) for ``chip``;
    an identity model with no calibration is a :class:`ConfigError` naming the fix."""
    if chip not in CHIPS:
        raise ConfigError(f"unknown chip {chip!r}; use one of {CHIPS}")
    if model not in OPERATING_POINTS:
        raise ConfigError(
            f"identity model {model!r} has no calibrated operating point; calibrate it with "
            "bench/calibrate_privacy.py or set deidentify.privacy_threshold"
        )
    return OPERATING_POINTS[model][chip]
