"""The video pipeline (see :mod:`reenact.pipeline.run` for the numbered steps).

Parts: ``settings`` (the frozen settings tree), ``plan`` (every decision of a run resolved
once: :class:`RunPlan`), ``run`` (check_inputs, process_video, folder jobs, model cache),
``stream`` (steps 4-10 over decoded chunks), ``slots`` (frames in flight and batching),
``selection`` (``--faces``), ``identity`` (the identity policies), ``mapping`` (crop +
identity -> latent), ``privacy`` (a package: redaction kernels, checkers and the check rule,
the ladder), ``report`` (counts, tracks, stage times). Imports go one way: settings -> plan
-> report/slots/identity/mapping/selection -> privacy -> stream -> run.
"""

from reenact.pipeline.identity import (
    GeneratorCandidates,
    IdentityPolicy,
    SyntheticIdentities,
    TargetIdentity,
    TrackIdentity,
    make_policy,
)
from reenact.pipeline.mapping import LatentMapper, TrainedMapping, make_mapping
from reenact.pipeline.plan import OutputNames, Photo, RunPlan, plan_run
from reenact.pipeline.privacy import check_identities, untracked_faces
from reenact.pipeline.report import RunReport, StageTimer, TrackReport
from reenact.pipeline.run import (
    PackCache,
    cached_pack,
    check_inputs,
    process_video,
    report_paths,
    run_video,
    stale_reason,
    video_job,
)
from reenact.pipeline.selection import FaceSelection
from reenact.pipeline.settings import DeidentifySettings, Mode, PipelineConfig
from reenact.pipeline.slots import FaceRecord, FrameSlot, FrameSlots
from reenact.pipeline.stream import FaceReplacer, ThresholdedDetector, build_tracker

__all__ = [
    "DeidentifySettings", "FaceRecord", "FaceReplacer", "FaceSelection", "FrameSlot", "FrameSlots",
    "GeneratorCandidates", "IdentityPolicy", "LatentMapper", "Mode", "OutputNames", "PackCache", "Photo",
    "PipelineConfig", "RunPlan", "RunReport", "StageTimer", "SyntheticIdentities", "TargetIdentity",
    "ThresholdedDetector", "TrackIdentity", "TrackReport", "TrainedMapping", "build_tracker", "cached_pack",
    "check_identities", "check_inputs", "make_mapping", "make_policy", "plan_run", "process_video",
    "report_paths", "run_video", "stale_reason", "untracked_faces", "video_job",
]
