"""Reason codes: per-feature contributions summed over a feature's model columns, the
largest positive ones first, none where nothing pushes towards default."""

from __future__ import annotations

import numpy as np
import pytest

from protocols import explain


def test_contributions_sum_each_features_columns():
    x = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 1.0, 3.0]])
    w = np.array([0.5, 1.0, 2.0, -1.0])
    got = explain.contributions(x, w, [1, 2, 1])  # a number, a two-level category, a number
    np.testing.assert_allclose(got, [[0.5, 3.0, 1.0], [0.0, 1.0, -3.0]])
    with pytest.raises(ValueError, match="do not match"):
        explain.contributions(x, w, [2, 1])


def test_top_reasons_order_and_none():
    contrib = np.array([[0.1, 0.9, -0.2, 0.4], [-1.0, -0.5, -0.1, -2.0], [0.0, 0.3, 0.0, 0.0]])
    got = explain.top_reasons(contrib, 3)
    assert got.tolist() == [[1, 3, 0], [-1, -1, -1], [1, -1, -1]]
    assert explain.top_reasons(contrib, 9).shape == (3, explain.MAX_REASONS)  # capped
    assert explain.top_reasons(contrib[:, :2], 3).tolist()[0] == [1, 0, -1]  # fewer features
    assert explain.top_reasons(np.zeros((2, 0)), 3).tolist() == [[-1] * 3] * 2
