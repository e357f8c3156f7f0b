"""Deidentify's privacy: the output check, the escalation ladder and the redactions.

* :mod:`~reenact.pipeline.privacy.checkers`: the checkers (identity model x chip at the
  attacker's operating point) and the check rule (:func:`passes`: the operating point and the
  same-context baseline); reenact's report-only comparison;
* :mod:`~reenact.pipeline.privacy.guard`: the ladder (:class:`PrivacyGuard`) and the
  fail-closed coverage of untracked detections. The redactions are face-shaped
  (:mod:`reenact.blend.redact`), the baseline's windows :mod:`reenact.pipeline.baseline`.

Imports go one way: checkers -> guard.
"""

from reenact.pipeline.privacy.checkers import (
    Checker,
    check_identities,
    checkable,
    checkers_for,
    count_faces,
    headroom,
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

__all__ = [
    "COVER_IOU", "ORIGINAL_REFRESH_FRAMES", "REDACTION_RUNGS", "SYNTHETIC_RUNGS", "Checker", "PrivacyGuard", "Redraw",
    "Render", "check_identities", "checkable", "checkers_for", "count_faces", "headroom", "ladder_for", "margins",
    "offline_dlib", "passes", "run_recognisers", "untracked_faces",
]
