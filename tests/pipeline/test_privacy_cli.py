"""End to end: ``deidentify --method blur`` on the sample clip, its default report and ``--audit``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from reenact.cli import deidentify_main
from reenact.io import probe
from reenact.pipeline import report_paths

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "samples" / "astronaut_clip.mp4"


def _has_key(node: object, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_has_key(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_has_key(v, key) for v in node)
    return False


def test_blur_run_default_report_and_audit_file(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    assert deidentify_main([str(CLIP), "-o", str(out), "--method", "blur", "--audit", "--quiet"]) == 0
    src, dst = probe(CLIP), probe(out)
    assert (dst.width, dst.height, dst.frame_count) == (src.width, src.height, src.frame_count)
    assert len(dst.audio_streams) == len(src.audio_streams) >= 1
    text = report_paths(out)["report"].read_text()
    report = json.loads(text)
    assert {"privacy", "tracks", "counts", "config", "input", "output"} <= set(report)
    assert report["models"]["generator"] is None  # the fast path loads no generator
    assert report["privacy"]["ladder"] == ["blur", "fill", "head_blur", "solid"]
    assert {c["chip"] for c in report["privacy"]["checkers"]} == {"tight", "loose"}
    assert report["counts"]["faces_blurred"] > 0 and report["counts"]["faces_replaced"] == 0
    for track in report["tracks"].values():
        assert set(track["privacy"]["rungs"]) <= {"blur", "head_blur", "fill", "solid"}
        assert track["privacy"]["passed"] is True
    # no per-frame similarities, no identity codes and no absolute paths by default
    assert not _has_key(report, "per_frame") and not _has_key(report, "code")
    assert str(tmp_path) not in text and str(CLIP.parent) not in text
    assert report["input"] == CLIP.name
    audit_path = report_paths(out)["audit"]
    assert stat.S_IMODE(audit_path.stat().st_mode) == 0o600
    audit = json.loads(audit_path.read_text())
    assert audit["input"] == str(CLIP)
    assert any(t["privacy"]["per_frame"] for t in audit["tracks"].values())
