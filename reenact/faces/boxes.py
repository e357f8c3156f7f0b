"""Boxes: IoU and matching, shared by the tracker, the pipeline and ``reenact eval``.

Conventions:
    boxes are float ``[N,4]`` numpy arrays ``(x1, y1, x2, y2)`` in pixels of the frame they
    were found in; ``x2 >= x1`` and ``y2 >= y1`` (an empty box has zero area and IoU 0).
"""

from __future__ import annotations

import numpy as np


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


def assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of rows to columns (``min(N, M)`` pairs).

    The Hungarian method with potentials (shortest augmenting paths, O(N^2 M)), the same
    optimum as ``scipy.optimize.linear_sum_assignment``, which the tests compare it with. It
    is written here because importing ``scipy.optimize`` for it cost every run 0.42 s and
    39 MiB (``python -X importtime``), for the few-by-few matrices a tracker solves.

    Conventions: cost float ``[N,M]``, finite; returns (rows, columns) int64 arrays, rows
    ascending. Raises ``ValueError`` on a non-finite cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a [N,M] matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("cost contains NaN or infinite entries")
    if cost.shape[0] > cost.shape[1]:
        cols, rows = assign(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    row_of = np.zeros(m + 1, dtype=np.int64)  # row (1-based) matched to each column; column 0 is the root
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        row_of[0], j0 = i, 0
        reach = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:  # grow a shortest augmenting path from row i
            used[j0] = True
            i0 = row_of[j0]
            free = ~used
            slack = cost[i0 - 1] - u[i0] - v[1:]
            better = free[1:] & (slack < reach[1:])
            reach[1:][better] = slack[better]
            way[1:][better] = j0
            j1 = int(np.argmin(np.where(free[1:], reach[1:], np.inf))) + 1
            delta = reach[j1]
            u[row_of[used]] += delta
            v[used] -= delta
            reach[free] -= delta
            j0 = j1
            if row_of[j0] == 0:
                break
        while j0:  # flip the path
            j1 = way[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    cols = np.flatnonzero(row_of[1:])
    rows = row_of[1:][cols] - 1
    order = np.argsort(rows)
    return rows[order], cols[order]


def match_boxes(score: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Optimal one-to-one matching of rows to columns of a score matrix (higher is better).

    Pairs scoring below ``min_score`` are dropped after the assignment. Returns
    ``(row, column)`` pairs sorted by row.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return []
    rows, cols = assign(-score)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if score[r, c] >= min_score)


DUPLICATE_OVERLAP = 0.4
"""Share of the smaller of two boxes of one frame that their overlap must reach for the weaker
to be the same face found twice (with a low score threshold, the detector's neighbouring
peaks on one small face give boxes offset by a quarter to half a face height)."""


def centre_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between the centres of boxes ``a [N,4]`` and ``b [M,4]`` in heights of ``a``: [N,M]."""
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    height = np.maximum(a[:, 3] - a[:, 1], 1.0)
    return np.linalg.norm(ca[:, None] - cb[None], axis=2) / height[:, None]


def similar_size(a: np.ndarray, b: np.ndarray, most: float = 1.5) -> np.ndarray:
    """Whether the heights of boxes ``a [N,4]`` and ``b [M,4]`` are within a factor ``most``: bool [N,M]."""
    ha, hb = np.maximum(a[:, 3] - a[:, 1], 1.0), np.maximum(b[:, 3] - b[:, 1], 1.0)
    ratio = ha[:, None] / hb[None]
    return (ratio <= most) & (ratio >= 1.0 / most)


def same_face(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two boxes (float [4]) of one frame sit on one face: their overlap covers
    ``DUPLICATE_OVERLAP`` of the smaller, or either's centre lies inside the other."""
    a, b = np.asarray(a, np.float64).reshape(1, 4), np.asarray(b, np.float64).reshape(1, 4)
    inter = float((np.minimum(a[0, 2:], b[0, 2:]) - np.maximum(a[0, :2], b[0, :2])).clip(min=0).prod())
    smaller = max(min(float((a[0, 2:] - a[0, :2]).prod()), float((b[0, 2:] - b[0, :2]).prod())), 1e-6)
    centre_a, centre_b = (a[0, :2] + a[0, 2:]) / 2, (b[0, :2] + b[0, 2:]) / 2
    return inter / smaller >= DUPLICATE_OVERLAP or bool(_inside(centre_a, b)[0]) or bool(_inside(centre_b, a)[0])


def _inside(point: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether ``point [2]`` lies inside each of ``boxes [N,4]``: bool [N]."""
    return (boxes[:, 0] <= point[0]) & (point[0] <= boxes[:, 2]) & (boxes[:, 1] <= point[1]) & (point[1] <= boxes[:, 3])
