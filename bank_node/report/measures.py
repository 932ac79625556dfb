"""The measures a credit committee reads: lift by decile, KS and gain curves, IV bands."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata
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


def delong(y: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The AUCs of several scores of the same rows and their covariance matrix (DeLong,
    DeLong and Clarke-Pearson, "Comparing the areas under two or more correlated ROC
    curves", Biometrics 44:837, 1988), by midranks (Sun and Xu, "Fast implementation of
    DeLong's algorithm", IEEE Signal Processing Letters 21:1389, 2014)."""
    bad = np.asarray(y) == 1
    m, n = int(bad.sum()), int((~bad).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong's variance needs two bads and two goods at least")
    aucs, v10, v01 = [], [], []
    for p in scores:
        p = np.asarray(p, dtype=np.float64)
        x, z = p[bad], p[~bad]
        whole = rankdata(np.concatenate([x, z]))
        rx, rz = rankdata(x), rankdata(z)
        aucs.append((whole[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((whole[:m] - rx) / n)  # per bad: the share of goods it outranks
        v01.append(1.0 - (whole[m:] - rz) / m)  # per good: the share of bads above it
    s10 = np.atleast_2d(np.cov(np.array(v10)))
    s01 = np.atleast_2d(np.cov(np.array(v01)))
    return np.array(aucs), s10 / m + s01 / n


def auc_interval(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """DeLong's interval of one AUC, within [0, 1]."""
    (auc,), cov = delong(y, p)
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(float(cov[0, 0]), 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def gain_interval(
    y: np.ndarray, joint: np.ndarray, bank_only: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """DeLong's interval of the AUC the joint model adds to the bank-only one on the same
    rows (paired: the two scores' errors are correlated, and counting them apart would widen
    the interval): a gain measured on few bads is not established when it includes 0."""
    aucs, cov = delong(y, joint, bank_only)
    gain = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(var, 0.0))
    return gain - half, gain + half
