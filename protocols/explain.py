"""Reason codes: which of a party's features push a score towards default, per row.

A joint model's log-odds of default is a sum over both parties' model columns; a feature's
contribution for one row is the sum over its columns of weight x input. Inputs are
standardised on the training rows, so a contribution is measured against the average
training client: a positive one pushes this applicant towards default. Each party ranks
its own features; only the names leave a party, never the values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_REASONS = 3
NONE = -1  # fewer features than asked push towards default


def contributions(x: np.ndarray, weights: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """Rows x features: each feature's weight x input summed over its model columns
    (``widths``: how many columns each feature has, in the order of ``x``'s columns)."""
    if x.shape[1] != len(weights) or sum(widths) != len(weights):
        raise ValueError("the inputs, weights and feature widths do not match")
    parts = x * np.asarray(weights)[None, :]
    starts = np.cumsum([0, *widths[:-1]]).astype(np.int64)
    if not len(widths):
        return np.zeros((x.shape[0], 0))
    return np.add.reduceat(parts, starts, axis=1) if parts.shape[1] else parts


def top_reasons(contrib: np.ndarray, k: int = MAX_REASONS) -> np.ndarray:
    """Rows x k feature indexes, largest positive contribution first; ``NONE`` where fewer
    than k features push towards default."""
    k = max(0, min(k, MAX_REASONS))
    rows, features = contrib.shape
    out = np.full((rows, k), NONE, dtype=np.int64)
    if not features or not k:
        return out
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(contrib, order, axis=1)
    width = order.shape[1]
    out[:, :width] = np.where(chosen > 0, order, NONE)
    return out
