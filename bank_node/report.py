"""A self-contained HTML report of a trained joint model, for a bank's credit committee.

``build_report`` reads what ``bank-node train`` wrote to the model directory (``model.json``
and ``evaluation.csv``, see docs/model-format.md) and, optionally, an information-value
table, and writes ONE HTML file: inline CSS, figures as base64 PNGs, no scripts and no
external resources, so it can be mailed, archived or printed as it is.

Every measure and figure is on the validation split (the rows held back from training);
when there are none, on the training rows, and the page says so.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from bank_node.metrics import evaluate
from protocols.errors import InputDataError

MODEL_FILE = "model.json"  # as in bank_node.training
EVALUATION_FILE = "evaluation.csv"
DECILES = 10
# The usual information-value bands (Siddiqi): (upper bound, label).
IV_BANDS: tuple[tuple[float, str], ...] = (
    (0.02, "not predictive"),
    (0.1, "weak"),
    (0.3, "medium"),
    (0.5, "strong"),
    (math.inf, "very strong (check for leakage)"),
)
JOINT_COLOUR, BANK_COLOUR = "#1f4e79", "#c55a11"
GOOD_COLOUR, BAD_COLOUR = "#2e7d32", "#c62828"
DPI = 110


# -- inputs --------------------------------------------------------------------------------


@dataclass
class Scores:
    """The evaluated rows: labels, the joint probability and (maybe) the bank-only one."""

    y: np.ndarray
    joint: np.ndarray
    bank_only: np.ndarray | None

    def subset(self, mask: np.ndarray) -> Scores:
        return Scores(
            self.y[mask], self.joint[mask], None if self.bank_only is None else self.bank_only[mask]
        )


def _read_model(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_FILE
    if not model_dir.is_dir():
        raise InputDataError(f"{model_dir}: no such model directory")
    if not path.is_file():
        raise InputDataError(
            f"{path}: no such file; is {model_dir} a model directory written by 'bank-node train'?"
        )
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read the model: {exc}") from None
    if not isinstance(model, dict):
        raise InputDataError(f"{path}: not a model file (expected a JSON object)")
    return model


def _read_csv(path: Path, what: str, text_columns: Iterable[str] = ()) -> pa.Table:
    if not path.is_file():
        raise InputDataError(f"{path}: no such file ({what})")
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in text_columns}
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{path}: cannot read {what} as CSV: {exc}") from None
    if table.num_rows == 0:
        raise InputDataError(f"{path}: {what} has a header but no data rows")
    return table


def _require(table: pa.Table, path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputDataError(
            f"{path}: no column {missing[0]!r}; the file has: {', '.join(table.column_names)}"
        )


def _probabilities(table: pa.Table, path: Path, column: str) -> np.ndarray:
    try:
        values = pc.cast(table.column(column), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"{path}: column {column!r} must hold probabilities") from None
    if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
        raise InputDataError(
            f"{path}: column {column!r} must hold probabilities in [0, 1] on every row"
        )
    return values


def _read_evaluation(model_dir: Path, id_column: str | None) -> tuple[np.ndarray, Scores]:
    path = model_dir / EVALUATION_FILE
    if not path.is_file():
        raise InputDataError(
            f"{path}: no such file; 'bank-node train' writes it next to {MODEL_FILE} "
            "(the per-row labels and scores the report is built from)"
        )
    table = _read_csv(path, "the evaluation rows", [id_column, "split"] if id_column else ["split"])
    _require(table, path, ["split", "y", "joint"])
    split = np.array(table.column("split").to_pylist(), dtype=object)
    try:
        y = pc.cast(table.column("y"), pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"{path}: column 'y' must hold 0 or 1 on every row") from None
    if table.column("y").null_count or not np.isin(y, (0, 1)).all():
        raise InputDataError(f"{path}: column 'y' must hold 0 or 1 on every row")
    joint = _probabilities(table, path, "joint")
    bank_only = (
        _probabilities(table, path, "bank_only") if "bank_only" in table.column_names else None
    )
    return split, Scores(y.astype(np.int64), joint, bank_only)


def _read_iv(path: Path) -> list[dict[str, Any]]:
    table = _read_csv(path, "the information-value table", ["feature", "party", "kind", "strength"])
    _require(table, path, ["feature", "iv"])
    rows = table.to_pylist()
    for row in rows:
        try:
            row["iv"] = float(row["iv"]) if row["iv"] is not None else math.nan
        except (TypeError, ValueError):
            raise InputDataError(f"{path}: column 'iv' must be numeric") from None
    rows.sort(key=lambda r: -r["iv"] if not math.isnan(r["iv"]) else math.inf)
    return rows


def iv_band(iv: float) -> str:
    """The usual strength band of an information value."""
    if math.isnan(iv):
        return "unknown"
    return next(label for bound, label in IV_BANDS if iv < bound)


# -- measures ------------------------------------------------------------------------------


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


def _gini(auc: float | None) -> float | None:
    return None if auc is None else 2 * auc - 1


# -- figures -------------------------------------------------------------------------------


def _figure(width: float = 6.0, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the non-interactive Agg canvas; no pyplot, no global state
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _style(ax: Any) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _roc_figure(s: Scores) -> Figure:
    fig = _figure(5.2, 4.6)
    ax = fig.add_subplot()
    curves = [("Joint model", s.joint, JOINT_COLOUR)]
    if s.bank_only is not None:
        curves.append(("Bank-only model", s.bank_only, BANK_COLOUR))
    for label, p, colour in curves:
        fpr, tpr, _ = roc_curve(s.y, p)
        auc = evaluate(s.y, p)["auc"]
        ax.plot(fpr, tpr, color=colour, linewidth=2, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="#888888", linestyle="--", linewidth=1, label="Random")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.set_xlabel("False positive rate (share of goods flagged)")
    ax.set_ylabel("True positive rate (share of bads flagged)")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right", fontsize=9)
    _style(ax)
    return fig


def _ks_figure(s: Scores, ks: dict[str, Any]) -> Figure:
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot()
    x = ks["population"] * 100
    ax.plot(x, ks["bads"] * 100, color=BAD_COLOUR, linewidth=2, label="Cumulative % of bads")
    ax.plot(x, ks["goods"] * 100, color=GOOD_COLOUR, linewidth=2, label="Cumulative % of goods")
    at = ks["at_population"] * 100
    ax.vlines(at, ks["at_goods"] * 100, ks["at_bads"] * 100, color="black", linewidth=1.5)
    ax.plot([at, at], [ks["at_goods"] * 100, ks["at_bads"] * 100], "o", color="black", ms=4)
    ax.annotate(
        f"KS = {ks['ks']:.3f}\nat {at:.0f}% of the population\n(PD ≥ {ks['at_threshold']:.3f})",
        xy=(at, (ks["at_bads"] + ks["at_goods"]) * 50),
        xytext=(12, 0),
        textcoords="offset points",
        va="center",
        fontsize=9,
        bbox={"boxstyle": "round", "fc": "white", "ec": "#999999"},
    )
    ax.set_xticks(range(0, 101, 10))
    ax.set(xlim=(0, 100), ylim=(0, 101))
    ax.set_xlabel("% of clients, riskiest first (score deciles)")
    ax.set_ylabel("Cumulative %")
    ax.set_title("KS curve (joint model)")
    ax.legend(loc="lower right", fontsize=9)
    _style(ax)
    return fig


def _distribution_figure(s: Scores) -> Figure:
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    high = float(np.quantile(s.joint, 0.995)) if len(s.joint) else 1.0
    high = min(1.0, max(high * 1.05, 1e-3))
    bins = np.linspace(0.0, high, 31)
    clipped = np.clip(s.joint, 0.0, high)
    for label, mask, colour in (
        ("Goods (y = 0)", s.y == 0, GOOD_COLOUR),
        ("Bads (y = 1)", s.y == 1, BAD_COLOUR),
    ):
        if mask.any():
            ax.hist(
                clipped[mask],
                bins=list(bins),
                density=True,
                histtype="stepfilled",
                alpha=0.35,
                color=colour,
                edgecolor=colour,
                linewidth=1.5,
                label=f"{label}: {int(mask.sum()):,} clients, mean PD {s.joint[mask].mean():.3f}",
            )
    ax.set_xlim(0, high)
    ax.set_xlabel("Predicted probability of default (joint model)")
    ax.set_ylabel("Density")
    ax.set_title("Score distribution of goods and bads")
    ax.legend(loc="upper right", fontsize=9)
    _style(ax)
    return fig


def _gain_figure(s: Scores, lift: list[dict[str, Any]]) -> Figure:
    fig = _figure(5.2, 4.6)
    ax = fig.add_subplot()
    curves = [("Joint model", s.joint, JOINT_COLOUR)]
    if s.bank_only is not None:
        curves.append(("Bank-only model", s.bank_only, BANK_COLOUR))
    for label, p, colour in curves:
        x, captured = gain_curve(s.y, p)
        ax.plot(x * 100, captured * 100, color=colour, linewidth=2, label=label)
    cumulative = np.cumsum([r["count"] for r in lift]) / len(s.y) * 100
    ax.plot(
        cumulative,
        [r["captured"] * 100 for r in lift],
        "o",
        color=JOINT_COLOUR,
        ms=4,
        label="Joint model, by decile",
    )
    rate = s.y.mean() if len(s.y) else 0
    if rate > 0:
        ax.plot(
            [0, rate * 100, 100], [0, 100, 100], color="#888888", linestyle=":", label="Perfect"
        )
    ax.plot([0, 100], [0, 100], color="#888888", linestyle="--", linewidth=1, label="Random")
    ax.set_xticks(range(0, 101, 10))
    ax.set(xlim=(0, 100), ylim=(0, 101), aspect="equal")
    ax.set_xlabel("% of clients, riskiest first")
    ax.set_ylabel("% of all bads captured")
    ax.set_title("Gain chart")
    ax.legend(loc="lower right", fontsize=9)
    _style(ax)
    return fig


def _history_figure(history: list[dict[str, Any]], kept: int | None) -> Figure:
    fig = _figure(5.6, 3.2)
    ax = fig.add_subplot()
    epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
    train = [h.get("train_loss") for h in history]
    validation = [h.get("validation_loss") for h in history]
    ax.plot(
        epochs,
        [math.nan if v is None else v for v in train],
        "o-",
        color=JOINT_COLOUR,
        label="Training loss",
    )
    if any(v is not None for v in validation):
        ax.plot(
            epochs,
            [math.nan if v is None else v for v in validation],
            "s--",
            color=BANK_COLOUR,
            label="Validation loss",
        )
    if kept is not None and 0 <= kept < len(history):
        ax.axvline(kept + 1, color="#888888", linestyle=":", label=f"Kept epoch ({kept + 1})")
    ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss (Taylor approximation)")
    ax.set_title("Training history")
    ax.legend(fontsize=9)
    _style(ax)
    return fig


# -- HTML ----------------------------------------------------------------------------------

CSS = """
:root { --ink: #1d2733; --muted: #5b6675; --rule: #d6dbe1; --band: #f4f6f8;
        --joint: #1f4e79; --bank: #c55a11; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); margin: 0; background: #fff; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--joint); }
p { margin: 6px 0 10px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: 8px 12px; margin: 10px 0; }
.muted { color: var(--muted); font-size: 13px; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
           gap: 8px 20px; margin: 0; padding: 14px 16px; background: var(--band);
           border-radius: 6px; }
dl.facts div { min-width: 0; }
dl.facts dt { color: var(--muted); font-size: 12px; text-transform: uppercase;
              letter-spacing: .04em; }
dl.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 0; }
.card { flex: 1 1 150px; border: 1px solid var(--rule); border-radius: 6px; padding: 10px 14px; }
.card .v { font-size: 24px; font-weight: 700; color: var(--joint); }
.card .k { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin: 8px 0 6px; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--rule); text-align: right;
         white-space: nowrap; }
th { background: var(--band); font-weight: 600; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
tr.gain td { font-weight: 700; background: #eef4fa; }
figure { margin: 14px 0; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; justify-content: space-between; }
.pair figure { flex: 1 1 440px; }
.bar { display: inline-block; height: 9px; background: var(--joint); border-radius: 2px;
       vertical-align: middle; }
.band-not-predictive { color: #7a7a7a; }
.band-very-strong { color: #b71c1c; font-weight: 600; }
.party { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px; }
.party-bank { background: #fbe9e0; color: var(--bank); }
.party-bureau { background: #e3edf7; color: var(--joint); }
footer { margin-top: 40px; color: var(--muted); font-size: 12px;
         border-top: 1px solid var(--rule); padding-top: 8px; }
@media print { main { padding: 0; } h2 { break-after: avoid; }
               figure, table { break-inside: avoid; } }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:.{digits}f}%"


def _signed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    table_id: str,
    caption: str | None = None,
    row_classes: Sequence[str] | None = None,
    text_columns: Sequence[int] = (0,),
) -> str:
    """Cells in ``rows`` must be HTML already (escaped); headers are escaped here."""
    head = "".join(
        f'<th scope="col"{" class=text" if i in text_columns else ""}>{esc(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(
            f"<td{' class=text' if i in text_columns else ''}>{cell}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    cap = f"<caption class=muted>{esc(caption)}</caption>" if caption else ""
    return (
        f'<table id="{esc(table_id)}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _img(fig: Figure, alt: str, caption: str, figure_id: str) -> str:
    data = _png(fig)
    return (
        f'<figure id="{esc(figure_id)}"><img src="data:image/png;base64,{data}" '
        f'alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def _facts(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<dl class="facts">'
        + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items)
        + "</dl>"
    )


def _count_bank_features(model: dict[str, Any]) -> tuple[int, int]:
    """(source features, model columns) of the bank's half."""
    columns = [c for c in model.get("columns", []) if c != "(intercept)"]
    recipe = model.get("recipe")
    features = len(recipe) if isinstance(recipe, list) else len(columns)
    return features, len(columns)


def _iv_section(iv_rows: list[dict[str, Any]] | None, iv_path: Path | None) -> str:
    if iv_rows is None:
        return (
            "<p class=muted id=iv-none>No information-value table was given, so the "
            "features' individual strength is not shown.</p>"
        )
    top = max((r["iv"] for r in iv_rows if math.isfinite(r["iv"])), default=0.0) or 1.0
    table_rows, counts = [], {"bank": 0, "bureau": 0}
    for r in iv_rows:
        party = str(r.get("party") or "")
        if party in counts:
            counts[party] += 1
        band = iv_band(r["iv"])
        strength = r.get("strength") or band
        width = 0 if not math.isfinite(r["iv"]) else max(1, round(90 * min(r["iv"], top) / top))
        cls = "band-" + band.split(" (")[0].replace(" ", "-")
        table_rows.append(
            [
                esc(r["feature"]),
                f'<span class="party party-{esc(party)}">{esc(party)}</span>' if party else "",
                esc(r.get("kind") or ""),
                esc(r.get("bins") if r.get("bins") is not None else ""),
                _num(r["iv"], 4),
                f'<span class="bar" style="width:{width}px"></span>',
                f'<span class="{cls}">{esc(strength)}</span>',
            ]
        )
    lows = [0.0] + [bound for bound, _ in IV_BANDS[:-1]]
    bands = "; ".join(
        f"{label} {low:g}–{bound:g}" if math.isfinite(bound) else f"{label} ≥ {low:g}"
        for low, (bound, label) in zip(lows, IV_BANDS)
    )
    source = f" (from {iv_path.name})" if iv_path is not None else ""
    return (
        f"<p>{len(iv_rows)} features{esc(source)}: {counts['bank']} of the bank's and "
        f"{counts['bureau']} of the bureau's, by information value.</p>"
        + _table(
            ["Feature", "Party", "Kind", "Bins", "IV", "", "Strength"],
            table_rows,
            "iv-table",
            text_columns=(0, 1, 2, 6),
        )
        + f"<p class=muted>Usual bands of information value — {esc(bands)}. IV is measured "
        "one feature at a time; the model's weights account for their overlap.</p>"
    )


def _lift_section(lift: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(r["decile"]) + (" (riskiest)" if r["decile"] == 1 else ""),
            f"{_num(r['p_min'])} – {_num(r['p_max'])}",
            f"{r['count']:,}",
            f"{r['bads']:,}",
            _pct(r["bad_rate"]),
            _pct(r["captured"]),
            _num(r["lift"], 2),
            _num(r["cumulative_lift"], 2),
        ]
        for r in lift
    ]
    return _table(
        [
            "Decile",
            "Predicted PD",
            "Clients",
            "Bads",
            "Bad rate",
            "Cumulative % of bads",
            "Lift",
            "Cumulative lift",
        ],
        rows,
        "lift-table",
    )


def build_report(
    model_dir: str | Path,
    out: str | Path,
    iv_table: str | Path | None = None,
    title: str | None = None,
    compare: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write one self-contained HTML report of the model in ``model_dir`` to ``out``.

    ``compare`` adds other models trained on the same split to the metrics table, by name,
    each with ``auc``, ``ks``, ``log_loss`` and ``rows`` on the evaluated split, and a row
    of what the joint model adds over each (the demo compares the joint model without the
    bureau's graph features this way).

    Returns ``path``, ``figures`` (how many), ``evaluated_on`` (``"validation"``, or
    ``"train"`` when no rows were held back), ``rows`` evaluated, and the measures shown:
    ``auc``, ``ks``, ``log_loss`` of the joint model, ``bank_only_auc``, ``bank_only_ks``
    and ``auc_gain`` (joint minus bank-only) when the bank-only scores are there.
    Raises ``InputDataError`` when an input is missing or malformed.
    """
    model_dir, out = Path(model_dir), Path(out)
    model = _read_model(model_dir)
    split, scores = _read_evaluation(model_dir, model.get("id_column"))
    iv_path = Path(iv_table) if iv_table is not None else None
    iv_rows = _read_iv(iv_path) if iv_path is not None else None

    train_mask, validation_mask = split == "train", split == "validation"
    evaluated_on = "validation" if validation_mask.any() else "train"
    s = scores.subset(validation_mask if evaluated_on == "validation" else train_mask)
    if len(s.y) == 0:
        raise InputDataError(
            f"{model_dir / EVALUATION_FILE}: no rows with split 'validation' or 'train'"
        )
    both_classes = 0 < s.y.sum() < len(s.y)

    measured: dict[tuple[str, str], dict[str, Any]] = {
        ("joint", "train"): evaluate(scores.y[train_mask], scores.joint[train_mask]),
        ("joint", "validation"): evaluate(scores.y[validation_mask], scores.joint[validation_mask]),
    }
    if scores.bank_only is not None:
        for name, mask in (("train", train_mask), ("validation", validation_mask)):
            measured[("bank_only", name)] = evaluate(scores.y[mask], scores.bank_only[mask])
    joint = measured[("joint", evaluated_on)]
    bank: dict[str, Any] | None = measured.get(("bank_only", evaluated_on))
    if bank is None and isinstance(model.get("metrics", {}).get("bank_only"), dict):
        # no per-row bank-only scores: the model file's figures, on the split it names
        bank = dict(model["metrics"]["bank_only"])
        if bank.get("evaluated_on", "validation") != evaluated_on:
            bank = None
    gain = (
        None
        if bank is None or joint["auc"] is None or bank.get("auc") is None
        else (joint["auc"] - bank["auc"])
    )

    # -- header
    history = list(model.get("history") or [])
    kept = model.get("epoch")
    bank_features, bank_columns = _count_bank_features(model)
    bureau_features = list(model.get("bureau_features") or [])
    n_train, n_validation = int(train_mask.sum()), int(validation_mask.sum())
    page_title = title or f"Joint credit model {model.get('model_id', '')}".strip()
    parts: list[str] = [
        f"<header><h1>{esc(page_title)}</h1>",
        "<p class=sub>Privacy-preserving joint model of the bank and the credit bureau: "
        "validation report for the credit committee.</p>",
        _facts(
            [
                ("Model ID", str(model.get("model_id", "–"))),
                ("Created (UTC)", str(model.get("created", "–"))),
                ("Bank", str(model.get("bank_id", "–"))),
                (
                    "Matched clients",
                    f"{len(split):,} ({n_train:,} train, {n_validation:,} validation)",
                ),
                ("Bank features", f"{bank_features} ({bank_columns} model columns)"),
                ("Bureau features", str(len(bureau_features))),
                (
                    "Epochs",
                    f"{len(history)} run"
                    + (f", epoch {int(kept) + 1} kept" if isinstance(kept, int) else ""),
                ),
                ("Label", str(model.get("label", "–"))),
            ]
        ),
    ]
    overall_rate = float(s.y.mean())
    lift = lift_table(s.y, s.joint)
    cards = [
        (_num(joint["auc"]), f"AUC, {evaluated_on}"),
        (_num(_gini(joint["auc"])), "Gini (2·AUC − 1)"),
        (_num(joint["ks"]), "KS"),
        (_pct(overall_rate), f"Bad rate ({int(s.y.sum()):,} of {len(s.y):,})"),
    ]
    if lift and both_classes:
        cards.append((_pct(lift[0]["captured"]), "Bads in the riskiest 10%"))
    if gain is not None:
        cards.append((_signed(gain), "AUC added by the bureau"))
    parts.append(
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class=v>{esc(v)}</div><div class=k>{esc(k)}</div></div>'
            for v, k in cards
        )
        + "</div></header>"
    )
    if evaluated_on == "train":
        parts.append(
            '<p class="note" id="train-fallback"><strong>No validation rows:</strong> this '
            "model was trained without holding rows back, so every measure and figure below "
            "is on the training rows the model was fitted to and will flatter it.</p>"
        )
    else:
        parts.append(
            f"<p class=muted>Measures and figures are on the {n_validation:,} validation "
            "rows, held back from training, unless marked otherwise.</p>"
        )

    # -- metrics
    metric_rows, classes = [], []
    named = {"joint": "Joint model (bank + bureau)", "bank_only": "Bank-only model"}
    for (name, part), m in measured.items():
        if m["rows"] == 0:
            continue
        metric_rows.append(
            [
                esc(named[name]),
                esc(part),
                f"{m['rows']:,}",
                _num(m["auc"]),
                _num(_gini(m["auc"])),
                _num(m["ks"]),
                _num(m["log_loss"], 4),
            ]
        )
        classes.append("")
    if scores.bank_only is None and bank is not None:
        metric_rows.append(
            [
                esc(named["bank_only"] + " (from model.json)"),
                esc(evaluated_on),
                f"{int(bank.get('rows') or 0):,}",
                _num(bank.get("auc")),
                _num(_gini(bank.get("auc"))),
                _num(bank.get("ks")),
                _num(bank.get("log_loss"), 4),
            ]
        )
        classes.append("")
    if gain is not None and bank is not None:
        ks_gain = (
            None if joint["ks"] is None or bank.get("ks") is None else joint["ks"] - bank["ks"]
        )
        metric_rows.append(
            [
                "What the bureau adds (joint − bank-only)",
                esc(evaluated_on),
                "",
                _signed(gain),
                _signed(2 * gain),
                _signed(ks_gain),
                _signed(
                    None
                    if joint["log_loss"] is None or bank.get("log_loss") is None
                    else joint["log_loss"] - bank["log_loss"],
                    4,
                ),
            ]
        )
        classes.append("gain")
    for other_name, other in (compare or {}).items():
        metric_rows.append(
            [
                esc(other_name),
                esc(evaluated_on),
                f"{int(other.get('rows') or 0):,}",
                _num(other.get("auc")),
                _num(_gini(other.get("auc"))),
                _num(other.get("ks")),
                _num(other.get("log_loss"), 4),
            ]
        )
        classes.append("")
        if joint["auc"] is not None and other.get("auc") is not None:
            added = joint["auc"] - other["auc"]
            metric_rows.append(
                [
                    esc(f"What the joint model adds over: {other_name}"),
                    esc(evaluated_on),
                    "",
                    _signed(added),
                    _signed(2 * added),
                    _signed(None if joint["ks"] is None or other.get("ks") is None
                            else joint["ks"] - other["ks"]),
                    "",
                ]
            )  # fmt: skip
            classes.append("gain")
    parts.append("<section id=metrics><h2>Discrimination and calibration</h2>")
    parts.append(
        _table(
            ["Model", "Split", "Clients", "AUC", "Gini", "KS", "Log-loss"],
            metric_rows,
            "metrics-table",
            row_classes=classes,
            text_columns=(0, 1),
        )
    )
    explain = (
        "AUC: the chance that a random bad scores riskier than a random good (0.5 is chance). "
        "KS: the largest gap between the cumulative shares of bads and goods. Log-loss: lower "
        "is better; it also rewards calibrated probabilities."
    )
    if scores.bank_only is None and bank is None:
        explain += (
            " No bank-only model was trained for comparison (train with --compare-bank-only "
            "to see what the bureau adds)."
        )
    parts.append(f"<p class=muted>{esc(explain)}</p>")
    recorded = (model.get("metrics") or {}).get(evaluated_on) or {}
    if (
        recorded.get("auc") is not None
        and joint["auc"] is not None
        and abs(recorded["auc"] - joint["auc"]) > 1e-3
    ):
        parts.append(
            f'<p class="note">model.json records a {esc(evaluated_on)} AUC of '
            f"{_num(recorded['auc'])}, but evaluation.csv gives {_num(joint['auc'])}: the "
            "two files may come from different training runs.</p>"
        )
    parts.append("</section>")

    # -- figures
    figures = 0
    scope = f"{evaluated_on} rows, {len(s.y):,} clients"
    parts.append("<section id=curves><h2>ROC and KS</h2>")
    if both_classes:
        ks = ks_curve(s.y, s.joint)
        roc_alt = "ROC curve: true positive rate against false positive rate for the joint model"
        roc_alt += (
            f" (AUC {_num(joint['auc'])}) and the bank-only model (AUC {_num(bank['auc'])})"
            if s.bank_only is not None and bank is not None
            else f" (AUC {_num(joint['auc'])})"
        )
        parts.append('<div class="pair">')
        parts.append(
            _img(
                _roc_figure(s),
                roc_alt + ", with the diagonal of a random score",
                f"ROC curve ({scope}). The further above the diagonal, the better.",
                "fig-roc",
            )
        )
        parts.append(
            _img(
                _ks_figure(s, ks),
                f"KS curve: cumulative percentages of bads and goods by share of clients "
                f"ranked riskiest first; KS {ks['ks']:.3f} at "
                f"{ks['at_population'] * 100:.0f}% of the population",
                f"KS curve ({scope}). The vertical bar marks the largest gap (the KS).",
                "fig-ks",
            )
        )
        parts.append("</div>")
        figures += 2
    else:
        parts.append(
            '<p class="note">The evaluated rows hold only one class, so there is no ROC or KS '
            "curve to draw.</p>"
        )
    parts.append("</section><section id=distribution><h2>Score distribution</h2>")
    parts.append(
        _img(
            _distribution_figure(s),
            "Score distribution: histograms of the joint model's predicted probability of "
            "default for goods and for bads",
            f"Predicted probability of default for goods and bads ({scope}); each histogram "
            "is scaled to unit area. The less they overlap, the better the separation.",
            "fig-distribution",
        )
    )
    figures += 1
    parts.append("</section><section id=lift><h2>Lift and gain by decile</h2>")
    parts.append(
        f"<p>Clients sorted by the joint model's predicted risk and cut into {len(lift)} "
        f"equal groups; decile 1 is the riskiest. Overall bad rate {_pct(overall_rate)}; "
        "lift is a decile's bad rate over it.</p>"
    )
    parts.append(_lift_section(lift))
    if both_classes:
        parts.append(
            _img(
                _gain_figure(s, lift),
                "Gain chart: cumulative percentage of bads captured against percentage of "
                "clients ranked riskiest first, joint model"
                + (" and bank-only model" if s.bank_only is not None else "")
                + ", with random and perfect lines",
                f"Gain chart ({scope}).",
                "fig-gain",
            )
        )
        figures += 1
    parts.append("</section><section id=iv><h2>Information value of the features</h2>")
    parts.append(_iv_section(iv_rows, iv_path))
    parts.append("</section><section id=history><h2>Training history</h2>")
    if history:
        parts.append(
            _img(
                _history_figure(history, kept if isinstance(kept, int) else None),
                f"Training history: training and validation loss per epoch over "
                f"{len(history)} epochs",
                "Loss per epoch; the kept epoch is the one with the lowest validation loss.",
                "fig-history",
            )
        )
        figures += 1
    else:
        parts.append("<p class=muted>model.json records no training history.</p>")
    settings = model.get("settings") or {}
    if settings:
        shown = [
            ("Seed", settings.get("seed")),
            ("Batch size", settings.get("batch_size")),
            ("Max epochs", settings.get("max_epochs")),
            ("Validation fraction", settings.get("validation_fraction")),
            ("Paillier key bits", settings.get("key_bits")),
            ("Early-stopping patience", settings.get("patience")),
        ]
        optimizer = settings.get("optimizer")
        if isinstance(optimizer, dict):
            shown.append(("Optimizer", ", ".join(f"{k}={v}" for k, v in optimizer.items())))
        parts.append(_facts([(k, str(v)) for k, v in shown if v is not None]))
    if bureau_features:
        parts.append(
            "<p class=muted>Bureau features used: " + esc(", ".join(bureau_features)) + ".</p>"
        )
    parts.append("</section>")
    parts.append(
        f"<footer>Generated {esc(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))} by "
        "bank_node.report from model.json and evaluation.csv. The bureau's features never left "
        "the bureau; all figures are on the bank's own matched clients.</footer>"
    )

    document = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page_title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(document, encoding="utf-8")
    tmp.replace(out)
    summary: dict[str, Any] = {
        "path": str(out),
        "figures": figures,
        "evaluated_on": evaluated_on,
        "rows": len(s.y),
        "auc": joint["auc"],
        "ks": joint["ks"],
        "log_loss": joint["log_loss"],
    }
    if bank is not None:
        summary.update(
            bank_only_auc=bank.get("auc"),
            bank_only_ks=bank.get("ks"),
            auc_gain=None if gain is None else round(gain, 6),
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bank_node.report", description="HTML report of a trained joint model"
    )
    parser.add_argument("model_dir", help="the directory 'bank-node train' wrote")
    parser.add_argument("out", help="the HTML file to write")
    parser.add_argument("--iv-table", help="information-value table (CSV)")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    try:
        summary = build_report(args.model_dir, args.out, args.iv_table, args.title)
    except InputDataError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
