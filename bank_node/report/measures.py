"""The measures a credit committee reads: lift by decile, KS and gain curves, IV bands."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

DECILES = 10
# The usual information-value bands (Siddiqi): (upper bound, label).
IV_BANDS: tuple[tuple[float, str], ...] = (
    (0.02, "not predictive"),
    (0.1, "weak"),
    (0.3, "medium"),
    (0.5, "strong"),
    (math.inf, "suspicious (check for leaks)"),  # the IV table's words (protocols.binning)
)


def iv_band(iv: float) -> str:
    """The usual strength band of an information value."""
    if math.isnan(iv):
        return "unknown"
    return next(label for bound, label in IV_BANDS if iv < bound)


def lift_table(y: np.ndarray, p: np.ndarray, groups: int = DECILES) -> list[dict[str, Any]]:
    """Equal-count groups by predicted risk, riskiest first: count, bads, bad rate,
    cumulative share of all bads captured, lift (bad rate over the overall bad rate)."""
    order = np.argsort(-p, kind="stable")
    total_bads = int(y.sum())
    overall = total_bads / len(y) if len(y) else 0.0
    rows, cumulative_bads, cumulative_count = [], 0, 0
    for number, idx in enumerate(np.array_split(order, groups), start=1):
        if len(idx) == 0:
            continue
        count, bads = len(idx), int(y[idx].sum())
        cumulative_bads += bads
        cumulative_count += count
        rate = bads / count
        cumulative_rate = cumulative_bads / cumulative_count
        rows.append(
            {
                "decile": number,
                "p_min": float(p[idx].min()),
                "p_max": float(p[idx].max()),
                "count": count,
                "bads": bads,
                "bad_rate": rate,
                "captured": cumulative_bads / total_bads if total_bads else math.nan,
                "lift": rate / overall if overall else math.nan,
                "cumulative_lift": cumulative_rate / overall if overall else math.nan,
            }
        )
    return rows


def ks_curve(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Cumulative shares of bads and goods as the cut-off falls from the riskiest score,
    against the share of the population above the cut-off; KS is the largest gap."""
    # dropping collinear ROC points is exact here: the population share is linear in both
    fpr, tpr, thresholds = roc_curve(y, p)
    bads, goods = int(y.sum()), int(len(y) - y.sum())
    population = (tpr * bads + fpr * goods) / len(y)
    gap = tpr - fpr
    at = int(np.argmax(gap))
    return {
        "population": population,
        "bads": tpr,
        "goods": fpr,
        "ks": float(gap[at]),
        "at_population": float(population[at]),
        "at_threshold": float(min(thresholds[at], 1.0)),
        "at_bads": float(tpr[at]),
        "at_goods": float(fpr[at]),
    }


def gain_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(y, p)
    bads = int(y.sum())
    return (tpr * bads + fpr * (len(y) - bads)) / len(y), tpr


def gini(auc: float | None) -> float | None:
    return None if auc is None else 2 * auc - 1
