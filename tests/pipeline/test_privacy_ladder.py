"""The deidentify privacy check and its escalation ladder, on plain tensors with tiny fakes.

The fake recogniser reads one pixel: its ``tight`` embedding is the angle of the red value at
the face's centre, its ``loose`` embedding (through :func:`embed_with_chip`'s own warp) the
angle of the red value at the loose chip's corner, i.e. context outside the face. So a face
whose centre changed but whose surroundings did not passes the tight check and fails the
loose one, the way a face swap that keeps hair and jaw line does.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import reenact.pipeline.privacy.checkers as checkers_module
import reenact.pipeline.privacy.guard as guard_module
from reenact.blend import redact
from reenact.blend.redact import FEATHER, face_regions, head_boxes
from reenact.errors import ShapeError
from reenact.faces.privacy_thresholds import OPERATING_POINTS
from reenact.pipeline.privacy import (
    Checker,
    PrivacyGuard,
    headroom,
    ladder_for,
    passes,
)
from reenact.pipeline.report import RunReport
from reenact.pipeline.slots import FaceRecord

pytestmark = pytest.mark.privacy  # bench/mutation.py runs these per mutant

H = W = 64


BOX = np.array([20.0, 20.0, 44.0, 44.0], np.float32)
POINTS = np.array([[27, 28], [37, 28], [32, 33], [28, 38], [36, 38]], np.float32)  # centroid (32, 33)
CX, CY = 32, 33


def _angle_code(red: torch.Tensor) -> torch.Tensor:
    a = red.float() / 255.0 * math.pi
    return torch.stack([torch.cos(a), torch.sin(a)], dim=-1)


class PixelEncoder:
    """A recogniser that sees one pixel (see the module docstring)."""

    name, dim, crop_size = "pixel", 2, 16

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def template(self) -> torch.Tensor:
        return torch.tensor([[5.0, 6.0], [11.0, 6.0], [8.0, 8.5], [6.0, 11.0], [10.0, 11.0]])

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("recogniser crashed")
        centre = points.float().mean(dim=1).round().long()
        return _angle_code(frames[frame_index, centre[:, 1], centre[:, 0], 0])

    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("recogniser crashed")
        return _angle_code((crops[:, 0, 0, 0] + 1) * 127.5)


def checkers(*chips: str, threshold: float = 0.5, fail: bool = False) -> list[Checker]:
    enc = PixelEncoder(fail)
    return [Checker(enc, chip, threshold, "test") for chip in chips]  # type: ignore[arg-type]


def frame_with_face(background: int = 255, centre: int = 0) -> torch.Tensor:
    """Red ``background`` everywhere, a 3x3 patch of red ``centre`` at the face's centre."""
    frame = torch.zeros(1, H, W, 3, dtype=torch.uint8)
    frame[..., 0] = background
    frame[0, CY - 1 : CY + 2, CX - 1 : CX + 2, 0] = centre
    return frame


def paint_centre(out: torch.Tensor, value: int, half: int = 1) -> torch.Tensor:
    out = out.clone()
    out[0, CY - half : CY + half + 1, CX - half : CX + half + 1, 0] = value
    return out


class FakeRender:
    """Paints the face centre red ``value`` per rung (None: leaves it), and logs its calls."""

    def __init__(self, redraw: int | None = None, grown: int | None = None) -> None:
        self.values = {"redraw": redraw, "grown_mask": grown}
        self.calls: list[str] = []

    def __call__(self, frames, out, faces, codes, grown):  # noqa: ANN001, ANN204 - the Render signature
        rung = "grown_mask" if grown else "redraw"
        self.calls.append(rung)
        value = self.values[rung]
        return out if value is None else paint_centre(out, value, half=3 if grown else 1)


def record(track: int = 0, failed: str | None = None, points: np.ndarray = POINTS) -> FaceRecord:
    return FaceRecord(track, BOX.copy(), points.copy(), failed=failed)


def guard(ladder: tuple[str, ...], chk: list[Checker], render=None, redraw=None, redraws: int = 1):  # noqa: ANN001, ANN201
    report = RunReport("similarity_to_original")
    g = PrivacyGuard(chk, ladder, report, render=render, redraw=redraw, redraws=redraws)
    report.privacy = g.describe()  # as the FaceReplacer records it
    return g, report


SYNTHETIC = ladder_for("synthetic", redraws=1)


def head(box: np.ndarray, points: np.ndarray | None = POINTS, grow: float = 1.0) -> tuple[int, int, int, int]:
    """The head box of a face (the bounds of its face-shaped region), optionally grown."""
    regions = face_regions(torch.from_numpy(box)[None], None if points is None else torch.from_numpy(points)[None])
    regions[:, 2:4] *= grow
    left, top, right, bottom = head_boxes(regions, W, H)[0].tolist()
    return left, top, right, bottom


def test_ladders_redact_the_face_shape_before_the_head_and_end_with_solid() -> None:
    assert SYNTHETIC == ("synthetic", "redraw", "grown_mask", "blur", "fill", "head_blur", "solid")
    assert ladder_for("blur") == ("blur", "fill", "head_blur", "solid")
    assert ladder_for("blur", "pixelate") == ("blur", "fill", "head_pixelate", "head_blur", "solid")
    assert ladder_for("pixelate") == ("pixelate", "fill", "head_pixelate", "head_blur", "solid")
    assert ladder_for("solid") == ("face_solid", "solid")  # the face's shape black, the head box where it links
    assert ladder_for("synthetic", "pixelate", redraws=0) == ("synthetic", "grown_mask", "blur", "fill",
                                                              "head_pixelate", "solid")
    assert ladder_for("synthetic") == SYNTHETIC  # by default: one redraw, then the face's shape blurred


def test_face_passing_tight_but_failing_loose_is_redacted() -> None:
    frames = frame_with_face(background=0, centre=0)
    out = paint_centre(frames, 255)  # the swapped face: centre changed, surroundings kept
    g, report = guard(SYNTHETIC, checkers("tight"), render=FakeRender())
    tight_only = g.apply(frames, out, [(0, record())], [0])
    assert report.tracks[0].rungs == {"synthetic": 1}  # the tight check alone lets it through
    assert torch.equal(tight_only, out)

    g, report = guard(SYNTHETIC, checkers("tight", "loose"), render=FakeRender())
    result = g.apply(frames, out, [(0, record())], [0])
    # the loose chip sees only context (uniform): the face ends on its baseline, the fill
    assert report.tracks[0].rungs == {"fill": 1}
    # what is written (fill) passes: the failed checks on the way there are not the output's
    assert report.tracks[0].failed_checks == 0
    assert int(result[0, CY, CX, 0]) == 0  # the swapped face is gone: the region's own colour


@pytest.mark.parametrize(("rung", "render", "redraw_code"), [
    ("synthetic", FakeRender(), None),
    ("redraw", FakeRender(redraw=255), torch.ones(2)),
    ("grown_mask", FakeRender(redraw=0, grown=255), torch.ones(2)),
    ("blur", FakeRender(redraw=0, grown=0), torch.ones(2)),
])
def test_each_rung_is_reached_and_counted(rung: str, render: FakeRender, redraw_code: torch.Tensor | None) -> None:
    frames = frame_with_face(background=255, centre=0)
    out = paint_centre(frames, 255) if rung == "synthetic" else frames.clone()
    g, report = guard(SYNTHETIC, checkers("tight"), render=render, redraw=lambda _t: redraw_code)
    result = g.apply(frames, out, [(0, record())], [7])
    track = report.tracks[0]
    assert track.rungs == {rung: 1}
    assert track.frames == 1 and track.failed_checks == 0
    assert track.max_similarity["pixel/tight"] < 0.5
    assert not torch.equal(result, frames)  # the face that leaves the ladder is changed
    if rung in ("synthetic", "redraw", "grown_mask"):
        assert report.counts["faces_replaced"] == 1
    else:
        assert report.counts["faces_blurred"] == 1


def test_a_face_only_its_context_links_ends_on_fill_and_the_track_stays_there() -> None:
    frames = frame_with_face(background=0, centre=0)  # nothing changes the one pixel it sees
    render = FakeRender(redraw=0, grown=0)
    g, report = guard(SYNTHETIC, checkers("tight"), render=render, redraw=lambda _t: torch.ones(2))
    result = g.apply(frames, frames.clone(), [(0, record())], [0])
    # every rung fails; the fill is the context alone, which links: it passes by construction
    assert report.tracks[0].rungs == {"fill": 1}
    assert render.calls == ["redraw", "grown_mask"]  # one redraw (redraws=1), then the grown mask
    assert int(result[0, CY, CX, 0]) == 0 and int(result[0, CY, CX].sum()) == 0
    # the next frame of the track starts on the rung the track reached: no flicker back
    g.apply(frames, frames.clone(), [(0, record())], [1])
    assert report.tracks[0].rungs == {"fill": 2}
    assert render.calls == ["redraw", "grown_mask"]


def test_redraws_are_bounded_per_track() -> None:
    frames = frame_with_face(background=0, centre=0)
    draws: list[int] = []

    def redraw(track: int) -> torch.Tensor:
        draws.append(track)
        return torch.ones(2)

    g, report = guard(SYNTHETIC, checkers("tight"), render=FakeRender(redraw=0, grown=0), redraw=redraw, redraws=3)
    g.apply(frames, frames.clone(), [(0, record())], [0])
    assert len(draws) == 3
    assert report.tracks[0].rungs == {"fill": 1}


def test_blend_refused_faces_are_redacted_not_left() -> None:
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(SYNTHETIC, checkers("tight"), render=FakeRender())
    result = g.apply(frames, frames.clone(), [(0, record(failed="generated face refused by the blender"))], [0])
    assert report.tracks[0].rungs == {"blur": 1}  # straight to the face-shaped blur, re-checked
    assert not torch.equal(result, frames)


def test_untracked_detections_are_redacted() -> None:
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(SYNTHETIC, checkers("tight"), render=FakeRender())
    untracked = FaceRecord(-1, BOX.copy(), np.zeros((5, 2), np.float32), failed="untracked")
    result = g.apply(frames, frames.clone(), [(0, untracked)], [0])
    assert report.counts["untracked_detections_blurred"] == 1
    assert report.untracked_rungs == {"solid": 1}  # no points to check it with: fail closed
    left, top, right, bottom = head(BOX, None)
    assert int(result[0, top:bottom, left:right].max()) == 0


def test_a_check_that_raises_fails_closed() -> None:
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(ladder_for("pixelate"), checkers("tight", fail=True))
    result = g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method pixelate"))], [0])
    assert report.tracks[0].rungs == {"solid": 1}
    assert report.tracks[0].failed_checks == 1  # reported as not passed: it could not be checked
    assert int(result[0, CY, CX].sum()) == 0


@pytest.mark.parametrize("method", ["blur", "pixelate", "solid"])
def test_classic_methods_change_the_face_and_keep_the_frame(method: str) -> None:
    frames = torch.randint(0, 256, (2, H, W, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    frames[..., 0] = 255
    frames[:, CY - 1 : CY + 2, CX - 1 : CX + 2, 0] = 128  # the face
    g, report = guard(ladder_for(method), checkers("tight"))
    faces = [(j, record(failed=f"redacted by --method {method}")) for j in (0, 1)]
    result = g.apply(frames, frames.clone(), faces, [0, 1])
    assert result.shape == frames.shape and result.dtype == torch.uint8
    assert report.tracks[0].rungs == {"face_solid" if method == "solid" else method: 2}
    # every method reaches the face's region and its feathered edge: no further
    left, top, right, bottom = head(BOX, grow=1.0 + FEATHER)
    for j in (0, 1):
        assert not torch.equal(result[j, CY - 4 : CY + 5, CX - 4 : CX + 5], frames[j, CY - 4 : CY + 5, CX - 4 : CX + 5])
    outside = torch.ones(H, W, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert torch.equal(result[:, outside], frames[:, outside])
    hl, ht, hr, hb = head(BOX)  # the face's shape, not its box: the head box's corners are kept
    for y, x in ((ht, hl), (ht, hr - 1), (hb - 1, hl), (hb - 1, hr - 1)):
        assert torch.equal(result[:, y, x], frames[:, y, x])


def test_face_that_the_blur_leaves_linked_is_filled_with_its_own_colour_not_solid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dark face on a bright frame, wider than the blur reaches: the blur leaves its centre
    dark (linked); the face-shaped fill (the region's mean colour: the same-context baseline)
    changes it, so the face ends on ``fill``, not black, and nothing past the head is touched."""
    monkeypatch.setattr(redact, "SMALL_FACE", 0)  # blur at this 30 px face's own strength
    frames = torch.full((1, H, W, 3), 255, dtype=torch.uint8)
    frames[0, 20:46, 22:43, 0] = 0  # the face: most of the head box, dark
    g, report = guard(ladder_for("blur"), checkers("tight"))
    result = g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method blur"))], [0])
    assert report.tracks[0].rungs == {"fill": 1}, report.tracks[0].rungs
    assert 60 < int(result[0, CY, CX, 0]) < 200  # the region's mean, neither the face nor black
    left, top, right, bottom = head(BOX, grow=1.0 + FEATHER)
    outside = torch.ones(H, W, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert torch.equal(result[:, outside], frames[:, outside])  # never wider than the head


def test_blur_that_still_matches_where_context_alone_matches_ends_on_fill() -> None:
    frames = frame_with_face(background=0, centre=0)  # uniform: a blur changes nothing it sees
    g, report = guard(ladder_for("blur"), checkers("tight", "loose"))
    result = g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method blur"))], [0])
    assert report.tracks[0].rungs == {"fill": 1}, "the baseline itself, not the black head box"
    assert int(result[0, CY, CX].sum()) == 0


def test_default_report_has_aggregates_and_the_audit_has_frames() -> None:
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(SYNTHETIC, checkers("tight", "loose"), render=FakeRender(redraw=255),
                      redraw=lambda _t: torch.ones(2))
    g.apply(frames, frames.clone(), [(0, record())], [3])
    report.tracks[0].identity = {"draws": 2, "code": [0.1, 0.2], "similarity_to_original": 0.1, "failed": None}
    public = report.tracks[0].summary("similarity_to_original")
    assert set(public) == {"frames", "replaced", "blurred", "w_jitter", "privacy", "synthetic_identity"}
    assert set(public["privacy"]) == {"passed", "rungs", "rung_share", "max_similarity", "min_margin", "carried"}
    assert sum(public["privacy"]["rung_share"].values()) == pytest.approx(1.0)
    assert "code" not in public["synthetic_identity"]
    audit = report.tracks[0].summary("similarity_to_original", audit=True)
    assert audit["privacy"]["per_frame"][0][:2] == [3, audit["privacy"]["per_frame"][0][1]]
    assert audit["synthetic_identity"]["code"] == [0.1, 0.2]
    assert report.privacy is not None and [c["chip"] for c in report.privacy["checkers"]] == ["tight", "loose"]
    # a face that passed a check reports its margins: to the operating point, to its baseline
    g, passed = guard(SYNTHETIC, checkers("tight"), render=FakeRender(redraw=255), redraw=lambda _t: torch.ones(2))
    g.apply(frames, frames.clone(), [(0, record())], [3])
    margin = passed.tracks[0].summary("s")["privacy"]["min_margin"]["pixel/tight"]
    assert margin["operating_point"] == pytest.approx(1.5) and set(margin) == {"operating_point", "baseline"}


# --- the checkers and the recognisers ------------------------------------------------------------

class Named:
    """An identity model that is only its name (what checkers_for and run_recognisers look at)."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_checkers_for_each_model_once_at_its_operating_point_or_the_override() -> None:
    from reenact.pipeline.privacy import checkers_for

    models = [Named("dlib-resnet"), Named("dlib-resnet"), Named("arcface-onnx")]
    got = checkers_for(models)  # type: ignore[arg-type]
    assert [c.name for c in got] == ["dlib-resnet/tight", "dlib-resnet/loose", "arcface-onnx/tight",
                                     "arcface-onnx/loose"]
    cal = OPERATING_POINTS["arcface-onnx"]["loose"]
    assert got[3].describe() == {"model": "arcface-onnx", "chip": "loose", "operating_point": cal.threshold,
                                 "source": cal.provenance, "false_match_rate": cal.false_match_rate,
                                 "allowance": cal.allowance}
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].threshold = 1.0  # type: ignore[misc]  # what the report describes is what checks
    over = checkers_for(models[:1], 0.25)  # type: ignore[arg-type]
    assert [c.describe() for c in over] == [
        {"model": "dlib-resnet", "chip": chip, "operating_point": 0.25, "source": "deidentify.privacy_threshold",
         "false_match_rate": None, "allowance": OPERATING_POINTS["dlib-resnet"][chip].allowance}
        for chip in ("tight", "loose")]


def test_every_run_checks_with_dlib_and_its_recogniser(monkeypatch: pytest.MonkeyPatch) -> None:
    import reenact.pipeline.privacy.checkers as privacy

    dlib = Named("dlib-resnet")
    monkeypatch.setattr(privacy, "offline_dlib", lambda: dlib)
    code_model, arcface = Named("mapper-code"), Named("arcface-onnx")
    assert privacy.run_recognisers(code_model, arcface) == [arcface, dlib]  # type: ignore[arg-type]
    assert privacy.run_recognisers(arcface, None) == [arcface, dlib]  # type: ignore[arg-type]
    own = Named("dlib-resnet")
    assert privacy.run_recognisers(own, None) == [own]  # type: ignore[arg-type]
    assert privacy.run_recognisers(code_model, own) == [own]  # type: ignore[arg-type]


def test_dlib_is_loaded_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import reenact.pipeline.privacy.checkers as privacy

    made: list[Named] = []
    monkeypatch.setattr(privacy, "DlibFaceEncoder", lambda: made.append(Named("dlib-resnet")) or made[-1])
    privacy.offline_dlib.cache_clear()
    try:
        assert privacy.offline_dlib() is privacy.offline_dlib() and len(made) == 1
    finally:
        privacy.offline_dlib.cache_clear()


# --- the guard's own checks ----------------------------------------------------------------------

def test_guard_refuses_ladders_that_could_leave_a_face() -> None:
    with pytest.raises(ShapeError, match="at least one checker"):
        PrivacyGuard([], ("solid",), RunReport("s"))
    with pytest.raises(ShapeError, match="end with solid"):
        PrivacyGuard(checkers("tight"), ("pixelate",), RunReport("s"))
    with pytest.raises(ShapeError, match="render"):
        PrivacyGuard(checkers("tight"), SYNTHETIC, RunReport("s"))
    with pytest.raises(ShapeError, match="mosaic"):
        ladder_for("mosaic")
    g, report = guard(ladder_for("blur"), checkers("tight"))
    assert report.privacy is not None and report.privacy["ladder"] == ["blur", "fill", "head_blur", "solid"]
    frames = frame_with_face()
    with pytest.raises(ShapeError):
        g.apply(frames, frames[:, :32].clone(), [], [0])
    with pytest.raises(ShapeError):
        g.apply(frames.float(), frames.float(), [], [0])
    with pytest.raises(ShapeError):
        g.apply(frames[0], frames[0].clone(), [], [0])
    with pytest.raises(ShapeError, match="frame indices"):
        g.apply(frames, frames.clone(), [], [0, 1])
    out = frames.clone()
    assert g.apply(frames, out, [], [0]) is out  # no faces: the frames as they were


def _points_with_eyes(apart: float) -> np.ndarray:
    """Five points whose centroid is the face centre, the eyes ``apart`` px apart."""
    return np.array([[32 - apart / 2, 28], [32 + apart / 2, 28], [32, 33], [28, 38], [36, 38]], np.float32)


@pytest.mark.parametrize(("points", "rung"), [
    (_points_with_eyes(1.0), "pixelate"),    # eyes 1 px apart: a chip can still be aligned
    (_points_with_eyes(0.5), "solid"),       # closer: nothing to check it with
    (np.full((5, 2), np.nan, np.float32), "solid"),
    (np.vstack([_points_with_eyes(10.0), [[32, 33]]]).astype(np.float32), "solid"),  # not five points
])
def test_faces_without_usable_points_are_filled_solid(points: np.ndarray, rung: str) -> None:
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(ladder_for("pixelate"), checkers("tight"))
    g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method pixelate", points=points))], [0])
    assert report.tracks[0].rungs == {rung: 1}
    reason = report.tracks[0].privacy_frames[0][3]
    assert reason == "redacted by --method pixelate"  # the record's own reason is what is reported


def test_untracked_face_without_points_reports_why() -> None:
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(ladder_for("pixelate"), checkers("tight"))
    g.apply(frames, frames.clone(), [(0, FaceRecord(-1, BOX.copy(), np.zeros((5, 2), np.float32)))], [0])
    assert report.untracked_rungs == {"solid": 1} and report.counts["faces_blurred"] == 1


class CountingEncoder(PixelEncoder):
    """PixelEncoder that logs which frames tensor it embedded, and can fail on some faces."""

    def __init__(self, nan: bool = False, fail_right_of: float | None = None) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, int]] = []
        self.nan, self.fail_right_of = nan, fail_right_of

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self.seen.append((frames, int(frame_index.shape[0])))
        if self.fail_right_of is not None and float(points[..., 0].max()) > self.fail_right_of:
            raise RuntimeError("degenerate face")
        codes = super().embed(frames, frame_index, points)
        return torch.full_like(codes, float("nan")) if self.nan else codes


def _originals_embedded(enc: CountingEncoder, frames: torch.Tensor) -> int:
    return sum(n for f, n in enc.seen if f is frames)


def test_a_tracks_original_is_embedded_again_every_8_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "RECHECK_FRAMES", 1)  # no check carried: every face is measured
    enc = CountingEncoder()
    g, _report = guard(ladder_for("pixelate"), [Checker(enc, "tight", 0.5, "test")])  # type: ignore[arg-type]
    embedded = []
    for index in (0, 1, 7, 8, 15, 16, 15, 3, 4):
        frames = frame_with_face(background=255, centre=0)
        g.apply(frames, frames.clone(), [(0, record(failed="redacted"))], [index])
        embedded.append(_originals_embedded(enc, frames))
    # refreshed at 0, 8 and 16 (7 and 15 still use the earlier one); going back (15, 3) refreshes too
    assert embedded == [1, 0, 0, 1, 0, 1, 1, 1, 0]


def test_untracked_originals_are_never_reused() -> None:
    enc = CountingEncoder()
    g, report = guard(ladder_for("pixelate"), [Checker(enc, "tight", 0.5, "test")])  # type: ignore[arg-type]
    first = frame_with_face(background=255, centre=0)
    g.apply(first, first.clone(), [(0, FaceRecord(-1, BOX.copy(), POINTS.copy(), failed="untracked"))], [0])
    # the next frame's untracked face is someone else: the centre the blur keeps is their own
    second = frame_with_face(background=0, centre=0)
    g.apply(second, second.clone(), [(0, FaceRecord(-1, BOX.copy(), POINTS.copy(), failed="untracked"))], [1])
    assert _originals_embedded(enc, second) == 1
    assert report.untracked_rungs == {"pixelate": 1, "fill": 1}


def test_an_original_that_embeds_to_nan_fails_closed() -> None:
    enc = CountingEncoder(nan=True)
    g, report = guard(ladder_for("pixelate"), [Checker(enc, "tight", 0.5, "test")])  # type: ignore[arg-type]
    frames = frame_with_face(background=255, centre=0)
    out = g.apply(frames, frames.clone(), [(0, record(failed="redacted"))], [0])
    assert report.tracks[0].rungs == {"solid": 1} and report.tracks[0].failed_checks == 1
    assert report.tracks[0].privacy_frames[0][3] == "the output face could not be checked"
    assert report.tracks[0].max_similarity == {}  # a solid face reports no similarity
    assert int(out[0, CY, CX].sum()) == 0


def test_one_face_that_cannot_be_embedded_is_filled_alone(caplog: pytest.LogCaptureFixture) -> None:
    frames = torch.cat([frame_with_face(background=255, centre=0)] * 2)
    enc = CountingEncoder(fail_right_of=60.0)
    g, report = guard(ladder_for("pixelate"), [Checker(enc, "tight", 0.5, "test")])  # type: ignore[arg-type]
    bad = FaceRecord(1, BOX + np.float32(28), POINTS + np.float32(28), failed="redacted")
    with caplog.at_level("WARNING", logger="reenact.pipeline.privacy"):
        g.apply(frames, frames.clone(), [(0, record(failed="redacted")), (1, bad)], [0, 1])
    assert report.tracks[0].rungs == {"pixelate": 1} and report.tracks[0].failed_checks == 0
    assert report.tracks[1].rungs == {"solid": 1} and report.tracks[1].failed_checks == 1
    assert report.tracks[1].privacy_frames[0][3] == "the original face could not be embedded"
    assert "original faces could not be embedded" in caplog.text


def test_two_faces_in_one_frame_are_both_redacted() -> None:
    frame = torch.randint(0, 256, (1, H, W, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    g, report = guard(ladder_for("solid"), checkers("tight"))
    other = FaceRecord(1, np.array([44.0, 44.0, 60.0, 60.0], np.float32), POINTS + np.float32(20), failed="x")
    out = g.apply(frame, frame.clone(), [(0, record(failed="x")), (0, other)], [0])
    for box, points in ((BOX, POINTS), (other.box, other.points)):
        region = face_regions(torch.from_numpy(box)[None], torch.from_numpy(points)[None])[0]
        cx, cy = int(region[0]), int(region[1])
        assert int(out[0, cy - 2 : cy + 3, cx - 2 : cx + 3].max()) == 0  # each face black
    assert report.counts["faces_blurred"] == 2


def test_a_face_the_blender_refuses_on_a_redraw_goes_to_the_box_rung() -> None:
    frames = frame_with_face(background=255, centre=0)

    class Refusing(FakeRender):
        def __call__(self, frames, out, faces, codes, grown):  # noqa: ANN001, ANN204
            self.calls.append("grown_mask" if grown else "redraw")
            for _j, face in faces:
                face.failed = "generated face refused by the blender"
            return out

    render = Refusing()
    g, report = guard(SYNTHETIC, checkers("tight"), render=render, redraw=lambda _t: torch.ones(2))
    g.apply(frames, frames.clone(), [(0, record())], [0])
    assert render.calls == ["redraw"]  # not the grown mask: the blender refused this face
    assert report.tracks[0].rungs == {"blur": 1}
    assert report.tracks[0].privacy_frames[0][3] == "generated face refused by the blender"


def test_no_identity_left_to_redraw_moves_on_to_the_grown_mask() -> None:
    frames = frame_with_face(background=255, centre=0)
    render = FakeRender(grown=255)
    g, report = guard(SYNTHETIC, checkers("tight"), render=render, redraw=lambda _t: None, redraws=2)
    g.apply(frames, frames.clone(), [(0, record())], [0])
    assert render.calls == ["grown_mask"]
    assert report.tracks[0].rungs == {"grown_mask": 1}
    assert g.redrawn == {0: 2}


def test_a_guard_without_redraws_never_draws() -> None:
    frames = frame_with_face(background=255, centre=0)
    render, draws = FakeRender(grown=255), []
    report = RunReport("similarity_to_original")
    g = PrivacyGuard(checkers("tight"), SYNTHETIC, report, render=render, redraw=lambda t: draws.append(t))
    g.apply(frames, frames.clone(), [(0, record())], [0])
    assert draws == [] and render.calls == ["grown_mask"]
    assert report.tracks[0].rungs == {"grown_mask": 1}


def test_the_grown_mask_renders_the_faces_own_latent_not_the_failed_redraw() -> None:
    frames = frame_with_face(background=0, centre=0)
    codes_seen: list[list[torch.Tensor | None]] = []

    class Logging(FakeRender):
        def __call__(self, frames, out, faces, codes, grown):  # noqa: ANN001, ANN204
            codes_seen.append(list(codes))
            return super().__call__(frames, out, faces, codes, grown)

    drawn = torch.tensor([0.6, 0.8])
    g, report = guard(SYNTHETIC, checkers("tight"), render=Logging(redraw=0, grown=255), redraw=lambda _t: drawn)
    g.apply(frames, frames.clone(), [(0, record())], [0])
    assert codes_seen[0][0] is drawn and codes_seen[1] == [None]
    assert report.tracks[0].rungs == {"grown_mask": 1} and 0 not in g.codes


def test_an_output_check_that_raises_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    frames = frame_with_face(background=255, centre=0)

    class OutputFails(PixelEncoder):
        def embed(self, f: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            if f is not frames:
                raise RuntimeError("recogniser crashed on the output")
            return super().embed(f, index, points)

    g, report = guard(ladder_for("pixelate"), [Checker(OutputFails(), "tight", 0.5, "test")])  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="reenact.pipeline.privacy"):
        out = g.apply(frames, frames.clone(), [(0, record(failed="redacted"))], [0])
    assert report.tracks[0].rungs == {"solid": 1} and report.tracks[0].failed_checks == 1
    assert report.tracks[0].privacy_frames[0][3] == "the output face could not be checked"
    assert int(out[0, CY, CX].sum()) == 0
    assert "privacy check failed" in caplog.text and "crashed on the output" in caplog.text


def test_the_check_rule_at_the_operating_point_and_against_the_baseline() -> None:
    enc = PixelEncoder()
    c = Checker(enc, "tight", 0.5, "test", allowance=0.02)  # type: ignore[arg-type]
    assert not passes({c.name: 0.5}, [c])  # at the operating point: the attacker links it
    assert passes({c.name: 0.5 - 1e-6}, [c])
    # context alone below the operating point: the operating point decides
    assert not passes({c.name: 0.5}, [c], {c.name: 0.3})
    # context alone above it: no more similar than the baseline plus the allowance
    assert passes({c.name: 0.71}, [c], {c.name: 0.7})
    assert not passes({c.name: 0.72}, [c], {c.name: 0.7})
    assert not passes({c.name: 0.6}, [c], {c.name: float("nan")})  # no usable baseline: the operating point
    # the calibrated recognisers allow nothing above the baseline: below it, or not private
    for point in (p for chips in OPERATING_POINTS.values() for p in chips.values()):
        assert point.allowance == 0.0
    strict = Checker(enc, "tight", 0.5, "test")  # type: ignore[arg-type]
    assert not passes({strict.name: 0.7005}, [strict], {strict.name: 0.7})
    assert passes({strict.name: 0.6995}, [strict], {strict.name: 0.7})
    # the fill (the baseline itself) passes by construction where context alone links, and is
    # measured against the operating point where it does not
    assert passes({strict.name: 0.71}, [strict], {strict.name: 0.7}, is_baseline=True)
    assert headroom({strict.name: 0.71}, [strict], {strict.name: 0.7}, is_baseline=True) == math.inf
    assert not passes({strict.name: 0.55}, [strict], {strict.name: 0.45}, is_baseline=True)
    assert passes({strict.name: 0.46}, [strict], {strict.name: 0.45}, is_baseline=True)
    assert headroom({strict.name: 0.46}, [strict], {strict.name: 0.45}, is_baseline=True) == pytest.approx(0.04)
    assert not passes({strict.name: 0.6}, [strict], {strict.name: float("nan")}, is_baseline=True)
    assert passes({strict.name: 0.51}, [strict], {strict.name: 0.5}, is_baseline=True)  # context at the point links
    # ... within FILL_TOLERANCE of its baseline: a fill further off is measured like any rung
    tol = checkers_module.FILL_TOLERANCE
    assert passes({strict.name: 0.7 + tol}, [strict], {strict.name: 0.7}, is_baseline=True)
    assert not passes({strict.name: 0.7 + tol + 1e-3}, [strict], {strict.name: 0.7}, is_baseline=True)
    assert headroom({strict.name: 0.7 + tol + 1e-3}, [strict], {strict.name: 0.7}, is_baseline=True) < 0


def test_a_face_whose_context_alone_links_passes_when_no_more_similar_than_that() -> None:
    """The fake sees one pixel on the forehead (inside the face's region) with its loose chip:
    with the face filled flat that pixel changes, so the baseline tells how much the context
    alone says; a face that keeps the forehead fails, the face-shaped blur passes."""

    class Forehead(PixelEncoder):
        def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
            return _angle_code((crops[:, 0, 3, 8] + 1) * 127.5)

    frames = frame_with_face(background=0, centre=0)
    frames[0, 18:24, 29:37, 0] = 255  # a bright forehead
    out = paint_centre(frames, 255)  # the swapped face: centre changed, forehead kept
    # the allowance of dlib's loose chip: this 24 px face is blurred with the sigma of a
    # SMALL_FACE-wide one, which leaves about the flat baseline (a shade over it on this chip)
    chk = [Checker(Forehead(), chip, 0.5, "test", allowance=0.0261) for chip in ("tight", "loose")]  # type: ignore[arg-type]
    g, report = guard(SYNTHETIC, chk, render=FakeRender(redraw=255, grown=255), redraw=lambda _t: torch.ones(2))
    result = g.apply(frames, out, [(0, record())], [0])
    assert report.tracks[0].rungs == {"blur": 1}, "redacted by the face's shape, not its box or solid"
    assert float(result[0, 18:24, 29:37, 0].float().mean()) < 200  # the forehead is blurred


def test_untracked_faces_start_on_the_box_rung_whatever_earlier_ones_reached() -> None:
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(ladder_for("pixelate"), checkers("tight"))
    no_points = FaceRecord(-1, BOX.copy(), np.zeros((5, 2), np.float32), failed="untracked")
    g.apply(frames, frames.clone(), [(0, no_points)], [0])
    g.apply(frames, frames.clone(), [(0, FaceRecord(-1, BOX.copy(), POINTS.copy(), failed="untracked"))], [1])
    assert report.untracked_rungs == {"solid": 1, "pixelate": 1}


def test_a_track_that_passes_on_its_synthetic_face_stays_there() -> None:
    frames = frame_with_face(background=255, centre=0)
    out = paint_centre(frames, 255)
    render = FakeRender(redraw=0)
    g, report = guard(SYNTHETIC, checkers("tight"), render=render, redraw=lambda _t: torch.ones(2))
    for index in (0, 1):
        g.apply(frames, out, [(0, record())], [index])
    assert report.tracks[0].rungs == {"synthetic": 2} and render.calls == []
    assert g.track_rung == {0: 0}


def test_the_guard_leaves_the_report_to_its_caller() -> None:
    report = RunReport("s")
    g = PrivacyGuard(checkers("tight"), ladder_for("blur"), report)
    assert report.privacy is None, "building a guard writes nothing into the report"
    assert g.describe()["ladder"] == ["blur", "fill", "head_blur", "solid"] and len(g.describe()["checkers"]) == 1  # type: ignore[arg-type]


def test_the_report_keeps_every_draw_of_a_track() -> None:
    from reenact.pipeline.report import TrackReport

    track = TrackReport(identity={"draws": 1, "code": [0.1], "similarity_to_original": 0.2, "failed": None})
    track.add_redraw({"draws": 3, "code": [0.3], "similarity_to_original": 0.1, "failed": None}, found=True)
    track.add_redraw({"draws": 5, "code": [0.3], "similarity_to_original": 0.1, "failed": None}, found=False)
    public, audit = track.summary("similarity_to_original"), track.summary("similarity_to_original", audit=True)
    assert public["synthetic_identity"]["draws"] == 1 and "code" not in public["synthetic_identity"]
    assert [r["draws"] for r in public["redraws"]] == [3, 5] and [r["found"] for r in public["redraws"]] == [True, False]
    assert all("code" not in r for r in public["redraws"]), "identity codes only in the audit"
    assert [r["code"] for r in audit["redraws"]] == [[0.3], [0.3]]


def test_each_face_of_a_batch_is_compared_with_its_own_original() -> None:
    """Two tracks checked in one call: one whose blur changes what the recogniser sees, one
    (a uniform frame) whose blur changes nothing. The second must fail its blur and end on
    fill (its context alone), whatever the first one's output looks like."""
    frames = torch.cat([frame_with_face(background=255, centre=0), frame_with_face(background=0, centre=0)])
    g, report = guard(ladder_for("blur"), checkers("tight"))
    faces = [(0, record(0, failed="redacted by --method blur")), (1, record(1, failed="redacted by --method blur"))]
    g.apply(frames, frames.clone(), faces, [0, 0])
    assert report.tracks[0].rungs == {"blur": 1}
    assert report.tracks[1].rungs == {"fill": 1}


def test_a_fill_without_a_baseline_climbs_through_the_head_box_to_solid(monkeypatch: pytest.MonkeyPatch) -> None:
    """No same-context baseline can be made: the fill is judged at the operating point alone,
    and a face it leaves linked (a uniform frame: nothing changes what the fake sees) goes on
    to the head-box blur, then to the black head box."""
    def no_windows(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("no window")

    monkeypatch.setattr(guard_module, "flat_windows", no_windows)
    shapes: list[tuple[str, str]] = []

    def logged(frame_, regions, method, shape="ellipse", source=None):  # noqa: ANN001, ANN202
        shapes.append((method, shape))
        redact.redact_faces_(frame_, regions, method, shape, source)

    monkeypatch.setattr(guard_module, "redact_faces_", logged)
    frames = frame_with_face(background=0, centre=0)
    g, report = guard(ladder_for("blur"), checkers("tight"))
    g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method blur"))], [0])
    assert report.tracks[0].rungs == {"solid": 1}
    assert shapes == [("blur", "ellipse"), ("flat", "ellipse"), ("blur", "box"), ("solid", "box")]


def test_a_black_oval_where_only_the_context_links_stays_an_oval(monkeypatch: pytest.MonkeyPatch) -> None:
    """--method solid: where the face's context alone links (a dark face on a dark frame: the
    flat baseline is as close to the original as the face), the black oval leaves nothing of
    the face, so it passes by construction, as the fill does: no black head box, whose corners
    would black out the picture around the head. Only on faces at least BLACK_OVAL_MIN_WIDTH
    wide: this 24 px face's oval is measured like any rung, and climbs."""
    frames = frame_with_face(background=0, centre=0)
    frames[..., 1] = 200
    g, report = guard(ladder_for("solid"), checkers("tight"))
    g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method solid"))], [0])
    assert report.tracks[0].rungs == {"solid": 1}
    width = 2.0 * float(face_regions(torch.from_numpy(BOX)[None], torch.from_numpy(POINTS)[None])[0, 2])
    monkeypatch.setattr(guard_module, "BLACK_OVAL_MIN_WIDTH", width)  # as wide as the minimum: by construction
    frames[..., 1] = 200  # green the fake does not see: shows which pixels the redaction blacked
    g, report = guard(ladder_for("solid"), checkers("tight"))
    out = g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method solid"))], [0])
    assert report.tracks[0].rungs == {"face_solid": 1}
    left, top, right, bottom = head(BOX)
    assert int(out[0, CY, CX].max()) == 0 and torch.equal(out[0, top, left], frames[0, top, left])
    # a black oval measured further above that baseline than the tolerance does climb: the
    # region's mean red (about 50) links; the black centre is closer to the original still
    monkeypatch.setattr(guard_module, "BLACK_OVAL_MIN_WIDTH", 0)
    frames = frame_with_face(background=50, centre=0)
    g, report = guard(ladder_for("solid"), checkers("tight"))
    g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method solid"))], [0])
    assert report.tracks[0].rungs == {"solid": 1}


def test_a_black_oval_that_keeps_the_face_linked_gets_the_black_head_box() -> None:
    """--method solid: a dark face on a bright frame stays as dark under the black oval (the
    one pixel the fake sees does not change) while its context alone (the region's bright
    mean) does not link: the face goes on to the black head box."""
    frames = frame_with_face(background=255, centre=0)
    g, report = guard(ladder_for("solid"), checkers("tight"))
    out = g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method solid"))], [0])
    assert report.tracks[0].rungs == {"solid": 1}
    left, top, right, bottom = head(BOX)
    assert int(out[0, top:bottom, left:right].max()) == 0
    # a face the black oval does change passes on it, and keeps the head box's corners
    frames = frame_with_face(background=255, centre=128)
    g, report = guard(ladder_for("solid"), checkers("tight"))
    out = g.apply(frames, frames.clone(), [(0, record(failed="redacted by --method solid"))], [0])
    assert report.tracks[0].rungs == {"face_solid": 1}
    assert int(out[0, CY, CX].max()) == 0 and torch.equal(out[0, top, left], frames[0, top, left])
