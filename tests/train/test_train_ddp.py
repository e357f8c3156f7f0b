"""A 2-process data-parallel run (torchrun, gloo on CPU) keeps the replicas identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "train_tiny.yaml"


def test_two_process_gloo_run_keeps_replicas_identical(tiny_settings: Callable[..., dict[str, Any]],
                                                       tmp_path: Path) -> None:
    overrides = tiny_settings(tmp_path / "run", **{
        "run.steps": 4, "run.checkpoint_every": 2, "run.eval_every": 100})
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # what `torchrun --no-python reenact-train fit ...` runs, from this checkout
    script = [sys.executable, "-c", "from reenact.cli import train_script; train_script()"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
           *script, "fit", "--config", str(TINY_CONFIG), "--quiet", *sets]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 4
    sums = summary["replica_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert (tmp_path / "run" / "last.safetensors").is_file()
