"""``reenact eval``: quality metrics for any pair of input and output videos.

:mod:`.metrics` holds pure metric functions, :mod:`.report` measures two videos and builds
the JSON report, :mod:`.plots` draws it.
"""

from reenact.evaluate.report import EvalSettings, evaluate_videos

__all__ = ["EvalSettings", "evaluate_videos"]
