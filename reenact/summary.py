"""The closing summary of a run: what was written, what the faces are, each warning once, the next step.

One function, :func:`summarize`, serves the command line (``reenact``/``deidentify`` print
it after the progress bar has closed) and the web app (shown under the result), so both say
the same thing. It reads only the run's report (the dict ``process_video`` returns) and the
paths written; it imports nothing of reenact and no third-party package.

What the faces are comes from the report's privacy section (faces per rung of the ladder) or,
for ``reenact``, from its counts; synthetic faces of an untrained pack (``models.trained:
false``) are called what they are: blobs without eyes, nose or mouth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["FILE_KINDS", "Summary", "face_kinds", "for_page", "summarize"]

Audience = Literal["cli", "page"]

#: the files a run writes, in the order the summary names them, with what each one is
FILE_KINDS = {
    "video": "video",
    "report": "report",
    "config": "settings",
    "preview": "preview sheet",
    "audit": "audit file, mode 0600: per-frame similarities and paths",
}

SYNTHETIC_RUNGS = ("synthetic", "redraw", "grown_mask")

#: one rung of the privacy ladder in words (rungs not listed are described from their name)
RUNG_WORDS = {
    "synthetic": "first synthetic identity",
    "redraw": "another identity drawn",
    "grown_mask": "larger region replaced",
    "blur": "face blurred",
    "pixelate": "face pixelated",
    "head_blur": "head blurred",
    "head_pixelate": "head pixelated",
    "fill": "face filled with its own colour",
    "face_solid": "face filled solid",
    "solid": "head filled solid",
}

UNTRAINED = "blobs without eyes, nose or mouth, from the untrained {pack!r} pack (a smoke test, not a result)"

#: command-line wording -> page wording, for messages the pipeline writes with flags in them
PAGE_WORDS = (
    (re.compile(r"pass --audio drop to leave it out"), "choose Audio: drop to leave it out"),
    (re.compile(r"--audio drop"), "Audio: drop"),
    (re.compile(r"--method (\w+)"), r"Method: \1"),
    (re.compile(r"--preview shows the original faces: a deidentify run writes it only with --audit"),
     "the preview sheet shows the original faces; it stays in this app's private folder"),
    (re.compile(r"--identity-mean/--identity-std"), "the identity model's mean and std settings"),
    (re.compile(r"--detector-threshold"), "the detector.score_threshold setting"),
    (re.compile(r"--privacy-threshold"), "the privacy_threshold setting"),
    (re.compile(r"--overwrite"), "a new run"),
    (re.compile(r" \((?:--identity|--faces reference:\.\.\.)\)"), ""),
)


def for_page(message: str) -> str:
    """A message the pipeline wrote for the command line, reworded for the web page (no flags)."""
    for pattern, words in PAGE_WORDS:
        message = pattern.sub(words, message)
    return message


@dataclass(frozen=True)
class Summary:
    """The summary's parts; :meth:`lines` is what the command line prints."""

    wrote: str
    files: str | None
    faces: str
    warnings: tuple[str, ...] = field(default_factory=tuple)
    next: str = ""

    def lines(self) -> list[str]:
        out = [self.wrote]
        if self.files:
            out.append(self.files)
        out.append(f"faces: {self.faces}")
        out += [f"warning: {w}" for w in self.warnings]
        if self.next:
            out.append(f"next: {self.next}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"wrote": self.wrote, "files": self.files, "faces": self.faces, "warnings": list(self.warnings),
                "next": self.next, "lines": self.lines()}


def rung_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """Faces per rung: the privacy ladder's counts (deidentify), or replaced/blurred (reenact)."""
    privacy = report.get("privacy") or {}
    if privacy.get("rungs") is not None:
        return {k: int(v) for k, v in privacy["rungs"].items() if v}
    counts = report.get("counts", {})
    out = {"synthetic": int(counts.get("faces_replaced", 0)), "blur": int(counts.get("faces_blurred", 0))}
    return {k: v for k, v in out.items() if v}


def _kind(rung: str) -> str:
    """Which kind of face a rung makes: synthetic, blurred, pixelated, solid (or the rung's name)."""
    if rung in SYNTHETIC_RUNGS:
        return "synthetic"
    for key, kind in (("blur", "blurred"), ("pixel", "pixelated"), ("solid", "filled solid")):
        if key in rung:
            return kind
    return rung.replace("_", " ")


def untrained_pack(report: Mapping[str, Any]) -> str | None:
    """The pack's name when the run used an untrained generator (its faces are blobs), else None."""
    models = report.get("models") or {}
    if models.get("generator") and models.get("trained") is False:
        return str(models.get("pack"))
    return None


def face_kinds(report: Mapping[str, Any]) -> dict[str, int]:
    """Faces per kind (synthetic, blurred, pixelated, filled solid), summed over the rungs."""
    kinds: dict[str, int] = {}
    for rung, n in rung_counts(report).items():
        kinds[_kind(rung)] = kinds.get(_kind(rung), 0) + n
    return kinds


def face_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """:func:`face_kinds` as a folder run's table names them: reenact's synthetic faces are
    "replaced" (they carry the identity photo's identity)."""
    reenact = report.get("mode") == "reenact"
    return {("replaced" if reenact and kind == "synthetic" else kind): n for kind, n in face_kinds(report).items()}


def faces_text(report: Mapping[str, Any]) -> str:
    """What the output's faces are, with counts per rung."""
    rungs = rung_counts(report)
    if not rungs:
        return "none found: the output is the input re-encoded"
    parts = []
    for kind, n in face_kinds(report).items():
        if kind == "synthetic":
            pack = untrained_pack(report)
            models = report.get("models") or {}
            what = (UNTRAINED.format(pack=pack) if pack is not None else
                    f"synthetic faces from the trained {models.get('pack')!r} pack")
            if report.get("mode") == "reenact" and pack is None:
                what = f"faces with the identity photo's identity, from the trained {models.get('pack')!r} pack"
            parts.append(f"{n} {what}")
        else:
            parts.append(f"{n} {kind}")
    per_rung = ", ".join(f"{RUNG_WORDS.get(r, r.replace('_', ' '))} {n}" for r, n in rungs.items())
    return "; ".join(parts) + f"; per rung: {per_rung}"


def target_similarity(report: Mapping[str, Any]) -> float | None:
    """``reenact``: the mean similarity of the output faces to the identity photo, frames-weighted."""
    total = weight = 0.0
    for track in (report.get("tracks") or {}).values():
        sims = track.get("similarity_to_target") or {}
        if sims.get("mean") is not None:
            n = float(track.get("replaced") or track.get("frames") or 1)
            total += float(sims["mean"]) * n
            weight += n
    return total / weight if weight else None


def derived_warnings(report: Mapping[str, Any]) -> list[str]:
    """Warnings the report implies but does not list: reenact's faces below its identity threshold."""
    out = []
    mean, threshold = target_similarity(report), report.get("identity_threshold")
    if mean is not None and threshold is not None and mean < float(threshold):
        why = (" (an untrained pack cannot make a face look like anyone)" if untrained_pack(report)
               else "")
        out.append(f"the faces' mean similarity to the identity photo is {mean:.3f}, below the pack's "
                   f"identity threshold {float(threshold):.3f}: they do not look like the photo{why}")
    return out


def _next_step(report: Mapping[str, Any], written: Mapping[str, Path], audience: Audience,
               command: str | None) -> str:
    pack, kinds = untrained_pack(report), face_kinds(report)
    video = written.get("video")
    if not kinds:
        if audience == "page":
            return "check that faces are visible in the clip; a lower detector.score_threshold finds fainter ones"
        return "check that faces are visible in the clip; --detector-threshold 0.3 finds fainter ones"
    if pack is not None and "synthetic" in kinds:
        if audience == "page":
            step = "real faces need trained weights (the README's \"Real faces\" section)"
            if report.get("mode") == "deidentify":
                step += "; to redact the faces now, choose Method: blur"
            return step
        step = "real faces need trained weights: `reenact models list` says what is missing, the README's " \
               "\"Real faces\" section how to get it"
        if report.get("mode") == "deidentify":
            step += f"; to redact the faces now: `{command or 'deidentify INPUT'} --method blur`"
        return step
    if audience == "page":
        return "watch the video" + (" and look at the preview sheet" if "preview" in written else "")
    step = f"watch {video.name if video else 'the video'}"
    if "preview" in written:
        step += f" and look at {written['preview'].name} (frame numbers, face boxes, rung per face)"
    return step


def summarize(report: Mapping[str, Any], written: Mapping[str, Path | str], *, audience: Audience = "cli",
              command: str | None = None, extra_warnings: tuple[str, ...] = ()) -> Summary:
    """The summary of one run.

    ``report``: what ``process_video`` returned; ``written``: kind (:data:`FILE_KINDS`) -> path
    of every file this run wrote; ``audience``: ``cli`` names flags and commands, ``page``
    names the page's controls; ``command``: how the user ran it (for the next step);
    ``extra_warnings``: warnings logged during the run that the report does not list. Each
    warning appears once, in the order first seen.
    """
    paths = {k: Path(v) for k, v in written.items()}
    video = paths.get("video")
    tracks = len(report.get("tracks") or {})
    fps = report.get("fps_processed")
    wrote = (f"wrote {video.name if video else report.get('output')}: {report.get('frames', 0)} frames, "
             f"{tracks} face track{'' if tracks == 1 else 's'}" + (f", {fps:.2f} fps" if fps else ""))
    beside = [f"{paths[k].name} ({FILE_KINDS[k]})" for k in FILE_KINDS if k != "video" and k in paths]
    files = ("beside it: " + ", ".join(beside)) if beside else None
    warnings: list[str] = []
    for w in [*report.get("warnings", []), *derived_warnings(report), *extra_warnings]:
        if w.startswith("no faces found"):  # the faces line says so
            continue
        text = for_page(w) if audience == "page" else w
        if text not in warnings:
            warnings.append(text)
    return Summary(wrote=wrote, files=files, faces=faces_text(report), warnings=tuple(warnings),
                   next=_next_step(report, paths, audience, command))
