"""The Python API: the two commands as objects that process one video at a time.

    from reenact import Reenactor, Deidentifier
    report = Reenactor("face.jpg")("clip.mp4", "clip_reenacted.mp4")
    report = Deidentifier(seed=3)("clip.mp4", "clip_private.mp4")

Each call writes the output video atomically with its report and resolved config beside it
and returns the report (a dict, as in the ``.report.json`` file). Models are loaded once per
process and reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reenact.config import replace
from reenact.pipeline import PipelineConfig, process_video


class Reenactor:
    """Put the identity of ``identity`` (a photo) on the faces of videos."""

    def __init__(self, identity: str | Path, config: PipelineConfig | None = None) -> None:
        self.identity = Path(identity)
        self.config = config or PipelineConfig()

    def __call__(self, source: str | Path, output: str | Path, *, overwrite: bool = False,
                 preview: bool = False, audit: bool = False) -> dict[str, Any]:
        return process_video(source, output, "reenact", self.config, identity=self.identity,
                             overwrite=overwrite, preview=preview, audit=audit)


class Deidentifier:
    """Give every person in videos a consistent synthetic identity (seeded, reproducible)."""

    def __init__(self, config: PipelineConfig | None = None, seed: int | None = None) -> None:
        config = config or PipelineConfig()
        self.config = replace(config, {"seed": seed}) if seed is not None else config

    def __call__(self, source: str | Path, output: str | Path, *, overwrite: bool = False,
                 preview: bool = False, audit: bool = False) -> dict[str, Any]:
        """Returns the report; ``audit`` also writes ``OUTPUT.audit.json`` (mode 0600)."""
        return process_video(source, output, "deidentify", self.config, overwrite=overwrite, preview=preview,
                             audit=audit)
