"""Scorecards: a joint model as points per bin per feature, each party's points computed
and kept on its own side.

Score = offset + factor x ln(odds of being good), factor = PDO / ln 2 and offset = base
score - factor x ln(base odds): a score of ``base_score`` at odds ``base_odds`` to 1, and
``pdo`` points more for every doubling of the odds. The model's log-odds of default is
u = intercept + sum of both halves' weighted inputs, so score = offset - factor x u, split
into base points (offset and intercept, on the bank's side) and points per feature. A
number's points are those of its decile bin's median; a category's, those of its level; a
missing value's, those of the filled value with its missing flag.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from .errors import InputDataError, ProtocolViolation
from .features import (
    VALUE_BOUND,
    ColumnRecipe,
    FeatureRecipe,
    _numbers,
    _texts,
    interval_labels,
)


@dataclass(frozen=True)
class Scaling:
    base_score: float = 600.0
    pdo: float = 50.0
    base_odds: float = 20.0

    def check(self) -> None:
        bounds = {"base_score": (0, 1e6), "pdo": (0.01, 1e4), "base_odds": (1e-6, 1e6)}
        for name, value in asdict(self).items():
            low, high = bounds[name]
            if not (math.isfinite(value) and low < value <= high):
                raise ProtocolViolation(
                    f"scorecard {name} = {value} is outside ({low:g}, {high:g}]"
                )

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)


def points_of(log_odds_of_default: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Scorecard points of a calibrated log-odds of default u: offset - factor x u (the
    odds of being good are e^-u). Not rounded: the probability they imply is the model's."""
    return scaling.offset - scaling.factor * np.asarray(log_odds_of_default, dtype=np.float64)


def probability_of(points: np.ndarray, scaling: Scaling) -> np.ndarray:
    """The probability of default that ``points`` stand for (the inverse of points_of)."""
    log_odds_good = (np.asarray(points, dtype=np.float64) - scaling.offset) / scaling.factor
    return 1.0 / (1.0 + np.exp(log_odds_good))


def _column_bins(column: ColumnRecipe) -> tuple[list[str], pa.Array]:
    """Bin labels and one representative raw value per bin."""
    if column.kind == "category":
        return list(column.levels), pa.array(column.levels, pa.string())
    if not column.bin_values:
        raise InputDataError(
            f"the model's recipe for {column.name!r} has no bins (trained before scorecards "
            "were supported): train the model again"
        )
    labels = interval_labels(column.bin_edges)
    if len(labels) != len(column.bin_values):
        raise InputDataError(f"the model's recipe for {column.name!r} has bins that disagree")
    values: list[float | None] = list(column.bin_values)
    if column.missing_flag:
        labels.append("missing")
        values.append(None)
    return labels, pa.array(values, pa.float64())


def _inputs(column: ColumnRecipe, raw: pa.Array) -> np.ndarray:
    x = (column.raw(raw) - np.array(column.means)) / np.array(column.stds)
    return np.clip(x, -VALUE_BOUND, VALUE_BOUND)


def points_table(recipe: FeatureRecipe, weights: np.ndarray, scaling: Scaling) -> list[dict]:
    """Points per bin per feature: one row per (feature, bin)."""
    if len(weights) != len(recipe.outputs):
        raise InputDataError("the weights do not match the recipe's columns")
    rows, start = [], 0
    for column in recipe.columns:
        width = len(column.outputs)
        labels, representatives = _column_bins(column)
        points = -scaling.factor * (
            _inputs(column, representatives) @ weights[start : start + width]
        )
        rows += [
            {"feature": column.name, "bin": label, "points": round(float(p), 2)}
            for label, p in zip(labels, points, strict=True)
        ]
        start += width
    return rows


def _bin_of_rows(column: ColumnRecipe, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if column.kind == "category":
        texts = _texts(values)
        known = {level: i for i, level in enumerate(column.levels)}
        other = known[column.levels[-1]]
        return np.array([known.get(t, other) for t in texts.tolist()], dtype=np.int64)
    x = _numbers(values, column.name)
    missing = np.isnan(x)
    x = np.clip(np.where(missing, column.fill, x), column.low, column.high)
    bins = np.searchsorted(np.array(column.bin_edges), x, side="right")
    if column.missing_flag:
        bins = np.where(missing, len(column.bin_values), bins)
    return bins.astype(np.int64)


def row_points(table: pa.Table, recipe: FeatureRecipe, points: list[dict]) -> np.ndarray:
    """Each row's points, summed over the features of one party."""
    total = np.zeros(table.num_rows)
    for column in recipe.columns:
        mine = [p["points"] for p in points if p["feature"] == column.name]
        if column.name not in table.column_names:
            raise InputDataError(f"the data has no column {column.name!r}, which the model uses")
        total += np.asarray(mine)[_bin_of_rows(column, table.column(column.name))]
    return total
