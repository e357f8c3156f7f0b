"""The box matching: the assignment is optimal (scipy's answer) without importing scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from reenact.faces.boxes import assign, box_iou, match_boxes


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (4, 4), (3, 7), (7, 3), (12, 12)])
def test_assignment_cost_is_scipys(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for trial in range(60):
        cost = rng.random(shape) if trial % 2 else rng.integers(0, 3, shape).astype(float)  # ties too
        if trial % 3 == 0:
            cost[rng.random(shape) < 0.4] = 1e6  # the tracker's refused pairs
        rows, cols = assign(cost)
        ref_rows, ref_cols = linear_sum_assignment(cost)
        assert len(rows) == min(shape) and len(set(cols.tolist())) == len(cols)
        assert rows.tolist() == sorted(rows.tolist())
        assert cost[rows, cols].sum() == pytest.approx(cost[ref_rows, ref_cols].sum(), abs=1e-9)


def test_assignment_prefers_the_global_optimum_over_greedy() -> None:
    # greedy takes (0, 0) = 1 and is left with (1, 1) = 10; the optimum crosses over
    cost = np.array([[1.0, 2.0], [2.0, 10.0]])
    rows, cols = assign(cost)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]


def test_assignment_refuses_non_finite_costs() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        assign(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="matrix"):
        assign(np.zeros(3))


def test_match_boxes_drops_pairs_below_the_score() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=float)
    b = np.array([[101, 101, 111, 111], [1, 0, 11, 10], [300, 300, 310, 310]], dtype=float)
    assert match_boxes(box_iou(a, b), 0.3) == [(0, 1), (1, 0)]
    assert match_boxes(box_iou(a, b[2:]), 0.3) == []
    assert match_boxes(np.zeros((0, 3)), 0.3) == []
