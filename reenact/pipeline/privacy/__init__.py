"""Deidentify's privacy: the output check, the escalation ladder and the redactions.

* :mod:`~reenact.pipeline.privacy.redaction`: redaction kernels (head box, pixelate, blur
  with grain, solid fill);
* :mod:`~reenact.pipeline.privacy.checkers`: the checkers (identity model x chip, calibrated
  thresholds) and the check rule (:func:`passes`); reenact's report-only comparison;
* :mod:`~reenact.pipeline.privacy.guard`: the ladder (:class:`PrivacyGuard`) and the
  fail-closed coverage of untracked detections.

Imports go one way: redaction, checkers -> guard.
"""

from reenact.pipeline.privacy.checkers import (
    Checker,
    check_identities,
    checkable,
    checkers_for,
    count_faces,
    margins,
    offline_dlib,
    passes,
    run_recognisers,
)
from reenact.pipeline.privacy.guard import (
    COVER_IOU,
    ORIGINAL_REFRESH_FRAMES,
    REDACTION_RUNGS,
    SYNTHETIC_RUNGS,
    PrivacyGuard,
    Redraw,
    Render,
    ladder_for,
    untracked_faces,
)
from reenact.pipeline.privacy.redaction import (
    BLUR_MARGIN_SCALE,
    BLUR_NOISE,
    GRAIN_SEED,
    REDACTION_CELLS,
    grain_field,
    head_box,
    redact_region,
    redact_region_,
)

__all__ = [
    "BLUR_MARGIN_SCALE", "BLUR_NOISE", "REDACTION_RUNGS", "COVER_IOU", "GRAIN_SEED", "ORIGINAL_REFRESH_FRAMES",
    "REDACTION_CELLS", "SYNTHETIC_RUNGS", "Checker", "PrivacyGuard", "Redraw", "Render", "check_identities",
    "checkable", "checkers_for", "count_faces", "margins", "grain_field", "head_box", "ladder_for", "offline_dlib", "passes",
    "redact_region", "redact_region_", "run_recognisers", "untracked_faces",
]
