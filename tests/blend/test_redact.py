"""Face-shaped redaction (reenact.blend.redact): region geometry, conventions, what changes
and what stays, and that a recogniser can no longer link the face."""

from __future__ import annotations

import math

import pytest
import torch

from reenact.blend import redact as R
from reenact.errors import ShapeError

pytestmark = pytest.mark.privacy  # bench/mutation.py runs these per mutant

UPRIGHT = torch.tensor([[[80.0, 90.0], [120.0, 90.0], [100.0, 110.0], [85.0, 130.0], [115.0, 130.0]]])
BOX = torch.tensor([[70.0, 70.0, 130.0, 140.0]])


def _textured(h: int = 200, w: int = 240, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)


def test_regions_from_points_are_upright_centred_below_the_eyes_and_cover_the_box() -> None:
    reg = R.face_regions(BOX, UPRIGHT)
    assert reg.shape == (1, 5) and reg.dtype == torch.float32
    cx, cy, across, along, tilt = reg[0].tolist()
    assert abs(tilt) < 1e-6 and abs(cx - 100.0) < 1e-4
    assert 90.0 < cy < 110.0  # between the eyes and the mouth, nearer the eyes
    # covers the detector box (brow to chin, cheek to cheek) with room for ears and hairline
    assert across >= 0.6 * 60 and along >= 0.7 * 70
    assert along * 2 < 3.5 * 40  # but not the shoulders: about 3.3 eye-to-mouth distances tall


def test_region_tilt_follows_the_eye_line() -> None:
    angle = math.radians(30)
    c, s = math.cos(angle), math.sin(angle)
    centre = torch.tensor([100.0, 100.0])
    rot = torch.tensor([[c, -s], [s, c]])
    pts = (UPRIGHT[0] - centre) @ rot.T + centre
    reg = R.face_regions(BOX, pts[None])
    assert abs(float(reg[0, 4]) - angle) < 1e-4
    # the same ellipse size as upright (a rotation changes nothing else)
    tiny = torch.tensor([[99.0, 99.0, 101.0, 101.0]])  # a box inside the face: the points decide the size
    up = R.face_regions(tiny, UPRIGHT)
    rotated = R.face_regions(tiny, pts[None])
    assert torch.allclose(up[0, 2:4], rotated[0, 2:4], atol=1e-3)


def test_a_face_in_profile_keeps_its_head_width() -> None:
    profile = UPRIGHT.clone()
    profile[0, :, 0] = 100.0 + (profile[0, :, 0] - 100.0) * 0.1  # eyes 4 px apart
    reg = R.face_regions(torch.tensor([[99.0, 99.0, 101.0, 101.0]]), profile)
    assert float(reg[0, 2]) >= R.MIN_ASPECT * float(reg[0, 3]) - 1e-4


def _inside(region: torch.Tensor, x0: int, y0: int, x1: int, y1: int) -> float:
    """Share of the pixels of [x0,x1) x [y0,y1) inside the ellipse itself (no feather)."""
    return float((R.region_mask(region, x0, y0, y1 - y0, x1 - x0, feather=0.0) >= 0.999).float().mean())


# a face turned to the image's right, as a CenterFace run placed it on a dim 720p clip: the eyes,
# nose and mouth sit in the box's right part (eye distance 21 px in a 65 px box); the box's left
# part is the far cheek and the ear
TURNED_BOX = torch.tensor([[0.0, 0.0, 65.0, 83.0]])
TURNED = torch.tensor([[[35.0, 30.0], [56.0, 28.0], [56.0, 46.0], [38.0, 62.0], [54.0, 61.0]]])


def test_a_turned_face_keeps_its_far_cheek_and_ear_inside_the_region() -> None:
    region = R.face_regions(TURNED_BOX, TURNED)[0]
    # the far third of the box (cheek and ear): the points alone centre the ellipse on the nose
    # and leave a third of it out (0.64 covered before the region spanned the box)
    assert _inside(region, 0, 0, 22, 83) >= 0.9
    assert _inside(region, 0, 0, 65, 83) >= 0.95
    # and it stays head-sized: no wider than the larger of the two estimates by a quarter
    wider = max(float(R.face_regions(TURNED_BOX, None)[0, 2]), float(R.face_regions(TURNED_BOX, TURNED)[0, 2]))
    assert float(region[2]) <= 1.25 * wider


def test_points_that_are_not_the_boxs_face_are_not_used() -> None:
    far = UPRIGHT + torch.tensor([300.0, 0.0])  # another face's points (or a wild guess)
    assert torch.equal(R.face_regions(BOX, far), R.face_regions(BOX, None))


def test_unusable_points_fall_back_to_the_box() -> None:
    bad = torch.full((1, 5, 2), float("nan"))
    from_box = R.face_regions(BOX, None)
    assert torch.equal(R.face_regions(BOX, bad), from_box)
    assert abs(float(from_box[0, 0]) - 100.0) < 1e-4 and float(from_box[0, 4]) == 0.0


def test_head_box_is_the_ellipse_bounds_clipped_to_the_frame() -> None:
    reg = torch.tensor([[50.0, 40.0, 20.0, 30.0, 0.0], [5.0, 5.0, 20.0, 30.0, math.pi / 2], [-100.0, 5.0, 5.0, 5.0, 0.0]])
    boxes = R.head_boxes(reg, 64, 48)
    assert boxes.dtype == torch.long and boxes.shape == (3, 4)
    assert boxes[0].tolist() == [30, 10, 64, 48]  # clipped right and bottom
    assert boxes[1].tolist()[:2] == [0, 0] and boxes[1, 2] <= 5 + 30 + 1  # turned: wide by the long axis
    assert boxes[2, 2] <= boxes[2, 0]  # outside the frame: empty


@pytest.mark.parametrize("method", R.METHODS)
@pytest.mark.parametrize("shape", R.SHAPES)
def test_outside_the_window_nothing_changes_and_the_input_is_kept(method: str, shape: str) -> None:
    frame = _textured()
    before = frame.clone()
    reg = R.face_regions(BOX, UPRIGHT)
    out = R.redact_faces(frame, reg, method, shape)
    assert torch.equal(frame, before)  # not modified
    assert out.dtype == torch.uint8 and out.shape == frame.shape
    grown = reg.clone()
    grown[:, 2:4] *= 1 + R.FEATHER
    left, top, right, bottom = R.head_boxes(grown if shape == "ellipse" else reg, 240, 200)[0].tolist()
    outside = torch.ones(200, 240, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert torch.equal(out[outside], frame[outside])
    # the face itself changed: eyes, nose and mouth all differ
    for x, y in UPRIGHT[0].round().long().tolist():
        assert (out[y, x].int() - frame[y, x].int()).abs().max() > 0


def test_the_ellipse_keeps_the_head_box_corners() -> None:
    """Face-shaped: the corners of the head box (background, shoulders) stay as they were."""
    frame = _textured()
    reg = R.face_regions(BOX, UPRIGHT)
    out = R.redact_faces(frame, reg, "blur")
    left, top, right, bottom = R.head_boxes(reg, 240, 200)[0].tolist()
    for y, x in ((top, left), (top, right - 1), (bottom - 1, left), (bottom - 1, right - 1)):
        assert torch.equal(out[y, x], frame[y, x])
    inside = out[95:125, 85:115].float()
    assert inside.std() < 0.25 * frame[95:125, 85:115].float().std()  # noise averaged away


def _residual_detail(scale: float, step_px: int | None = None) -> float:
    """Mean difference between points ``step_px`` apart (default: a tenth of the face) inside
    a blurred random face 24 x ``scale`` px wide, drawn at ``scale`` px per texture cell."""
    g = torch.Generator().manual_seed(1)
    small = torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8)
    frame = small.repeat_interleave(int(scale), 0).repeat_interleave(int(scale), 1).contiguous()
    reg = torch.tensor([[20.0 * scale, 20.0 * scale, 12.0 * scale, 15.0 * scale, 0.0]])
    out = R.redact_faces(frame, reg, "blur").float()
    face = out[int(12 * scale) : int(28 * scale), int(12 * scale) : int(28 * scale)]
    step = step_px or int(2.4 * scale)
    return float((face[step:] - face[:-step]).abs().mean())


def test_blur_strength_grows_with_the_face() -> None:
    """Above SMALL_FACE the same face at twice the size is blurred twice as far: what is left
    of its detail, measured at the face's own scale, is the same."""
    assert 24 * 8 >= R.SMALL_FACE
    one, two = _residual_detail(8), _residual_detail(16)
    assert abs(one - two) < 0.35 * max(one, two)


def test_small_faces_are_blurred_as_far_in_pixels_as_one_at_the_limit() -> None:
    """A face under SMALL_FACE px is blurred as far, in pixels, as a SMALL_FACE-wide one (a
    recogniser enlarges a small face into its chip, so a blur that only scales with the face
    leaves it what it uses): at a fixed pixel step, as little detail is left as there, and
    much less detail is left at the face's own scale than a large face keeps."""
    small = 2.0  # a 48 px wide face
    assert 24 * small < R.SMALL_FACE / 2
    assert R.strength_width(24 * small) == R.SMALL_FACE and R.strength_width(2 * R.SMALL_FACE) == 2 * R.SMALL_FACE
    assert _residual_detail(small) < 0.5 * _residual_detail(12)


def test_pixelate_blocks_follow_the_face_size() -> None:
    frame = _textured(300, 300)
    reg = torch.tensor([[150.0, 150.0, 110.0, 130.0, 0.0]])  # wider than SMALL_FACE: blocks of its own width
    assert 2 * 110 >= R.SMALL_FACE
    out = R.redact_faces(frame, reg, "pixelate", "box")
    left, top, right, bottom = R.head_boxes(reg, 300, 300)[0].tolist()
    row = out[150, left:right].int()
    changes = int((row[1:] != row[:-1]).any(dim=1).sum())
    expected = (right - left) / (2 * 110 / R.PIXELATE_CELLS)
    assert abs(changes + 1 - expected) <= 1.5


def test_solid_box_is_flat_and_no_wider_than_the_head() -> None:
    frame = _textured()
    reg = R.face_regions(BOX, UPRIGHT)
    out = R.redact_faces(frame, reg, "solid", "box")
    left, top, right, bottom = R.head_boxes(reg, 240, 200)[0].tolist()
    assert bool((out[top:bottom, left:right] == R.SOLID_LEVEL).all())
    assert right - left <= 2 * float(reg[0, 2]) + 2


def test_bad_input_names_the_problem() -> None:
    reg = R.face_regions(BOX, UPRIGHT)
    with pytest.raises(ShapeError, match="uint8"):
        R.redact_faces(_textured().float(), reg, "blur")
    with pytest.raises(ShapeError, match="unknown redaction"):
        R.redact_faces(_textured(), reg, "smudge")
    with pytest.raises(ShapeError, match="shape"):
        R.redact_faces(_textured(), reg, "blur", "circle")
    with pytest.raises(ShapeError, match="regions"):
        R.redact_faces(_textured(), reg[:, :4], "blur")


def test_no_faces_and_faces_outside_the_frame_are_fine() -> None:
    frame = _textured()
    assert torch.equal(R.redact_faces(frame, torch.zeros((0, 5)), "blur"), frame)
    far = torch.tensor([[1000.0, 1000.0, 10.0, 10.0, 0.0]])
    assert torch.equal(R.redact_faces(frame, far, "pixelate"), frame)
    edge = torch.tensor([[2.0, 2.0, 30.0, 40.0, 0.3]])  # a face cut by the frame's corner
    out = R.redact_faces(frame, edge, "blur")
    assert not torch.equal(out[:10, :10], frame[:10, :10])


def test_flat_takes_its_colour_from_the_source_frame() -> None:
    """The privacy ladder's fill paints the original's mean colour, not that of what an earlier
    rung pasted on the face: it is then the same-context baseline itself."""
    original = torch.full((240, 200, 3), 90, dtype=torch.uint8)
    pasted = original.clone()
    pasted[60:180, 50:150] = 250  # a rendered face over the region
    reg = R.face_regions(BOX, UPRIGHT)
    out = pasted.clone()
    R.redact_faces_(out, reg, "flat", source=original)
    cx, cy = (int(v) for v in reg[0, :2])
    assert out[cy, cx].tolist() == [90, 90, 90]
    assert R.redact_faces(pasted, reg, "flat")[cy, cx, 0] > 150  # without a source: its own mean
    with pytest.raises(ShapeError, match="source"):
        R.redact_faces_(out, reg, "flat", source=original[:100])


def test_redact_in_place_checks_its_inputs() -> None:
    reg = R.face_regions(BOX, UPRIGHT)
    frame = _textured()
    with pytest.raises(ShapeError, match="uint8"):
        R.redact_faces_(frame.float(), reg, "blur")
    with pytest.raises(ShapeError, match="regions"):
        R.redact_faces_(frame, reg[:, :4], "blur")
    with pytest.raises(ShapeError, match="uint8"):
        R.redact_faces_(frame, reg, "flat", source=frame.float())


def test_the_feathered_edge_is_redacted_on_both_axes() -> None:
    """The feather reaches past the ellipse (FEATHER of its smaller semi-axis): the window
    redacted is grown on both axes, so the band just outside the ellipse changes too."""
    frame = _textured(240, 240)
    cx, cy, a, b = 120.0, 120.0, 40.0, 50.0
    out = R.redact_faces(frame, torch.tensor([[cx, cy, a, b, 0.0]]), "pixelate")
    band = R.FEATHER * min(a, b)
    assert band > 4
    for x, y in ((cx + a + band / 3, cy), (cx - a - band / 3, cy), (cx, cy + b + band / 3), (cx, cy - b - band / 3)):
        assert not torch.equal(out[int(y), int(x)], frame[int(y), int(x)]), (x, y)
    assert torch.equal(out[int(cy), int(cx + a + band + 2)], frame[int(cy), int(cx + a + band + 2)])


def test_regions_past_the_frame_edge_are_redacted_where_they_reach_in() -> None:
    """A region wholly outside the frame changes nothing (and raises nothing); one whose head
    box reaches a single pixel into the frame redacts that column (or row)."""
    frame = _textured(100, 100)
    for method in R.METHODS:
        for shape in R.SHAPES:
            for reg in ([[-60.0, 50.0, 20.0, 25.0, 0.0]], [[50.0, 160.0, 20.0, 25.0, 0.0]]):
                assert torch.equal(R.redact_faces(frame, torch.tensor(reg), method, shape), frame)
    left_edge = R.redact_faces(frame, torch.tensor([[-20.5, 50.0, 20.0, 25.0, 0.0]]), "solid", "box")
    assert int(left_edge[40:60, 0].max()) == 0 and torch.equal(left_edge[:, 1:], frame[:, 1:])
    top_edge = R.redact_faces(frame, torch.tensor([[50.0, -25.5, 20.0, 25.0, 0.0]]), "solid", "box")
    assert int(top_edge[0, 40:60].max()) == 0 and torch.equal(top_edge[1:], frame[1:])


def test_a_black_oval_has_a_thin_edge_and_keeps_the_picture_past_it() -> None:
    """``solid`` needs no blend into the picture: its edge is SOLID_FEATHER of the smaller
    semi-axis, and what lies past it (inside the blur's wider feather) is kept as it was."""
    frame = _textured(240, 240)
    cx, cy, a, b = 120.0, 120.0, 40.0, 50.0
    out = R.redact_faces(frame, torch.tensor([[cx, cy, a, b, 0.0]]), "solid")
    assert R.SOLID_FEATHER < R.FEATHER
    assert int(out[int(cy), int(cx + a - 1)].max()) == 0 and int(out[int(cy - b + 1), int(cx)].max()) == 0
    edge = R.SOLID_FEATHER * min(a, b)
    for x, y in ((cx + a + edge + 1, cy), (cx - a - edge - 2, cy), (cx, cy + b + edge + 1), (cx, cy - b - edge - 2)):
        assert torch.equal(out[int(y), int(x)], frame[int(y), int(x)]), (x, y)
    blurred = R.redact_faces(frame, torch.tensor([[cx, cy, a, b, 0.0]]), "blur")
    x = int(cx + a + edge + 1)
    assert not torch.equal(blurred[int(cy), x], frame[int(cy), x])  # the blur's feather reaches there

