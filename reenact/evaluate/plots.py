"""PNG plots of an evaluation report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reenact.errors import InputError  # noqa: E402


def _values(x: Any) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in x], dtype=np.float64)


def plot_per_frame(report: dict[str, Any], path: str | Path) -> Path:
    """Per-frame curves, one line per track: identity, pose and expression error, flicker."""
    tracks = report.get("tracks", [])
    if not tracks:
        raise InputError("the report has no tracks to plot")
    has_target = any("similarity_to_target" in t for t in tracks)
    panels = [
        ("similarity_to_original", "cosine similarity to original person"),
        ("pose", "pose error (mean |yaw,pitch,roll|, deg)"),
        ("expression_error", "expression error (landmarks / inter-ocular)"),
        ("flicker", "flicker (8-bit levels): output solid, input dashed"),
    ]
    if has_target:
        panels.insert(0, ("similarity_to_target", "cosine similarity to target identity"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], panels, strict=True):
        for t in tracks:
            frames = np.asarray(t["frames"])
            label = f"track {t['track']}"
            if key == "pose":
                y = _values([np.mean(p) if p is not None else None for p in t["pose_error_deg"]])
                ax.plot(frames, y, label=label)
            elif key == "flicker":
                fo = _values(t["flicker"]["output_per_frame"])
                fi = _values(t["flicker"]["input_per_frame"])
                line = ax.plot(frames[len(frames) - len(fo):], fo, label=label)[0]
                ax.plot(frames[len(frames) - len(fi):], fi, "--", color=line.get_color(), alpha=0.6)
            elif key in t:
                ax.plot(frames, _values(t[key]), label=label)
        if key == "similarity_to_original":
            thr = report["summary"]["privacy"]["threshold"]
            ax.axhline(thr, color="red", lw=0.8, ls=":", label=f"re-id threshold {thr:g}")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("input frame")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{Path(report['output']).name} vs {Path(report['input']).name}", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_summary(report: dict[str, Any], path: str | Path) -> Path:
    """One figure of the headline numbers, input next to output where both exist."""
    s = report["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))

    def nz(v: Any) -> float:
        return math.nan if v is None else float(v)

    names, vals = ["re-identification"], [nz(s["privacy"]["reidentification_rate"])]
    if "identity" in s:
        names += ["target retrieval", "sim. to target"]
        vals += [nz(s["identity"]["retrieval_rate"]), nz(s["identity"]["similarity_to_target"]["mean"])]
    names.append("output face found")
    vals.append(nz(s["output_face_detected_rate"]))
    axes[0].bar(names, vals, color="tab:blue")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(f"identity / privacy ({report['models']['identity']})", fontsize=8)
    axes[0].tick_params(axis="x", labelsize=7, rotation=20)

    temporal = s["temporal"]
    keys = [("tl_id", "TL-ID"), ("tg_id", "TG-ID"), ("landmark_jitter", "jitter x100"), ("flicker", "flicker /10")]
    scale = {"tl_id": 1.0, "tg_id": 1.0, "landmark_jitter": 100.0, "flicker": 0.1}
    x = np.arange(len(keys))
    for off, side, color in ((-0.2, "input", "tab:gray"), (0.2, "output", "tab:orange")):
        axes[1].bar(x + off, [nz(temporal[k][side]) * scale[k] for k, _ in keys], 0.4, label=side, color=color)
    axes[1].set_xticks(x, [n for _, n in keys], fontsize=7)
    axes[1].legend(fontsize=7)
    axes[1].set_title("temporal consistency", fontsize=8)

    attr = s["attributes"]
    pose = attr["pose_error_deg"]
    names2 = ["yaw", "pitch", "roll"]
    axes[2].bar(names2, [nz(pose[n]["mean"]) for n in names2], color="tab:green", label="pose error (deg)")
    ax2 = axes[2].twinx()
    ax2.bar(["expression"], [nz(attr["expression_error"]["mean"])], color="tab:purple")
    ax2.set_ylabel("expression error", fontsize=7)
    bg = s["background"]["psnr_db"]
    axes[2].set_title(f"attributes; background PSNR {nz(bg):.1f} dB", fontsize=8)
    fig.suptitle(f"{Path(report['output']).name} vs {Path(report['input']).name} ({report['mode']})", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
