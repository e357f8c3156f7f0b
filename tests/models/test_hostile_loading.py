"""Tiny model files that ask for gigabytes are refused in one line (issue #17, finding 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reenact.errors import ModelError
from testing.hostile_files import CASES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_file_is_a_one_line_model_error(case: str, tmp_path: Path) -> None:
    make, load = CASES[case]
    path = make(tmp_path)
    if path.is_file():
        assert path.stat().st_blocks * 512 < 2 << 20  # the whole attack is this small on disk
    with pytest.raises(ModelError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert any(word in message for word in ("refus", "not allowed", "outside", "not a valid")), message


def test_all_hostile_files_stay_in_bounded_memory(tmp_path: Path) -> None:
    """Load every case in one fresh process: its peak RSS (imports included) stays < 1 GiB."""
    code = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from testing.hostile_files import CASES
from reenact.errors import ModelError
for i, (make, load) in enumerate(CASES.values()):
    folder = Path({str(tmp_path)!r}) / str(i)
    folder.mkdir()
    try:
        load(make(folder))
    except ModelError:
        pass
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest) through fork+exec
hwm = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0]
print(json.dumps(int(hwm.split()[1]) / 1024))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mib = json.loads(out.stdout.strip().splitlines()[-1])
    assert peak_mib < 1024, peak_mib


def test_models_verify_refuses_a_bomb_onnx(tmp_path: Path) -> None:
    import reenact.packs  # noqa: F401 - registers the loaders
    from reenact.models import registry
    from reenact.models.spec import Component
    from testing.hostile_files import make_constant_of_shape_onnx

    path = make_constant_of_shape_onnx(tmp_path)
    with pytest.raises(ModelError, match="refusing to run it"):
        registry.loader_for("onnx").check("detector", Component(kind="onnx", licence="x"), path)
