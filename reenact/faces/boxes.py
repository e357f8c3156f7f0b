"""Boxes: IoU and matching, shared by the tracker, the pipeline and ``reenact eval``.

Conventions:
    boxes are float ``[N,4]`` numpy arrays ``(x1, y1, x2, y2)`` in pixels of the frame they
    were found in; ``x2 >= x1`` and ``y2 >= y1`` (an empty box has zero area and IoU 0).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[N,M]`` of boxes ``a [N,4]`` and ``b [M,4]`` (0 where a union is empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(min=0).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(min=0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(min=0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def match_boxes(score: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Optimal one-to-one matching of rows to columns of a score matrix (higher is better).

    Pairs scoring below ``min_score`` are dropped after the assignment. Returns
    ``(row, column)`` pairs sorted by row.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return []
    rows, cols = linear_sum_assignment(-score)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if score[r, c] >= min_score)
