"""The video pipeline (see :mod:`reenact.pipeline.run` for the numbered steps).

Parts: ``settings`` (the frozen settings tree), ``run`` (check_inputs, process_video, folder
jobs, model cache), ``stream`` (steps 4-10 over decoded chunks), ``slots`` (frames in
flight and batching), ``selection`` (``--faces``), ``identity`` (an identity policy per mode),
``mapping`` (crop + identity -> latent), ``privacy`` (output identity check, redaction),
``report`` (counts, tracks, stage times, warnings). Imports go one way: settings ->
report/slots/identity/mapping/selection -> privacy -> stream -> run.
"""

from reenact.pipeline.identity import (
    GeneratorCandidates,
    IdentityPolicy,
    SyntheticIdentities,
    TargetIdentity,
    TrackIdentity,
    policy_class,
)
from reenact.pipeline.mapping import LatentMapper, TrainedMapping, make_mapping
from reenact.pipeline.privacy import blur_boxes, check_identities, redact, untracked_faces
from reenact.pipeline.report import RunReport, StageTimer, TrackReport
from reenact.pipeline.run import (
    PackCache,
    cached_pack,
    check_inputs,
    process_video,
    report_paths,
    stale_reason,
    video_job,
)
from reenact.pipeline.selection import FaceSelection
from reenact.pipeline.settings import DeidentifySettings, Mode, PipelineConfig
from reenact.pipeline.slots import FaceRecord, FrameSlot, FrameSlots
from reenact.pipeline.stream import FaceReplacer, ThresholdedDetector, build_tracker

__all__ = [
    "DeidentifySettings", "FaceRecord", "FaceReplacer", "FaceSelection", "FrameSlot", "FrameSlots",
    "GeneratorCandidates", "IdentityPolicy", "LatentMapper", "Mode", "PackCache", "PipelineConfig",
    "RunReport", "StageTimer", "SyntheticIdentities", "TargetIdentity", "ThresholdedDetector",
    "TrackIdentity", "TrackReport", "TrainedMapping", "blur_boxes", "build_tracker", "cached_pack",
    "check_identities", "check_inputs", "make_mapping", "policy_class", "process_video", "redact",
    "report_paths", "stale_reason", "untracked_faces", "video_job",
]
