"""What a model-risk reviewer checks beyond discrimination: the bank's weights, the
scorecard, and whether each weight's sign agrees with its feature's WOE trend."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from protocols.errors import InputDataError

from .i18n import Texts
from .markup import esc, num, table


def bins_path_for(iv_path: Path) -> Path:
    """``iv.csv`` -> ``iv.bins.json`` (written by ``bank-node iv`` beside the table)."""
    return iv_path.with_name(iv_path.stem + ".bins.json")


def read_bins(iv_path: Path | None) -> dict[str, dict[str, Any]]:
    """The bank's features' bins (totals, bads, WOE) of an IV run, by feature name ({} if
    none). The bureau's rows are left out: a feature of the same name at both parties
    (default_credit's x0..x9) had its sign checked against the bureau's WOE."""
    if iv_path is None or not bins_path_for(iv_path).is_file():
        return {}
    path = bins_path_for(iv_path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return {
            str(r["feature"]): r
            for r in rows
            if isinstance(r.get("woe"), list) and r.get("party", "bank") == "bank"
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputDataError(f"{path}: cannot read the IV bins: {exc}") from None


def woe_trend(woe: list[float]) -> int:
    """+1 when WOE (log of the bad share over the good share) mostly rises from one bin to
    the next, -1 when it mostly falls, 0 when unclear. Ordered bins run from low to high
    values; a missing-value bin, if any, comes last and moves at most one step."""
    steps = np.sign(np.diff(np.asarray(woe, dtype=np.float64)))
    up, down = int((steps > 0).sum()), int((steps < 0).sum())
    return 0 if up == down else (1 if up > down else -1)


def sign_checks(model: dict[str, Any], bins: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each of the bank's numeric features with IV bins: the weight's sign (on the
    log-odds of default) against the WOE trend. A positive weight says "more of it, more
    defaults"; a rising WOE says the same from the data alone. Disagreement usually means
    collinearity or an unstable weight: the committee should see it."""
    columns = list(model.get("columns") or [])
    weights = list(model.get("weights") or [])
    kinds = {c.get("name"): c.get("kind") for c in model.get("recipe") or [] if isinstance(c, dict)}
    out = []
    for name, weight in zip(columns, weights):
        if name not in bins or kinds.get(name) != "numeric":
            continue
        trend = woe_trend(bins[name]["woe"])
        sign = 0 if weight == 0 else (1 if weight > 0 else -1)
        out.append(
            {
                "feature": name,
                "weight": float(weight),
                "trend": trend,
                "agrees": None if trend == 0 or sign == 0 else trend == sign,
            }
        )
    return out


def weights_section(model: dict[str, Any], checks: list[dict[str, Any]], t: Texts) -> str:
    columns = list(model.get("columns") or [])
    weights = [float(w) for w in model.get("weights") or []]
    if not columns or len(columns) != len(weights):
        return f"<p class=muted>{esc(t('model.json records no weights.'))}</p>"
    slope = float((model.get("calibration") or {}).get("slope", 1.0))
    by_feature = {c["feature"]: c for c in checks}
    rows, classes = [], []
    for name, weight in zip(columns, weights):
        check = by_feature.get(name)
        verdict = ""
        if check is not None:
            verdict = {
                True: t("agrees with WOE"),
                False: t("contradicts WOE"),
                None: t("WOE trend unclear"),
            }[check["agrees"]]
        label = t("(intercept)") if name == "(intercept)" else name
        rows.append(
            [
                esc(label),
                num(weight, 4),
                num(slope * weight, 4),
                num(math.exp(slope * weight), 3),
                f'<span class="{"flag" if check and check["agrees"] is False else ""}">'
                f"{esc(verdict)}</span>",
            ]
        )
        classes.append("")
    flagged = [c["feature"] for c in checks if c["agrees"] is False]
    note = ""
    if flagged:
        note = (
            f'<p class="note" id="sign-flags">{esc(t("Weight sign contradicts the WOE trend"))}: '
            f"{esc(', '.join(flagged))}. {esc(t('sign-explain'))}</p>"
        )
    elif not checks:
        note = f"<p class=muted>{esc(t('no-sign-checks'))}</p>"
    return (
        table(
            [
                t("Model column"),
                t("Weight"),
                t("Calibrated weight"),
                t("Odds ratio per unit"),
                t("Sign check"),
            ],
            rows,
            "weights-table",
            row_classes=classes,
            text_columns=(0, 4),
        )
        + note
        + f"<p class=muted>{esc(t('weights-explain'))}</p>"
    )


def scorecard_section(model: dict[str, Any], t: Texts) -> str:
    card = model.get("scorecard")
    if not isinstance(card, dict) or not card.get("points"):
        return f"<p class=muted id=scorecard-none>{esc(t('no-scorecard'))}</p>"
    rows = [[esc(t("(base points)")), "", num(card.get("base_points"), 2)]]
    rows += [[esc(p["feature"]), esc(p["bin"]), num(p["points"], 2)] for p in card["points"]]
    scaling = t(
        "Scaling: {base} points at odds {odds:g}:1 (good:bad); {pdo:g} points double the odds.",
        base=num(card.get("base_score"), 0),
        odds=float(card.get("base_odds", 0)),
        pdo=float(card.get("pdo", 0)),
    )
    return (
        f"<p>{esc(scaling)}</p>"
        + table([t("Feature"), t("Bin"), t("Points")], rows, "scorecard-table", text_columns=(0, 1))
        + f"<p class=muted>{esc(t('scorecard-explain'))}</p>"
    )
