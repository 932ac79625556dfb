"""The credit modeller's measures of a score: AUC, KS and log-loss (scikit-learn's
implementations; KS as the largest gap between the ROC curve and the diagonal)."""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | int | None]:
    """AUC, KS and log-loss; AUC and KS are None when only one class is present."""
    # imported here: scikit-learn takes seconds to import, and scoring never needs it
    from sklearn.metrics import log_loss, roc_auc_score, roc_curve

    labels = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1 - 1e-12)
    out: dict[str, float | int | None] = {
        "rows": len(labels),
        "auc": None,
        "ks": None,
        "log_loss": None,
    }
    if len(labels) == 0:
        return out
    out["log_loss"] = round(float(log_loss(labels, p, labels=[0, 1])), 6)
    if labels.min() != labels.max():
        fpr, tpr, _ = roc_curve(labels, p)
        out["auc"] = round(float(roc_auc_score(labels, p)), 6)
        out["ks"] = round(float(np.max(tpr - fpr)), 6)
    return out


# A loss that still fell by more than this share in the last epoch had not levelled off.
STILL_FALLING = 1e-3


def convergence_warning(losses: list[float], max_epochs: int) -> str | None:
    """A warning when training ran out of epochs while the loss (validation loss if any,
    else training loss) was still falling: the model has probably not converged."""
    if len(losses) < 2 or len(losses) < max_epochs:
        return None  # early stopping ended it: the loss had stopped improving
    before, last = losses[-2], losses[-1]
    if last < before * (1 - STILL_FALLING):
        return (
            f"the loss was still falling at the last epoch ({before:.5f} -> {last:.5f}): the "
            f"model may not have converged; train again with more than {max_epochs} epochs "
            "(--epochs, or epochs= in Python)"
        )
    return None


def mean_preserving_part(
    own: np.ndarray, other: np.ndarray, slope: float, intercept: float, bound: float
) -> float | None:
    """The constant ``c`` in place of another party's score parts ``other`` that keeps the
    mean probability of rows scored ``sigmoid(slope (own + part) + intercept)``: what an
    applicant the bureau does not hold (or every applicant, the bureau unreachable) gets.
    The mean part itself would not do: the sigmoid is convex where defaults are rare, so a
    review's bank-only fallback scored its training file at 0.060 a default where 8.5% had
    defaulted. None when there are no rows or the slope is not positive. (Bisection: the
    mean is increasing in ``c``.)"""
    if own.size == 0 or not slope > 0:
        return None
    target = float(np.mean(sigmoid(slope * (own + other) + intercept)))
    low, high = -bound, bound
    for _ in range(60):
        middle = (low + high) / 2
        if float(np.mean(sigmoid(slope * (own + middle) + intercept))) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2
