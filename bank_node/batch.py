"""Batch runs (自动跑批): re-score and re-look-up a whole portfolio, compare it with the
previous run, and raise alerts a scheduler can act on.

The first half is the comparison, pure (tables in, alerts and tables out, no I/O): new watch
events, size-class, headcount and registration changes per enterprise, the score-band
migration matrix and the population stability index (PSI) of the score and of each bank
feature. The second half runs a batch: ``run_batch`` takes the portfolio, the model and two
callables (scoring and private lookups) and writes the run directory:

- ``scores.csv``: ID (as given), score, points (when the model has a scorecard), score_band,
  bureau_matched, in the portfolio's row order;
- ``products.csv``: ID (as given), then the products' columns (when products were asked);
- ``portfolio.parquet``: the ID and the model's bank feature columns as read;
- ``alerts.csv``: id (empty for a population alert), kind, severity, detail_zh, detail_en,
  previous, current;
- ``batch.html``: the page (``bank_node.report.batch_page``);
- ``summary.json``: written last, so its presence marks a finished run.

What the bureau learns from a batch run is what it learns from the scoring and lookups the
run makes (nothing else is sent): the comparison runs at the bank, on the bank's files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from node_runtime import tables
from protocols import products as products_codec
from protocols import scorecard
from protocols.errors import InputDataError, ProtocolViolation
from protocols.features import FeatureRecipe, column_kind
from protocols.ids import IdType, normalise_column, prepare_ids
from protocols.size_class import Size

log = logging.getLogger(__name__)

RUN_FORMAT = "xinrong-batch-run/1"
SCORES_FILE, PRODUCTS_FILE, PORTFOLIO_FILE = "scores.csv", "products.csv", "portfolio.parquet"
ALERTS_FILE, PAGE_FILE, SUMMARY_FILE = "alerts.csv", "batch.html", "summary.json"
EXIT_ALERTS = 3  # a scheduler's signal: the run finished and found something

PRODUCTS = products_codec.PRODUCTS
# The decoded columns the comparison reads, with their types (the contract's names). Other
# product columns are carried into products.csv as they come.
DATE_COLUMNS = (
    "watch_abnormal_operations_since",
    "watch_serious_violation_since",
    "watch_tax_arrears_since",
    "watch_last_court_judgement",
    "watch_last_admin_penalty",
    "registration_founded",
    "size_class_data_date",
    "headcount_data_date",
    "watch_data_date",
    "registration_data_date",
)
INT_COLUMNS = (
    "headcount",
    "headcount_change_12m",
    "watch_court_judgements_12m",
    "watch_admin_penalties_12m",
)
COMPARED_COLUMNS = {
    "size_class": ("size_class", "size_class_zh", "size_class_rule"),
    "headcount": ("headcount",),
    "watch": (
        "watch_abnormal_operations_since",
        "watch_serious_violation_since",
        "watch_tax_arrears_since",
        "watch_court_judgements_12m",
        "watch_last_court_judgement",
        "watch_admin_penalties_12m",
        "watch_last_admin_penalty",
    ),
    "registration": ("registration_status",),
}

# products.csv: the products' columns, in the order the codecs decode them
PRODUCT_COLUMNS = {p: tuple(products_codec.columns(p)) for p in PRODUCTS}

SEVERITIES = ("high", "medium", "low")

# -- thresholds and records ------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """When a change is an alert. PSI follows the usual credit-risk reading: below 0.1 no
    significant shift, 0.1 to 0.25 a moderate shift (a medium alert), 0.25 and above a
    significant shift (a high alert)."""

    psi_moderate: float = 0.10
    psi_significant: float = 0.25
    psi_bins: int = 10  # bins at the previous run's quantiles (deciles by default)
    headcount_relative: float = 0.30  # |change| / previous headcount, at least ...
    headcount_absolute: int = 10  # ... and at least this many people
    band_drop: int = 2  # an enterprise alert when its score band worsens this much (0: never)

    def check(self) -> None:
        if not 0 < self.psi_moderate <= self.psi_significant:
            raise InputDataError(
                f"PSI thresholds must satisfy 0 < moderate ({self.psi_moderate}) <= "
                f"significant ({self.psi_significant})"
            )
        if not 2 <= self.psi_bins <= 100:
            raise InputDataError(f"--psi-bins must be between 2 and 100, not {self.psi_bins}")
        if not self.headcount_relative >= 0 or self.headcount_absolute < 0:
            raise InputDataError("headcount thresholds must not be negative")
        if self.band_drop < 0:
            raise InputDataError(f"--band-drop must not be negative, not {self.band_drop}")


@dataclass(frozen=True)
class Alert:
    """One alert: ``id`` is the enterprise's normalised ID, or empty for a population alert
    (a PSI); ``previous`` and ``current`` are the compared values as text."""

    id: str
    kind: str
    detail_zh: str
    detail_en: str
    previous: str
    current: str
    severity: str


ALERT_COLUMNS = ("id", "kind", "severity", "detail_zh", "detail_en", "previous", "current")


@dataclass(frozen=True)
class Note:
    """Something the comparison could not do, and why, in both languages."""

    what: str
    en: str
    zh: str


# -- score bands --------------------------------------------------------------------------------

PD_EDGES = (0.01, 0.02, 0.05, 0.10, 0.20, 0.50)  # probability bands (upper edges excluded)
POINTS_BANDS_EACH_SIDE = 3  # points bands: base score +- 1, 2, 3 PDO


@dataclass(frozen=True)
class Bands:
    """Score bands, riskiest first. ``points``: bands one PDO wide (each a doubling of the
    odds) around the scorecard's base score, e.g. < 450, [450, 500), ..., >= 750 for 600/50;
    ``probability``: PD bands at 1%, 2%, 5%, 10%, 20% and 50%. A value on an edge belongs to
    the band above the edge."""

    kind: str  # "points" or "probability"
    edges: tuple[float, ...]  # ascending, in points or in probability of default
    scaling: scorecard.Scaling | None = None

    @classmethod
    def for_model(cls, model: dict[str, Any]) -> Bands:
        card = model.get("scorecard") or {}
        if not card:
            return cls("probability", PD_EDGES)
        scaling = scorecard.Scaling(card["base_score"], card["pdo"], card["base_odds"])
        k = POINTS_BANDS_EACH_SIDE
        edges = tuple(scaling.base_score + scaling.pdo * i for i in range(-k, k + 1))
        return cls("points", edges, scaling)

    @property
    def labels(self) -> list[str]:
        e = self.edges
        if self.kind == "points":
            inner = [f"[{e[i]:g}, {e[i + 1]:g})" for i in range(len(e) - 1)]
            return [f"< {e[0]:g}", *inner, f">= {e[-1]:g}"]
        inner = [f"[{_pct(e[i])}, {_pct(e[i + 1])})" for i in range(len(e) - 1)]
        return [f">= {_pct(e[-1])}", *reversed(inner), f"< {_pct(e[0])}"]

    def of(self, probability: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        """Band index per row (0 the riskiest), -1 where there is no score."""
        p = np.asarray(probability, dtype=np.float64)
        missing = ~np.isfinite(p)
        if self.kind == "points":
            if points is None:
                assert self.scaling is not None
                with np.errstate(divide="ignore"):
                    points = scorecard.points_of(np.log(p) - np.log1p(-p), self.scaling)
            index = np.searchsorted(np.asarray(self.edges), points, side="right")
        else:
            index = len(self.edges) - np.searchsorted(np.asarray(self.edges), p, side="right")
        return np.where(missing, -1, index).astype(np.int64)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "edges": list(self.edges), "labels": self.labels}


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def migration_matrix(previous: np.ndarray, current: np.ndarray, bands: int) -> np.ndarray:
    """Counts of enterprises by previous band (rows) and current band (columns), for the
    enterprises scored in both runs (band -1 is no score and is left out)."""
    previous, current = np.asarray(previous), np.asarray(current)
    both = (previous >= 0) & (current >= 0)
    matrix = np.zeros((bands, bands), dtype=np.int64)
    np.add.at(matrix, (previous[both], current[both]), 1)
    return matrix


# -- population stability -----------------------------------------------------------------------

PSI_FLOOR = 1e-4  # an empty bin's share, so that its log stays finite


def population_stability(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI = sum over bins of (a - e) x ln(a / e), a and e the bins' shares, an empty bin
    counted as a share of 0.0001. Every term is >= 0 and the sum is symmetric in the two."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs two non-empty count vectors over the same bins")
    e = np.maximum(e / e.sum(), PSI_FLOOR)
    a = np.maximum(a / a.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_bins(previous: np.ndarray, current: np.ndarray, bins: int) -> tuple[list, list]:
    """Counts per bin of both runs: ``bins`` bins at the previous run's quantiles (distinct
    edges only, so ties merge bins; intervals closed on the right, the end bins open), and
    one bin for missing values."""
    prev = np.asarray(previous, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    present = prev[np.isfinite(prev)]
    if present.size:
        edges = np.unique(np.quantile(present, np.arange(1, bins) / bins))
    else:
        edges = np.zeros(0)

    def counts(values: np.ndarray) -> list[int]:
        finite = np.isfinite(values)
        index = np.searchsorted(edges, values[finite], side="left")
        out = np.bincount(index, minlength=len(edges) + 1).tolist()
        return [*out, int((~finite).sum())]

    return counts(prev), counts(cur)


def category_bins(
    previous: pa.Array | pa.ChunkedArray | Sequence[Any],
    current: pa.Array | pa.ChunkedArray | Sequence[Any],
) -> tuple[list, list]:
    """Counts per category of both runs: one bin per value seen in either run (as text), one
    for missing values (null or empty)."""
    before, now = _texts(previous), _texts(current)
    seen = pc.unique(pa.concat_arrays([before, now]).drop_null()).to_pylist()
    levels = pa.array(sorted(v for v in seen if v != ""), pa.string())

    def counts(values: pa.Array) -> list[int]:
        index = pc.index_in(values, value_set=levels).fill_null(len(levels))
        found = np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64)
        return np.bincount(found, minlength=len(levels) + 1).tolist()

    return counts(before), counts(now)


def _texts(values: pa.Array | pa.ChunkedArray | Sequence[Any]) -> pa.Array:
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array([None if v is None else str(v) for v in values], pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pc.cast(values, pa.string())


@dataclass(frozen=True)
class Stability:
    """PSI of one distribution between the runs (``what``: "score" or a bank feature)."""

    what: str
    kind: str  # "score", "numeric" or "category"
    psi: float
    bins: int
    previous_rows: int
    current_rows: int
    previous_median: float | None = None
    current_median: float | None = None

    def level(self, thresholds: Thresholds) -> str:
        if self.psi >= thresholds.psi_significant:
            return "significant"
        return "moderate" if self.psi >= thresholds.psi_moderate else "stable"


def stability_of(
    what: str, kind: str, previous: pa.ChunkedArray, current: pa.ChunkedArray, bins: int
) -> Stability:
    if kind == "category":
        prev_counts, cur_counts = category_bins(previous, current)
        medians: tuple[float | None, float | None] = (None, None)
    else:
        prev_values, cur_values = _floats(previous), _floats(current)
        prev_counts, cur_counts = numeric_bins(prev_values, cur_values, bins)
        medians = (_median(prev_values), _median(cur_values))
    return Stability(
        what,
        kind,
        population_stability(np.array(prev_counts), np.array(cur_counts)),
        len(prev_counts),
        len(previous),
        len(current),
        *medians,
    )


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    values = pc.cast(column, pa.float64())
    out = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64).copy()
    out[~np.isfinite(out)] = np.nan
    return out


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def psi_alert(s: Stability, thresholds: Thresholds) -> Alert | None:
    level = s.level(thresholds)
    if level == "stable":
        return None
    bound = thresholds.psi_significant if level == "significant" else thresholds.psi_moderate
    en_level = "significant" if level == "significant" else "moderate"
    zh_level = "显著" if level == "significant" else "中度"
    if s.kind == "score":
        en_what, zh_what, kind = "the score's distribution", "评分分布", "psi_score"
    else:
        en_what, zh_what, kind = (
            f"bank feature {s.what}",
            f"银行特征 {s.what} 的分布",
            "psi_feature",
        )
    before, now = _number(s.previous_median), _number(s.current_median)
    medians = s.previous_median is not None and s.current_median is not None
    return Alert(
        "",
        kind,
        f"{zh_what}发生{zh_level}偏移：PSI {s.psi:.4f}（≥ {bound:g}）"
        + (f"；中位数 {before} → {now}" if medians else ""),
        f"{en_what} shifted ({en_level}): PSI {s.psi:.4f} (>= {bound:g})"
        + (f"; median {before} → {now}" if medians else ""),
        before,
        now,
        "high" if level == "significant" else "medium",
    )


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# -- per-enterprise changes (tables aligned row by row on the enterprises in both runs) ---------

# lists: (kind, the date it was listed since, severity, English, Chinese)
WATCH_LISTS = (
    (
        "abnormal_operations",
        "watch_abnormal_operations_since",
        "high",
        "on the abnormal-operations list since {d}",
        "{d} 起列入经营异常名录",
    ),
    (
        "serious_violation",
        "watch_serious_violation_since",
        "high",
        "on the serious-violation list since {d}",
        "{d} 起列入严重违法失信名单",
    ),
    ("tax_arrears", "watch_tax_arrears_since", "high", "tax arrears since {d}", "{d} 起欠税"),
)
# events: (kind, 12-month count, date of the last one, severity, English, Chinese)
WATCH_COUNTS = (
    (
        "court_judgement",
        "watch_court_judgements_12m",
        "watch_last_court_judgement",
        "medium",
        "court judgements as defendant in 12 months",
        "近12个月作为被告的裁判文书",
    ),
    (
        "admin_penalty",
        "watch_admin_penalties_12m",
        "watch_last_admin_penalty",
        "medium",
        "administrative penalties in 12 months",
        "近12个月行政处罚",
    ),
)


def _rows(mask: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The positions where a boolean column is true (null counts as false)."""
    return pa.array(np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False)))


def _at(table: pa.Table, name: str, rows: pa.Array) -> list[Any]:
    return table.column(name).take(rows).to_pylist()


def _later(before: pa.ChunkedArray, now: pa.ChunkedArray) -> pa.ChunkedArray:
    """Set now and unset before, or later than before (null where now is unset)."""
    return pc.or_kleene(pc.is_null(before), pc.greater(now, before))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def watch_alerts(ids: Sequence[str], previous: pa.Table, current: pa.Table) -> list[Alert]:
    """New watch events: a list's date that became set or moved later; a 12-month count
    that rose or whose last date moved later (one alert per kind and enterprise)."""
    keys = pa.array(ids, pa.string())
    alerts = []
    for kind, column, severity, en, zh in WATCH_LISTS:
        rows = _rows(
            pc.and_kleene(pc.is_valid(current[column]), _later(previous[column], current[column]))
        )
        for key, before, now in zip(
            keys.take(rows).to_pylist(), _at(previous, column, rows), _at(current, column, rows)
        ):
            alerts.append(
                Alert(
                    key,
                    f"watch_{kind}",
                    zh.format(d=now),
                    en.format(d=now),
                    _text(before),
                    _text(now),
                    severity,
                )
            )
    for kind, count, last, severity, en, zh in WATCH_COUNTS:
        rose = pc.greater(current[count], pc.fill_null(previous[count], 0))
        later = pc.and_kleene(pc.is_valid(current[last]), _later(previous[last], current[last]))
        rows = _rows(pc.or_kleene(pc.fill_null(rose, False), pc.fill_null(later, False)))
        changes = zip(
            keys.take(rows).to_pylist(),
            _at(previous, count, rows),
            _at(current, count, rows),
            _at(previous, last, rows),
            _at(current, last, rows),
        )
        for key, n_before, n_now, d_before, d_now in changes:
            at = f" (last {d_now})" if d_now is not None else ""
            at_zh = f"（最近一次 {d_now}）" if d_now is not None else ""
            change = f"{_text(n_before) or '–'} → {_text(n_now) or '–'}"
            alerts.append(
                Alert(
                    key,
                    f"watch_{kind}",
                    f"{zh}：{change}{at_zh}",
                    f"{en}: {change}{at}",
                    _with_date(n_before, d_before),
                    _with_date(n_now, d_now),
                    severity,
                )
            )
    return alerts


def _with_date(count: Any, date: Any) -> str:
    text = _text(count)
    return f"{text} ({date})" if date is not None else text


def _differs(previous: pa.Table, current: pa.Table, column: str) -> pa.Array:
    """Rows where both runs have a value and the values differ."""
    return _rows(pc.not_equal(previous[column], current[column]))


def _size_zh(size: str | None) -> str | None:
    """The Chinese name of a size class, for a run whose products file had none."""
    try:
        return Size(size).zh if size else size
    except ValueError:
        return size


def size_class_alerts(ids: Sequence[str], previous: pa.Table, current: pa.Table) -> list[Alert]:
    """A size class that changed (both runs having one)."""
    rows = _differs(previous, current, "size_class")
    alerts = []
    changes = zip(
        pa.array(ids, pa.string()).take(rows).to_pylist(),
        _at(previous, "size_class", rows),
        _at(current, "size_class", rows),
        _at(previous, "size_class_zh", rows),
        _at(current, "size_class_zh", rows),
        _at(current, "size_class_rule", rows),
    )
    for key, before, now, before_zh, now_zh, rule in changes:
        why = f" ({rule})" if rule else ""
        alerts.append(
            Alert(
                key,
                "size_class",
                f"企业划型 {before_zh or _size_zh(before)} → {now_zh or _size_zh(now)}"
                + (f"（{rule}）" if rule else ""),
                f"size class {before} → {now}{why}",
                before,
                now,
                "medium",
            )
        )
    return alerts


def headcount_alerts(
    ids: Sequence[str], previous: pa.Table, current: pa.Table, thresholds: Thresholds
) -> list[Alert]:
    """Insured employees that changed by at least the relative and the absolute threshold."""
    before = _floats(previous["headcount"])
    now = _floats(current["headcount"])
    change = now - before  # NaN where either is unknown, and NaN compares false
    with np.errstate(invalid="ignore"):
        big = (np.abs(change) >= thresholds.headcount_absolute) & (
            np.abs(change) >= thresholds.headcount_relative * np.maximum(before, 1)
        )
    alerts = []
    for row in np.flatnonzero(big).tolist():
        was, is_ = int(before[row]), int(now[row])
        share = f"{(is_ - was) / max(was, 1):+.0%}"
        alerts.append(
            Alert(
                ids[row],
                "headcount",
                f"参保人数 {was} → {is_}（{share}）",
                f"insured employees {was} → {is_} ({share})",
                str(was),
                str(is_),
                "medium",
            )
        )
    return alerts


CLOSED_STATUSES = ("注销", "吊销")  # deregistered, licence revoked


def registration_alerts(ids: Sequence[str], previous: pa.Table, current: pa.Table) -> list[Alert]:
    """A registration status that changed; high when the enterprise closed."""
    rows = _differs(previous, current, "registration_status")
    alerts = []
    changes = zip(
        pa.array(ids, pa.string()).take(rows).to_pylist(),
        _at(previous, "registration_status", rows),
        _at(current, "registration_status", rows),
    )
    for key, before, now in changes:
        alerts.append(
            Alert(
                key,
                "registration_status",
                f"登记状态 {before} → {now}",
                f"registration status {before} → {now}",
                before,
                now,
                "high" if now in CLOSED_STATUSES else "medium",
            )
        )
    return alerts


def band_drop_alerts(
    ids: Sequence[str],
    previous: np.ndarray,
    current: np.ndarray,
    labels: Sequence[str],
    thresholds: Thresholds,
) -> list[Alert]:
    """Enterprises whose score band became riskier by at least ``band_drop`` bands."""
    if thresholds.band_drop == 0:
        return []
    riskier = (previous >= 0) & (current >= 0) & (previous - current >= thresholds.band_drop)
    alerts = []
    for row in np.flatnonzero(riskier).tolist():
        before, now = int(previous[row]), int(current[row])
        alerts.append(
            Alert(
                ids[row],
                "score_band",
                f"评分档 {labels[before]} → {labels[now]}（风险上升 {before - now} 档）",
                f"score band {labels[before]} → {labels[now]} ({before - now} bands riskier)",
                labels[before],
                labels[now],
                "medium",
            )
        )
    return alerts


# -- one run, as the comparison reads it ---------------------------------------------------------


@dataclass
class RunData:
    """A run's results keyed by normalised ID (each ID once: its first row), as compared."""

    keys: pa.Array  # strings: the normalised IDs
    probability: np.ndarray
    points: np.ndarray | None
    portfolio: pa.Table  # the bank's feature columns, row by row with keys
    products: pa.Table | None  # the products' columns, row by row with keys
    model_id: str
    products_asked: tuple[str, ...]
    features: tuple[str, ...]
    id_type: str = IdType.USCC.value


@dataclass
class Comparison:
    """What changed between two runs."""

    alerts: list[Alert]
    baseline: bool
    bands: Bands
    migration: np.ndarray | None = None
    stability: list[Stability] = field(default_factory=list)
    common: int = 0
    joined: int = 0
    left: int = 0
    notes: list[Note] = field(default_factory=list)
    compared_products: tuple[str, ...] = ()


def _aligned(previous: RunData, current: RunData) -> tuple[np.ndarray, np.ndarray]:
    """Row positions, in the previous and the current run, of the enterprises in both (in
    the current run's order)."""
    where = pc.index_in(current.keys, value_set=previous.keys)
    present = ~np.asarray(where.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    cur_rows = np.flatnonzero(present)
    prev_rows = where.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)[present]
    return prev_rows, cur_rows


def compare_runs(
    previous: RunData | None, current: RunData, bands: Bands, thresholds: Thresholds
) -> Comparison:
    """Compare a run with the previous one: what is comparable is compared, what is not is
    named in ``notes``. Without a previous run: a baseline, no alerts."""
    if previous is None:
        return Comparison([], True, bands)
    prev_rows, cur_rows = _aligned(previous, current)
    ids = current.keys.take(pa.array(cur_rows)).to_pylist()
    out = Comparison([], False, bands, common=len(cur_rows))
    out.joined = len(current.keys) - len(cur_rows)
    out.left = len(previous.keys) - len(cur_rows)
    if previous.id_type != current.id_type:
        out.notes.append(
            Note(
                "ids",
                f"the previous run read IDs as {previous.id_type}, this one as "
                f"{current.id_type}: enterprises may not match between the runs",
                f"上次跑批的 ID 类型为 {previous.id_type}，本次为 {current.id_type}："
                "两次跑批的企业可能无法对应",
            )
        )
    if previous.model_id == current.model_id:
        _compare_scores(previous, current, prev_rows, cur_rows, ids, thresholds, out)
    else:
        out.notes.append(
            Note(
                "score",
                f"the previous run used model {previous.model_id}, this one "
                f"{current.model_id}: scores, score bands and their PSI are not compared (a "
                "new model's scores are not drift)",
                f"上次跑批使用模型 {previous.model_id}，本次使用 {current.model_id}：不比较评分、"
                "评分档及其 PSI（换模型带来的评分变化不是漂移）",
            )
        )
    _compare_features(previous, current, thresholds, out)
    _compare_products(previous, current, prev_rows, cur_rows, ids, thresholds, out)
    return out


def _compare_scores(
    previous: RunData,
    current: RunData,
    prev_rows: np.ndarray,
    cur_rows: np.ndarray,
    ids: list[str],
    thresholds: Thresholds,
    out: Comparison,
) -> None:
    bands = out.bands
    prev_band = bands.of(previous.probability)[prev_rows]
    cur_points = None if current.points is None else current.points[cur_rows]
    cur_band = bands.of(current.probability[cur_rows], cur_points)
    out.migration = migration_matrix(prev_band, cur_band, len(bands.labels))
    out.alerts += band_drop_alerts(ids, prev_band, cur_band, bands.labels, thresholds)
    score = stability_of(
        "score",
        "score",
        pa.chunked_array([pa.array(previous.probability)]),
        pa.chunked_array([pa.array(current.probability)]),
        thresholds.psi_bins,
    )
    out.stability.append(score)


def _compare_features(
    previous: RunData, current: RunData, thresholds: Thresholds, out: Comparison
) -> None:
    prev_names = set(previous.portfolio.column_names)
    for name in current.features:
        if name not in prev_names:
            out.notes.append(
                Note(
                    name,
                    f"bank feature {name} is not in the previous run's portfolio: no PSI",
                    f"上次跑批的客户数据中没有银行特征 {name}：不计算 PSI",
                )
            )
            continue
        before, now = previous.portfolio.column(name), current.portfolio.column(name)
        kind = column_kind(now.type)
        if column_kind(before.type) != kind:
            kind = "category"  # a column that changed type is compared as text
            before, now = pc.cast(before, pa.string()), pc.cast(now, pa.string())
        out.stability.append(stability_of(name, kind, before, now, thresholds.psi_bins))
    for s in out.stability:
        alert = psi_alert(s, thresholds)
        if alert is not None:
            out.alerts.append(alert)


def _compare_products(
    previous: RunData,
    current: RunData,
    prev_rows: np.ndarray,
    cur_rows: np.ndarray,
    ids: list[str],
    thresholds: Thresholds,
    out: Comparison,
) -> None:
    both = [p for p in current.products_asked if p in previous.products_asked]
    for product in current.products_asked:
        if product not in both:
            out.notes.append(
                Note(
                    product,
                    f"product {product} was not asked in the previous run: nothing to compare",
                    f"上次跑批未查询产品 {product}：无可比较",
                )
            )
    for product in previous.products_asked:
        if product not in current.products_asked:
            out.notes.append(
                Note(
                    product,
                    f"product {product} was asked in the previous run but not in this one",
                    f"上次跑批查询了产品 {product}，本次未查询",
                )
            )
    out.compared_products = tuple(both)
    if not both or previous.products is None or current.products is None:
        return
    before = previous.products.take(pa.array(prev_rows))
    now = current.products.take(pa.array(cur_rows))
    if "watch" in both:
        out.alerts += watch_alerts(ids, before, now)
    if "size_class" in both:
        out.alerts += size_class_alerts(ids, before, now)
    if "headcount" in both:
        out.alerts += headcount_alerts(ids, before, now, thresholds)
    if "registration" in both:
        out.alerts += registration_alerts(ids, before, now)


def alerts_table(alerts: Sequence[Alert]) -> pa.Table:
    """Population alerts first, then by severity, enterprise and kind."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    table = pa.table(
        {name: pa.array([getattr(a, name) for a in alerts], pa.string()) for name in ALERT_COLUMNS}
    )
    order = pa.table(
        {
            "enterprise": pc.not_equal(table["id"], ""),
            "rank": pa.array([rank[a.severity] for a in alerts], pa.int8()),
            "id": table["id"],
            "kind": table["kind"],
        }
    )
    keys = [(name, "ascending") for name in order.column_names]
    return table.take(pc.sort_indices(order, sort_keys=keys))


# == running a batch =============================================================================

Scorer = Callable[[pa.Table], pa.Table]
# look_up(ids, products): ids are the portfolio's distinct valid normalised IDs; the answer
# has one row per ID, in that order, with the contract's columns of the products asked
LookUp = Callable[[list[str], Sequence[str]], pa.Table]
Say = Callable[[str], None]


@dataclass
class Outcome:
    """A finished run: its directory, its alerts and the exit status a scheduler sees."""

    out: Path
    previous: Path | None
    alerts: list[Alert]
    summary: dict[str, Any]

    @property
    def exit_status(self) -> int:
        return EXIT_ALERTS if self.alerts else 0


def check_products(products: Sequence[str]) -> tuple[str, ...]:
    unknown = [p for p in products if p not in PRODUCTS]
    if unknown:
        raise InputDataError(
            f"unknown product {unknown[0]!r}; the products are {', '.join(PRODUCTS)}"
        )
    return tuple(dict.fromkeys(products))


def is_finished_run(directory: Path) -> bool:
    return (directory / SUMMARY_FILE).is_file()


def find_previous(out: str | Path) -> Path | None:
    """The newest sibling directory of ``out`` that holds a finished run (by the time its
    summary records), or None."""
    out = Path(out).resolve()
    parent = out.parent
    if not parent.is_dir():
        return None
    runs = []
    for sibling in parent.iterdir():
        if sibling == out or not sibling.is_dir() or not is_finished_run(sibling):
            continue
        try:
            finished = str(json.loads((sibling / SUMMARY_FILE).read_text())["finished"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a run of ours
        runs.append((finished, sibling.name, sibling))
    return max(runs)[2] if runs else None


def _row_keys(ids: pa.ChunkedArray | pa.Array, id_type: IdType) -> pa.Array:
    """The normalised ID of each row, null where it is invalid."""
    prepared = prepare_ids(ids, id_type)
    keys = normalise_column(ids, id_type)
    if prepared.rejects:
        bad = np.zeros(len(keys), dtype=bool)
        bad[[r.row - 1 for r in prepared.rejects]] = True
        keys = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), keys)
    return keys


def _first_rows(keys: pa.Array) -> np.ndarray:
    """The first row of each distinct non-null key, in order of appearance."""
    distinct = pc.unique(keys.drop_null())
    return pc.index_in(distinct, value_set=keys).to_numpy(zero_copy_only=False).astype(np.int64)


def _typed_products(table: pa.Table) -> pa.Table:
    """The compared columns in their types (dates, integers, text), whatever the source."""
    for i, name in enumerate(table.column_names):
        if name in DATE_COLUMNS:
            wanted: pa.DataType = pa.date32()
        elif name in INT_COLUMNS:
            wanted = pa.int64()
        else:
            continue
        column = table.column(i)
        if column.type != wanted:
            try:
                table = table.set_column(i, name, pc.cast(column, wanted))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputDataError(f"product column {name}: {exc}") from None
    return table


def _read_products(path: Path, id_column: str) -> pa.Table:
    types: dict[str, pa.DataType] = {id_column: pa.string()}
    types |= {name: pa.date32() for name in DATE_COLUMNS}
    types |= {name: pa.int64() for name in INT_COLUMNS}
    header = pacsv.open_csv(path).schema.names
    types |= {n: pa.string() for n in header if n not in types}
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={n: t for n, t in types.items() if n in header},
            strings_can_be_null=True,
        ),
    )


def read_run(directory: str | Path) -> tuple[dict[str, Any], RunData]:
    """A finished run's summary and its results, keyed as the comparison wants them."""
    directory = Path(directory)
    if not is_finished_run(directory):
        raise InputDataError(
            f"{directory}: not a finished batch run (no {SUMMARY_FILE}); name one with "
            "--previous, or leave it out to use the newest run beside --out"
        )
    try:
        summary = json.loads((directory / SUMMARY_FILE).read_text())
        if summary.get("format") != RUN_FORMAT:
            raise InputDataError(f"{directory / SUMMARY_FILE}: not a batch run's summary")
        id_column, id_type = summary["id_column"], IdType(summary["id_type"])
        scores = pacsv.read_csv(
            directory / SCORES_FILE,
            convert_options=pacsv.ConvertOptions(column_types={id_column: pa.string()}),
        )
        portfolio = pq.read_table(directory / PORTFOLIO_FILE)
        products = None
        if summary.get("products"):
            products = _read_products(directory / PRODUCTS_FILE, id_column)
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise InputDataError(f"{directory}: cannot read the previous run: {exc}") from None
    keys = _row_keys(scores.column(id_column), id_type)
    rows = _first_rows(keys)
    take = pa.array(rows)
    points = scores.column("points").to_numpy() if "points" in scores.column_names else None
    return summary, RunData(
        keys=keys.take(take),
        probability=_floats(scores.column("score"))[rows],
        points=None if points is None else np.asarray(points, dtype=np.float64)[rows],
        portfolio=portfolio.take(take),
        products=None if products is None else _typed_products(products).take(take),
        model_id=str(summary["model_id"]),
        products_asked=tuple(summary.get("products") or ()),
        features=tuple(summary.get("features") or ()),
        id_type=id_type.value,
    )


def _check_scored(scored: pa.Table, portfolio: pa.Table, id_column: str) -> None:
    missing = [c for c in ("score", "bureau_matched") if c not in scored.column_names]
    if missing or scored.num_rows != portfolio.num_rows:
        raise ProtocolViolation(
            f"scoring returned {scored.num_rows} rows with columns {scored.column_names} for "
            f"{portfolio.num_rows} portfolio rows (wanted score and bureau_matched per row)"
        )


def _looked_up(look_up: LookUp, keys: list[str], products: tuple[str, ...]) -> pa.Table:
    """The lookup's answer: the contract's columns it has, in their order (the compared ones
    must be there), one row per ID."""
    answer = look_up(keys, products)
    if answer.num_rows != len(keys):
        raise ProtocolViolation(f"the lookup answered {answer.num_rows} rows for {len(keys)} IDs")
    wanted = [c for p in products for c in COMPARED_COLUMNS[p]]
    missing = [c for c in wanted if c not in answer.column_names]
    if missing:
        raise ProtocolViolation(f"the lookup's answer has no column {missing[0]!r}")
    present = [c for p in products for c in PRODUCT_COLUMNS[p] if c in answer.column_names]
    return _typed_products(answer.select(present))


def _scores_table(
    portfolio: pa.Table, scored: pa.Table, id_column: str, bands: Bands
) -> tuple[pa.Table, np.ndarray, np.ndarray | None]:
    probability = _floats(scored.column("score"))
    points = (
        np.asarray(_floats(scored.column("points"))) if "points" in scored.column_names else None
    )
    labels = np.array([*bands.labels, ""], dtype=object)  # -1: no score
    columns: dict[str, Any] = {
        id_column: portfolio.column(id_column),
        "score": pa.array(probability, pa.float64()),
    }
    if points is not None:
        columns["points"] = pa.array(points, pa.float64())
    columns["score_band"] = pa.array(labels[bands.of(probability, points)].tolist(), pa.string())
    columns["bureau_matched"] = pc.cast(scored.column("bureau_matched"), pa.bool_())
    return pa.table(columns), probability, points


@dataclass
class ThisRun:
    """This run's results before the comparison: per portfolio row (as written) and per
    enterprise (as compared)."""

    model: dict[str, Any]
    id_column: str
    portfolio: pa.Table  # the ID and the model's bank features, as read
    keys: pa.Array  # each row's normalised ID, null where invalid
    scores: pa.Table  # scores.csv
    products: pa.Table | None  # products.csv without its ID column
    data: RunData


def score_and_look_up(
    portfolio: pa.Table,
    id_column: str,
    id_type: IdType,
    model: dict[str, Any],
    asked: tuple[str, ...],
    score: Scorer,
    look_up: LookUp | None,
    say: Say,
) -> ThisRun:
    """The portfolio scored (every row) and looked up (each valid ID once)."""
    features = FeatureRecipe.from_json(model["recipe"]).names
    missing = [c for c in [id_column, *features] if c not in portfolio.column_names]
    if missing:
        raise InputDataError(
            f"the portfolio has no column {missing[0]!r}, which "
            + ("is its ID column" if missing[0] == id_column else "the model uses")
        )
    portfolio = portfolio.select([id_column, *features])
    if portfolio.num_rows == 0:
        raise InputDataError("the portfolio has no rows")
    keys = _row_keys(portfolio.column(id_column), id_type)
    first = pa.array(_first_rows(keys))
    say(f"scoring {portfolio.num_rows:,} portfolio rows with model {model['model_id']}")
    scored = score(portfolio)
    _check_scored(scored, portfolio, id_column)
    scores, probability, points = _scores_table(
        portfolio, scored, id_column, Bands.for_model(model)
    )
    product_rows = None
    if asked:
        if look_up is None:
            raise InputDataError("products were asked but no lookup was given")
        distinct = keys.take(first).to_pylist()
        say(f"looking up {', '.join(asked)} for {len(distinct):,} enterprises")
        answer = _looked_up(look_up, distinct, asked)
        # back to the portfolio's rows: each row gets its ID's answer, invalid IDs none
        product_rows = answer.take(pc.index_in(keys, value_set=pa.array(distinct, pa.string())))
    data = RunData(
        keys=keys.take(first),
        probability=probability[first.to_numpy()],
        points=None if points is None else points[first.to_numpy()],
        portfolio=portfolio.take(first),
        products=None if product_rows is None else product_rows.take(first),
        model_id=str(model["model_id"]),
        products_asked=asked,
        features=tuple(features),
        id_type=id_type.value,
    )
    return ThisRun(model, id_column, portfolio, keys, scores, product_rows, data)


def run_batch(
    portfolio: pa.Table,
    id_column: str,
    model_dir: str | Path,
    products: Sequence[str],
    out: str | Path,
    score: Scorer,
    look_up: LookUp | None,
    previous: str | Path | None = None,
    thresholds: Thresholds | None = None,
    id_type: IdType | None = None,
    lang: str = "en",
    say: Say | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> Outcome:
    """Score and look up a portfolio, compare it with the previous run, write the run.

    ``portfolio``: the bank's table (the ID column and at least the model's bank features);
    ``score(table)``: the table scored, one row per row (``score``, ``bureau_matched``, and
    ``points`` when the model has a scorecard); ``look_up(ids, products)``: see ``LookUp``
    (needed when products are asked); ``previous``: a finished run's directory (default:
    the newest finished run beside ``out``; none: a baseline run). Enterprises are matched
    between runs by normalised ID; those in one run only are counted as joined or left.
    Everything is checked before anything is scored or looked up."""
    from bank_node.training import hold_directory, load_model

    started = time.perf_counter()
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    started_at = clock().isoformat(timespec="seconds")
    say = say or (lambda text: log.info("%s", text))
    thresholds = thresholds or Thresholds()
    thresholds.check()
    asked = check_products(products)
    if asked and look_up is None:
        raise InputDataError("products were asked but no lookup was given")
    out = Path(out)
    # until summary.json is written: a second run into the same --out is refused at once
    # (a review's two runs both wrote their files there, the last summary over a mixed run)
    with hold_directory(out, "batch run", "--out"):
        if is_finished_run(out):
            raise InputDataError(
                f"{out} already holds a finished run; give each run its own directory (e.g. "
                "runs/$(date +%Y-%m)) or remove it"
            )
        previous_dir = Path(previous) if previous is not None else find_previous(out)
        before_summary, before = read_run(previous_dir) if previous_dir else (None, None)
        model = load_model(model_dir)
        id_type = id_type or IdType(model["id_type"])
        this = score_and_look_up(portfolio, id_column, id_type, model, asked, score, look_up, say)
        comparison = compare_runs(before, this.data, Bands.for_model(model), thresholds)
        _tell(say, comparison, previous_dir)
        summary = {
            **_summary(this, model_dir, previous_dir, before_summary, comparison, thresholds),
            "lang": lang,
            "started": started_at,
        }
        _write_run(out, this, comparison, summary, thresholds, lang)
        summary["finished"] = clock().isoformat(timespec="seconds")
        summary["seconds"] = round(time.perf_counter() - started, 3)
        # last: its presence marks a finished run
        tables.atomic_write_bytes(
            out / SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False).encode()
        )
        return Outcome(out, previous_dir, comparison.alerts, summary)


def _tell(say: Say, comparison: Comparison, previous_dir: Path | None) -> None:
    if comparison.baseline:
        say("no previous run: this is a baseline run (nothing to compare, no alerts)")
        return
    say(
        f"compared with {previous_dir}: {comparison.common:,} enterprises in both runs, "
        f"{comparison.joined:,} joined, {comparison.left:,} left; "
        f"{len(comparison.alerts):,} alerts"
    )
    for note in comparison.notes:
        say(f"not compared: {note.en}")


def _write_run(
    out: Path,
    this: ThisRun,
    comparison: Comparison,
    summary: dict[str, Any],
    thresholds: Thresholds,
    lang: str,
) -> None:
    """Every file of the run but summary.json (0600 in a 0700 directory: client data)."""
    from bank_node.report.batch_page import write_page

    tables.private_dir(out)
    tables.write_csv(this.scores, out / SCORES_FILE)
    if this.products is not None:
        ids = {this.id_column: this.portfolio.column(this.id_column)}
        products = pa.table({**ids, **dict(zip(this.products.column_names, this.products.columns))})
        tables.write_csv(products, out / PRODUCTS_FILE)
    tables.atomic_write(out / PORTFOLIO_FILE, lambda handle: pq.write_table(this.portfolio, handle))
    tables.write_csv(alerts_table(comparison.alerts), out / ALERTS_FILE)
    write_page(out / PAGE_FILE, summary, comparison, thresholds, lang)


def _summary(
    this: ThisRun,
    model_dir: str | Path,
    previous_dir: Path | None,
    before: dict[str, Any] | None,
    comparison: Comparison,
    thresholds: Thresholds,
) -> dict[str, Any]:
    by_kind: dict[str, int] = {}
    by_severity = dict.fromkeys(SEVERITIES, 0)
    for alert in comparison.alerts:
        by_kind[alert.kind] = by_kind.get(alert.kind, 0) + 1
        by_severity[alert.severity] += 1
    # distinct enterprises, as "enterprises" and PSI count them (a review: rows of repeated
    # IDs made the page's known count disagree with both)
    flags = pc.cast(this.scores.column("bureau_matched"), pa.bool_())
    known = pc.filter(this.keys, pc.and_(flags, pc.is_valid(this.keys)))
    matched = len(pc.unique(known))
    return {
        "format": RUN_FORMAT,
        "model_id": this.model["model_id"],
        "model_dir": str(model_dir),
        "id_column": this.id_column,
        "id_type": this.data.id_type,
        "products": list(this.data.products_asked),
        "features": list(this.data.features),
        "rows": this.portfolio.num_rows,
        "enterprises": len(this.data.keys),
        "invalid_ids": int(this.keys.null_count),
        "bureau_matched": int(matched),
        "bands": comparison.bands.as_dict(),
        "thresholds": asdict(thresholds),
        "previous": None if previous_dir is None else str(previous_dir),
        "previous_model_id": None if before is None else before.get("model_id"),
        "baseline": comparison.baseline,
        "common": comparison.common,
        "joined": comparison.joined,
        "left": comparison.left,
        "compared_products": list(comparison.compared_products),
        "not_compared": [asdict(n) for n in comparison.notes],
        "psi": {
            s.what: {"psi": round(s.psi, 6), "kind": s.kind, "level": s.level(thresholds)}
            for s in comparison.stability
        },
        "migration": None if comparison.migration is None else comparison.migration.tolist(),
        "alerts": len(comparison.alerts),
        "alerts_by_kind": by_kind,
        "alerts_by_severity": by_severity,
        "exit_status": EXIT_ALERTS if comparison.alerts else 0,
        "files": [
            SCORES_FILE,
            *([PRODUCTS_FILE] if this.products is not None else []),
            PORTFOLIO_FILE,
            ALERTS_FILE,
            PAGE_FILE,
            SUMMARY_FILE,
        ],
    }


def batch_job(
    portfolio: str | Path,
    id_column: str,
    model_dir: str | Path,
    out: str | Path,
    bank_id: str,
    bureau: str | None = None,
    products: Sequence[str] = (),
    previous: str | Path | None = None,
    thresholds: Thresholds | None = None,
    id_type: IdType | None = None,
    lang: str = "en",
    tls_dir: str | Path | None = None,
    workers: int | None = None,
    executor_spec: str | None = None,
    quiet: bool = False,
    say: Say | None = None,
    read_options: tables.ReadOptions | None = None,
) -> Outcome:
    """A batch run from the bank's portfolio file, over one connection to the bureau:
    scoring and products by private lookups (the bureau learns how many enterprises, not
    which), each ID evaluated once for both, as ``bank-node predict`` and ``bank-node
    lookup`` do."""
    from bank_node.client import BureauConnection
    from bank_node.lookup import LookupClient, look_up, private_bureau_lookup
    from bank_node.training import as_trained, hold_directory, load_model
    from bank_node.training import score as score_rows
    from node_runtime.parallel import make_executor

    say = say or (lambda text: log.info("%s", text))
    thresholds = thresholds or Thresholds()
    thresholds.check()
    asked = check_products(products)
    model = load_model(model_dir)
    chosen_type = id_type or IdType(model["id_type"])
    recipe = FeatureRecipe.from_json(model["recipe"])
    options = as_trained(read_options, recipe)
    table = tables.read_table(portfolio, id_column, columns=recipe.names, options=options)
    executor = make_executor(workers, executor_spec)
    try:
        with (
            hold_directory(out, "batch run", "--out"),  # before the bureau is asked anything
            BureauConnection(bureau or model["bureau"], bank_id, tls_dir=tls_dir) as link,
            LookupClient(link, say=say, executor=executor).reusing_points() as client,
        ):
            lookup = private_bureau_lookup(link, model, client=client)
            points = bool(model.get("scorecard"))

            def score(rows: pa.Table) -> pa.Table:
                return score_rows(model, rows, id_column, chosen_type, points, lookup).table

            def products_of(ids: list[str], wanted: Sequence[str]) -> pa.Table:
                return look_up(link, ids, wanted, say, client=client)

            return run_batch(
                table,
                id_column,
                model_dir,
                asked,
                out,
                score,
                products_of if asked else None,
                previous=previous,
                thresholds=thresholds,
                id_type=chosen_type,
                lang=lang,
                say=say,
            )
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
