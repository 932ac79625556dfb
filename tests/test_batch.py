"""Batch runs: the comparison on hand-made tables with known answers, PSI and migration
properties, whole runs written to disk, the page in headless Chromium, and two runs of
``bank-node batch`` against a real bureau node on a loopback port."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bank_node import batch
from bank_node.batch import (
    Alert,
    Bands,
    RunData,
    Thresholds,
    category_bins,
    compare_runs,
    migration_matrix,
    numeric_bins,
    population_stability,
    run_batch,
)
from protocols.errors import InputDataError
from protocols.features import FeatureRecipe
from xinrong.synthetic import generate_usccs

D = dt.date

# ============================================================================================
# Known answers
# ============================================================================================


def test_psi_known_answer():
    # shares 0.5/0.5 against 0.25/0.75: 0.25 ln 2 + 0.25 ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert population_stability(np.array([50, 50]), np.array([25, 75])) == pytest.approx(expected)
    # counts, not shares: the same distribution at another size is no shift
    assert population_stability(np.array([10, 30]), np.array([100, 300])) == 0.0
    # an empty bin counts as a share of 0.0001
    expected = (0.5 - 1e-4) * math.log(0.5 / 1e-4) + 0.5 * math.log(1.0 / 0.5)
    assert population_stability(np.array([1, 1]), np.array([0, 2])) == pytest.approx(
        expected, rel=1e-12
    )
    with pytest.raises(ValueError):
        population_stability(np.array([0, 0]), np.array([1, 1]))


def test_numeric_bins_at_the_previous_quantiles():
    previous = np.arange(1.0, 11.0)  # quantiles at 20/40/60/80%: 2.8, 4.6, 6.4, 8.2
    current = np.array([0.0, 2.8, 2.9, 9.0, 100.0, np.nan, np.nan])
    before, now = numeric_bins(previous, current, 5)
    assert before == [2, 2, 2, 2, 2, 0]  # five bins and the missing bin
    assert now == [2, 1, 0, 0, 2, 2]  # 2.8 is in the first bin (closed on the right)
    # ties merge bins: a column that is mostly one value has fewer bins
    before, now = numeric_bins(np.array([0.0] * 9 + [1.0]), np.array([0.0, 1.0]), 10)
    assert before == [9, 0, 1, 0] and now == [1, 0, 1, 0]  # edges 0 and 0.1: three bins


def test_category_bins_cover_both_runs():
    before, now = category_bins(["a", "b", "b", None], ["b", "c", ""])
    assert before == [1, 2, 0, 1] and now == [0, 1, 1, 1]  # a, b, c, missing


def test_probability_and_points_bands():
    bands = Bands("probability", batch.PD_EDGES)
    assert bands.labels == [
        ">= 50%",
        "[20%, 50%)",
        "[10%, 20%)",
        "[5%, 10%)",
        "[2%, 5%)",
        "[1%, 2%)",
        "< 1%",
    ]
    index = bands.of(np.array([0.5, 0.7, 0.2, 0.0099, 0.01, np.nan]))
    assert index.tolist() == [0, 0, 1, 6, 5, -1]
    card = Bands.for_model({"scorecard": {"base_score": 600, "pdo": 50, "base_odds": 20}})
    assert card.kind == "points" and card.labels[0] == "< 450" and card.labels[-1] == ">= 750"
    assert card.labels[1] == "[450, 500)" and len(card.labels) == 8
    points = np.array([449.9, 450.0, 600.0, 750.0])
    assert card.of(np.full(4, 0.1), points).tolist() == [0, 1, 4, 7]
    # without a points column, the points of the probability under the card's scaling
    from protocols import scorecard

    p = scorecard.probability_of(np.array([455.0, 640.0]), card.scaling)
    assert card.of(p).tolist() == [1, 4]


def test_migration_matrix_known_answer():
    before = np.array([0, 0, 1, 2, 2, -1, 1])
    now = np.array([0, 1, 1, 0, 2, 2, -1])
    assert migration_matrix(before, now, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def _aligned(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


WATCH_EMPTY = dict.fromkeys(batch.COMPARED_COLUMNS["watch"])


def test_new_watch_events():
    ids = ["A", "B", "C", "D", "E", "F", "G"]
    before = [
        WATCH_EMPTY,
        {**WATCH_EMPTY, "watch_abnormal_operations_since": D(2025, 1, 1)},
        {
            **WATCH_EMPTY,
            "watch_court_judgements_12m": 1,
            "watch_last_court_judgement": D(2026, 3, 1),
        },
        {
            **WATCH_EMPTY,
            "watch_court_judgements_12m": 2,
            "watch_last_court_judgement": D(2026, 3, 1),
        },
        {**WATCH_EMPTY, "watch_serious_violation_since": D(2024, 5, 5)},
        {**WATCH_EMPTY, "watch_tax_arrears_since": D(2025, 2, 1)},
        {**WATCH_EMPTY, "watch_admin_penalties_12m": 1, "watch_last_admin_penalty": D(2026, 1, 9)},
    ]
    now = [
        {**WATCH_EMPTY, "watch_abnormal_operations_since": D(2026, 11, 3)},  # listed
        {**WATCH_EMPTY, "watch_abnormal_operations_since": D(2025, 1, 1)},  # unchanged
        {  # a new judgement: one alert, not two
            **WATCH_EMPTY,
            "watch_court_judgements_12m": 2,
            "watch_last_court_judgement": D(2026, 11, 20),
        },
        {  # an old one left the 12-month window
            **WATCH_EMPTY,
            "watch_court_judgements_12m": 1,
            "watch_last_court_judgement": D(2026, 3, 1),
        },
        WATCH_EMPTY,  # off the list: good news, no alert
        {**WATCH_EMPTY, "watch_tax_arrears_since": D(2026, 10, 1)},  # back in arrears
        {  # same count, a later penalty (one rolled off, one came)
            **WATCH_EMPTY,
            "watch_admin_penalties_12m": 1,
            "watch_last_admin_penalty": D(2026, 11, 2),
        },
    ]
    alerts = batch.watch_alerts(ids, _aligned(before), _aligned(now))
    got = {(a.id, a.kind, a.severity, a.previous, a.current) for a in alerts}
    assert got == {
        ("A", "watch_abnormal_operations", "high", "", "2026-11-03"),
        ("C", "watch_court_judgement", "medium", "1 (2026-03-01)", "2 (2026-11-20)"),
        ("F", "watch_tax_arrears", "high", "2025-02-01", "2026-10-01"),
        ("G", "watch_admin_penalty", "medium", "1 (2026-01-09)", "1 (2026-11-02)"),
    }
    first = next(a for a in alerts if a.id == "A")
    assert first.detail_zh == "2026-11-03 起列入经营异常名录"
    assert "abnormal-operations list since 2026-11-03" in first.detail_en


def test_size_headcount_and_registration_changes():
    ids = ["A", "B", "C", "D", "E"]
    size_before = _aligned(
        [
            {"size_class": "small", "size_class_zh": "小型", "size_class_rule": None},
            {"size_class": "micro", "size_class_zh": "微型", "size_class_rule": None},
            {"size_class": None, "size_class_zh": None, "size_class_rule": None},
            {"size_class": "large", "size_class_zh": "大型", "size_class_rule": None},
            {"size_class": "medium", "size_class_zh": "中型", "size_class_rule": None},
        ]
    )
    size_now = _aligned(
        [
            {"size_class": "medium", "size_class_zh": "中型", "size_class_rule": "工业: …"},
            {"size_class": "micro", "size_class_zh": "微型", "size_class_rule": "x"},
            {"size_class": "small", "size_class_zh": "小型", "size_class_rule": "x"},
            {"size_class": None, "size_class_zh": None, "size_class_rule": None},
            {"size_class": "medium", "size_class_zh": "中型", "size_class_rule": "x"},
        ]
    )
    sizes = batch.size_class_alerts(ids, size_before, size_now)
    assert [(a.id, a.previous, a.current) for a in sizes] == [("A", "small", "medium")]
    assert sizes[0].detail_zh == "企业划型 小型 → 中型（工业: …）"

    heads_before = _aligned([{"headcount": v} for v in (100, 100, 20, None, 0)])
    heads_now = _aligned([{"headcount": v} for v in (69, 71, 9, 50, 10)])
    heads = batch.headcount_alerts(ids, heads_before, heads_now, Thresholds())
    # A: -31 (31%) yes; B: -29% no; C: -11 (55%) yes; D: unknown before; E: +10 from 0 yes
    assert [(a.id, a.previous, a.current) for a in heads] == [
        ("A", "100", "69"),
        ("C", "20", "9"),
        ("E", "0", "10"),
    ]
    assert heads[0].detail_en == "insured employees 100 → 69 (-31%)"
    looser = Thresholds(headcount_relative=0.25, headcount_absolute=20)
    assert [a.id for a in batch.headcount_alerts(ids, heads_before, heads_now, looser)] == [
        "A",
        "B",
    ]

    status_before = _aligned(
        [{"registration_status": v} for v in ("存续", "在业", "存续", None, "存续")]
    )
    status_now = _aligned(
        [{"registration_status": v} for v in ("注销", "迁出", "存续", "吊销", "吊销")]
    )
    statuses = batch.registration_alerts(ids, status_before, status_now)
    assert [(a.id, a.current, a.severity) for a in statuses] == [
        ("A", "注销", "high"),
        ("B", "迁出", "medium"),
        ("E", "吊销", "high"),
    ]


def test_band_drops_and_psi_alerts():
    labels = ["r0", "r1", "r2", "r3"]
    alerts = batch.band_drop_alerts(
        ["A", "B", "C", "D"], np.array([3, 3, 1, -1]), np.array([1, 2, 3, 0]), labels, Thresholds()
    )
    assert [(a.id, a.previous, a.current) for a in alerts] == [("A", "r3", "r1")]
    assert (
        batch.band_drop_alerts(["A"], np.array([3]), np.array([0]), labels, Thresholds(band_drop=0))
        == []
    )
    t = Thresholds()
    stable = batch.Stability("x", "numeric", 0.05, 11, 10, 10)
    moderate = batch.Stability("x", "numeric", 0.1, 11, 10, 10, 1.0, 2.0)
    significant = batch.Stability("score", "score", 0.3, 11, 10, 10)
    assert batch.psi_alert(stable, t) is None
    medium = batch.psi_alert(moderate, t)
    assert medium is not None and (medium.id, medium.kind, medium.severity) == (
        "",
        "psi_feature",
        "medium",
    )
    assert (medium.previous, medium.current) == ("1", "2")
    assert medium.detail_en.endswith("; median 1 → 2") and "中位数 1 → 2" in medium.detail_zh
    high = batch.psi_alert(significant, t)
    assert high is not None and (high.kind, high.severity) == ("psi_score", "high")
    assert "PSI 0.3000" in high.detail_en and "显著偏移" in high.detail_zh


def _run(keys, probability, portfolio, model_id="m1", products=None, asked=()) -> RunData:
    return RunData(
        keys=pa.array(keys, pa.string()),
        probability=np.asarray(probability, dtype=np.float64),
        points=None,
        portfolio=pa.table(portfolio),
        products=None if products is None else pa.Table.from_pylist(products),
        model_id=model_id,
        products_asked=tuple(asked),
        features=tuple(portfolio),
    )


def test_compare_runs_matches_enterprises_and_names_what_it_cannot_compare():
    bands = Bands("probability", batch.PD_EDGES)
    before = _run(["A", "B", "C"], [0.005, 0.6, 0.03], {"x": [1.0, 2.0, 3.0]})
    now = _run(
        ["D", "C", "A"],
        [0.3, 0.03, 0.25],
        {"x": [1.0, 2.0, 3.0], "region": ["n", "s", "s"]},
        asked=("watch",),
        products=[WATCH_EMPTY] * 3,
    )
    c = compare_runs(before, now, bands, Thresholds())
    assert (c.baseline, c.common, c.joined, c.left) == (False, 2, 1, 1)
    # A moved from "< 1%" (6) to "[20%, 50%)" (1): 5 bands riskier; C stayed at [2%, 5%)
    assert c.migration is not None and c.migration.sum() == 2
    assert c.migration[6, 1] == 1 and c.migration[4, 4] == 1
    drops = [a for a in c.alerts if a.kind == "score_band"]
    assert [(a.id, a.previous, a.current) for a in drops] == [("A", "< 1%", "[20%, 50%)")]
    assert [s.what for s in c.stability] == ["score", "x"]
    noted = {n.what for n in c.notes}
    assert noted == {"region", "watch"}  # a new feature, a product not asked before
    assert c.compared_products == ()

    other_model = _run(["A"], [0.5], {"x": [1.0]}, model_id="m2")
    c = compare_runs(before, other_model, bands, Thresholds())
    assert c.migration is None and [s.what for s in c.stability] == ["x"]
    assert any("model m1" in n.en and "m2" in n.en for n in c.notes)
    assert not any(a.kind in ("psi_score", "score_band") for a in c.alerts)

    baseline = compare_runs(None, now, bands, Thresholds())
    assert baseline.baseline and baseline.alerts == [] and baseline.migration is None


def test_thresholds_are_checked():
    for bad in (
        Thresholds(psi_moderate=0.3, psi_significant=0.2),
        Thresholds(psi_moderate=0),
        Thresholds(psi_bins=1),
        Thresholds(band_drop=-1),
        Thresholds(headcount_absolute=-1),
    ):
        with pytest.raises(InputDataError):
            bad.check()


def test_alerts_table_orders_population_alerts_first():
    alerts = [
        Alert("B", "headcount", "zh", "en", "1", "2", "medium"),
        Alert("A", "watch_tax_arrears", "zh", "en", "", "2026-01-01", "high"),
        Alert("", "psi_feature", "zh", "en", "", "", "medium"),
        Alert("C", "registration_status", "zh", "en", "存续", "注销", "high"),
    ]
    table = batch.alerts_table(alerts)
    assert table.column_names == list(batch.ALERT_COLUMNS)
    assert table.column("id").to_pylist() == ["", "A", "C", "B"]


# ============================================================================================
# Properties
# ============================================================================================

counts = st.lists(st.integers(0, 10_000), min_size=2, max_size=20)


@settings(max_examples=200, deadline=None)
@given(counts, st.integers(1, 50))
def test_psi_is_zero_for_identical_distributions(bins, scale):
    if sum(bins) == 0:
        return
    e = np.array(bins)
    assert population_stability(e, e) == 0.0
    assert population_stability(e, e * scale) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_psi_is_symmetric_and_non_negative(data):
    size = data.draw(st.integers(2, 20))
    pair = st.lists(st.integers(0, 10_000), min_size=size, max_size=size).filter(
        lambda v: sum(v) > 0
    )
    e, a = np.array(data.draw(pair)), np.array(data.draw(pair))
    forward, backward = population_stability(e, a), population_stability(a, e)
    assert forward >= 0
    assert forward == pytest.approx(backward, rel=1e-12, abs=1e-15)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_migration_rows_sum_to_the_previous_bands_of_enterprises_in_both(data):
    bands = data.draw(st.integers(1, 9))
    n = data.draw(st.integers(0, 200))
    band = st.integers(-1, bands - 1)
    before = np.array(data.draw(st.lists(band, min_size=n, max_size=n)), dtype=np.int64)
    now = np.array(data.draw(st.lists(band, min_size=n, max_size=n)), dtype=np.int64)
    matrix = migration_matrix(before, now, bands)
    both = (before >= 0) & (now >= 0)
    assert matrix.sum(axis=1).tolist() == np.bincount(before[both], minlength=bands).tolist()
    assert matrix.sum(axis=0).tolist() == np.bincount(now[both], minlength=bands).tolist()


# ============================================================================================
# Whole runs on disk (scoring through bank_node.training.score, a bureau that knows nobody)
# ============================================================================================

FEATURES = ["balance", "overdue", "region"]
CODES = generate_usccs(1000, np.random.default_rng(1)).astype(str).tolist()


def _portfolio(n: int, seed: int, shift: float = 0.0, ids: list[str] | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    codes = ids or CODES
    return pa.table(
        {
            "uscc": pa.array(codes[:n], pa.string()),
            "balance": rng.lognormal(3 + shift, 1.0, n),
            "overdue": rng.poisson(0.5 + shift, n).astype(np.int64),
            "region": rng.choice(["north", "south", "east"], n).tolist(),
        }
    )


def _model_dir(root: Path, model_id: str = "model-1", card: bool = False) -> Path:
    recipe = FeatureRecipe.fit(_portfolio(400, 0), FEATURES)
    width = len(recipe.outputs)
    rng = np.random.default_rng(3)
    model = {
        "format": "xinrong-bank-model/1",
        "model_id": model_id,
        "bureau": "127.0.0.1:1",
        "id_column": "uscc",
        "id_type": "uscc",
        "recipe": recipe.to_json(),
        "weights": [-2.5, *rng.normal(0, 0.6, width).tolist()],
        "neutral_bureau_score": 0.1,
        "calibration": {"slope": 1.0, "intercept": 0.0},
    }
    if card:
        model["scorecard"] = {"base_score": 600.0, "pdo": 50.0, "base_odds": 20.0}
    directory = root / model_id
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.json").write_text(json.dumps(model))
    return directory


def _scorer(model_dir: Path):
    """``bank_node.training.score`` with a bureau that knows none of the IDs (each row then
    gets the model's neutral bureau score): the bank's half is scored for real."""
    from bank_node.training import load_model, score

    model = load_model(model_dir)

    def nobody(ids):
        return [], np.zeros(0), ([], np.zeros((0, 0), np.uint8))

    def scorer(table: pa.Table) -> pa.Table:
        from protocols.ids import IdType

        return score(model, table, "uscc", IdType.USCC, bool(model.get("scorecard")), nobody).table

    return scorer


def _read(path: Path) -> pa.Table:
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={"uscc": pa.string(), "id": pa.string(), "previous": pa.string(),
                          "current": pa.string()},
            strings_can_be_null=False,
        ),
    )  # fmt: skip


FIXED = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


def test_baseline_then_a_shifted_run(tmp_path):
    model_dir = _model_dir(tmp_path, card=True)
    runs = tmp_path / "runs"
    first = run_batch(
        _portfolio(600, 1), "uscc", model_dir, (), runs / "2026-11", _scorer(model_dir), None
    )
    assert first.exit_status == 0 and first.alerts == [] and first.previous is None
    summary = json.loads((runs / "2026-11" / "summary.json").read_text())
    assert summary["baseline"] and summary["exit_status"] == 0 and summary["rows"] == 600
    assert summary["bands"]["kind"] == "points"
    scores = _read(runs / "2026-11" / "scores.csv")
    assert scores.column_names == ["uscc", "score", "points", "score_band", "bureau_matched"]
    assert set(scores.column("score_band").to_pylist()) <= set(Bands.for_model(
        {"scorecard": {"base_score": 600, "pdo": 50, "base_odds": 20}}).labels)  # fmt: skip
    assert _read(runs / "2026-11" / "alerts.csv").num_rows == 0
    page = (runs / "2026-11" / "batch.html").read_text()
    assert 'id="baseline"' in page and "id=no-migration" in page

    # the same portfolio again: nothing moved
    same = run_batch(
        _portfolio(600, 1), "uscc", model_dir, (), runs / "2026-11b", _scorer(model_dir), None
    )
    assert same.previous == (runs / "2026-11").resolve() or same.previous == runs / "2026-11"
    assert same.exit_status == 0 and same.alerts == []
    assert same.summary["psi"]["score"]["psi"] == 0.0

    # a month later: balances tripled, more overdue, 100 clients left and 50 joined
    shifted = _portfolio(550, 2, shift=1.0, ids=CODES[100:650])
    outcome = run_batch(
        shifted,
        "uscc",
        model_dir,
        (),
        runs / "2026-12",
        _scorer(model_dir),
        None,
        previous=runs / "2026-11",
    )
    assert outcome.exit_status == 3
    s = outcome.summary
    assert (s["common"], s["joined"], s["left"]) == (500, 50, 100)
    assert s["psi"]["balance"]["level"] == "significant"
    assert s["psi"]["region"]["level"] == "stable"  # drawn the same way
    alerts = _read(runs / "2026-12" / "alerts.csv")
    rows = alerts.to_pylist()
    assert {(r["id"], r["kind"]) for r in rows if r["kind"] == "psi_feature"} == {
        ("", "psi_feature")
    }
    assert any("balance" in r["detail_en"] and r["severity"] == "high" for r in rows)
    assert len(s["migration"]) == 8 and sum(map(sum, s["migration"])) == 500
    assert s["alerts"] == len(rows) == len(outcome.alerts)
    # summary.json marks a finished run: a second run into it is refused
    with pytest.raises(InputDataError, match="already holds a finished run"):
        run_batch(shifted, "uscc", model_dir, (), runs / "2026-12", _scorer(model_dir), None)


def test_the_default_previous_is_the_newest_finished_sibling(tmp_path):
    model_dir = _model_dir(tmp_path)
    runs = tmp_path / "runs"
    times = iter([FIXED, FIXED, FIXED + dt.timedelta(days=31), FIXED + dt.timedelta(days=31)])
    for name in ("b-older", "a-newer"):  # names sort the other way round
        run_batch(
            _portfolio(300, 1),
            "uscc",
            model_dir,
            (),
            runs / name,
            _scorer(model_dir),
            None,
            now=lambda: next(times),
        )
    (runs / "unfinished").mkdir()  # no summary.json: not a run
    (runs / "unfinished" / "scores.csv").write_text("uscc,score\n")
    assert batch.find_previous(runs / "next") == runs / "a-newer"
    with pytest.raises(InputDataError, match="not a finished batch run"):
        run_batch(
            _portfolio(300, 1),
            "uscc",
            model_dir,
            (),
            runs / "next",
            _scorer(model_dir),
            None,
            previous=runs / "unfinished",
        )


def test_a_previous_run_with_another_model_and_other_products(tmp_path):
    first_model, second_model = _model_dir(tmp_path, "model-1"), _model_dir(tmp_path, "model-2")
    runs = tmp_path / "runs"
    portfolio = _portfolio(300, 1)
    ids = [batch.normalise_column(portfolio.column("uscc"), batch.IdType.USCC)[i].as_py()
           for i in range(300)]  # fmt: skip
    registration = {"registration_status": "存续"}

    def registry(changes: dict[str, str]):
        def look_up(keys, products):
            assert keys == ids and tuple(products) == ("registration",)
            return pa.Table.from_pylist(
                [{"registration_status": changes.get(k, "存续")} for k in keys]
            )

        return look_up

    run_batch(
        portfolio,
        "uscc",
        first_model,
        ("registration",),
        runs / "1",
        _scorer(first_model),
        registry({}),
    )
    products = _read(runs / "1" / "products.csv")
    assert products.column_names == ["uscc", "registration_status"]
    assert products.column("uscc").to_pylist() == portfolio.column("uscc").to_pylist()
    outcome = run_batch(
        portfolio,
        "uscc",
        second_model,
        ("registration", "watch"),
        runs / "2",
        _scorer(second_model),
        lambda keys, products: pa.Table.from_pylist(
            [
                {**WATCH_EMPTY, **registration}
                if k != ids[7]
                else {**WATCH_EMPTY, "registration_status": "吊销"}
                for k in keys
            ]
        ),
    )
    kinds = {(a.id, a.kind, a.severity) for a in outcome.alerts}
    assert kinds == {(ids[7], "registration_status", "high")}
    notes = outcome.summary["not_compared"]
    assert {n["what"] for n in notes} == {"score", "watch"}
    assert "psi" in outcome.summary and "score" not in outcome.summary["psi"]
    assert outcome.summary["compared_products"] == ["registration"]
    page = (runs / "2" / "batch.html").read_text()
    assert 'id="not-compared"' in page and "model-1" in page


def test_products_csv_has_the_contract_columns_in_order(tmp_path):
    model_dir = _model_dir(tmp_path)
    portfolio = _portfolio(20, 1)
    # two invalid IDs and a duplicate: the bureau is asked about each valid ID once
    ids = portfolio.column("uscc").to_pylist()
    ids[3], ids[4], ids[5] = "not-a-code", None, ids[0].lower()
    portfolio = portfolio.set_column(0, "uscc", pa.array(ids, pa.string()))
    asked: list[list[str]] = []

    def look_up(keys, products):
        asked.append(keys)
        rows = [
            {
                "extra": "dropped",
                "headcount_data_date": "2026-11-30",
                "headcount": 10 + i,
                "headcount_band": "10-19人",
                "headcount_change_12m": None,
            }
            for i, _ in enumerate(keys)
        ]
        return pa.Table.from_pylist(rows)

    run_batch(portfolio, "uscc", model_dir, ("headcount",), tmp_path / "r", _scorer(model_dir),
              look_up)  # fmt: skip
    assert len(asked[0]) == 17 and ids[0] in asked[0]
    products = _read(tmp_path / "r" / "products.csv")
    assert products.column_names == ["uscc", *batch.PRODUCT_COLUMNS["headcount"]]
    assert products.column("uscc").to_pylist() == [v or "" for v in ids]
    heads = products.column("headcount").to_pylist()
    assert heads[3] is None and heads[4] is None and heads[5] == heads[0] == 10
    assert str(products.column("headcount_data_date")[0]) == "2026-11-30"


def test_bad_inputs(tmp_path):
    model_dir = _model_dir(tmp_path)
    scorer = _scorer(model_dir)
    with pytest.raises(InputDataError, match="unknown product 'credit'"):
        run_batch(_portfolio(10, 1), "uscc", model_dir, ("credit",), tmp_path / "r", scorer, None)
    with pytest.raises(InputDataError, match="no lookup"):
        run_batch(_portfolio(10, 1), "uscc", model_dir, ("watch",), tmp_path / "r", scorer, None)
    with pytest.raises(InputDataError, match="'balance', which the model uses"):
        run_batch(
            _portfolio(10, 1).drop_columns(["balance"]),
            "uscc",
            model_dir,
            (),
            tmp_path / "r",
            scorer,
            None,
        )
    assert not (tmp_path / "r" / "summary.json").exists()


# ============================================================================================
# The page
# ============================================================================================


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("page")
    model_dir = _model_dir(root, card=True)
    portfolio = _portfolio(500, 1)
    keys = batch.normalise_column(portfolio.column("uscc"), batch.IdType.USCC).to_pylist()

    def watch(listed: set[str]):
        def look_up(ids, products):
            return pa.Table.from_pylist(
                [
                    {**WATCH_EMPTY, "watch_abnormal_operations_since": D(2026, 11, 3)}
                    if k in listed
                    else WATCH_EMPTY
                    for k in ids
                ]
            )

        return look_up

    run_batch(
        portfolio, "uscc", model_dir, ("watch",), root / "runs" / "1", _scorer(model_dir),
        watch({keys[0]}),
    )  # fmt: skip
    for lang in ("en", "zh"):
        run_batch(
            _portfolio(500, 2, shift=0.8, ids=portfolio.column("uscc").to_pylist()),
            "uscc",
            model_dir,
            ("watch",),
            root / "runs" / f"2-{lang}",
            _scorer(model_dir),
            watch(set(keys[:3])),
            previous=root / "runs" / "1",
            lang=lang,
        )
    return root / "runs"


def test_page_is_self_contained_and_lists_the_alerts(two_runs):
    summary = json.loads((two_runs / "2-en" / "summary.json").read_text())
    page = (two_runs / "2-en" / "batch.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    # listed since the same date in both runs (read back from products.csv): no new event
    assert summary["alerts_by_kind"]["watch_abnormal_operations"] == 2
    zh = (two_runs / "2-zh" / "batch.html").read_text(encoding="utf-8")
    assert "<html lang=zh-Hans>" in zh
    for term in ("经营异常名录", "评分档迁移矩阵", "群体稳定性指数", "显著偏移"):
        assert term in zh, term
    assert "Score-band migration" not in zh


def test_every_batch_page_text_has_a_chinese_translation():
    from bank_node.report.batch_page import EN, KIND_EN, ZH

    assert set(EN) <= set(ZH) and set(KIND_EN) <= set(ZH)


def _browser_path() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_renders_in_chromium(two_runs, lang):
    browser_path = _browser_path()
    if browser_path is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium) to render the page")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    summary = json.loads((two_runs / f"2-{lang}" / "summary.json").read_text())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((two_runs / f"2-{lang}" / "batch.html").as_uri(), wait_until="load")
            assert page.locator("#alerts-table tbody tr").count() == summary["alerts"]
            labels = summary["bands"]["labels"]
            matrix = page.locator("#migration-table tbody tr")
            assert matrix.count() == len(labels) + 1  # and the totals
            total = matrix.last.inner_text().split()[-1]
            assert total == f"{sum(map(sum, summary['migration'])):,}" == "500"
            assert page.locator("#psi-table tbody tr").count() == len(summary["psi"])
            psi_text = page.locator("#psi-table").inner_text()
            assert f"{summary['psi']['balance']['psi']:.4f}" in psi_text
            if lang == "zh":
                from test_report import _unrendered_characters

                assert "经营异常名录" in page.locator("#alerts-table").inner_text()
                assert _unrendered_characters(page) == []
            else:
                assert "abnormal-operations list" in page.locator("#alerts-table").inner_text()
        finally:
            browser.close()


# ============================================================================================
# Two batch runs of the command line against a real bureau node on a loopback port
# ============================================================================================


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from bank_node.training import train_job
    from bureau_node.server import BureauNode
    from protocols import vertical_lr as vlr
    from xinrong.synthetic import generate_city, write_city

    root = tmp_path_factory.mktemp("served")
    paths = write_city(generate_city(3000, 1200, seed=3, graph=False), root / "city")
    node = BureauNode(
        paths["bureau"],
        "uscc",
        root / "state",
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
    )
    node.start("127.0.0.1:0")
    model_dir = root / "model"
    train_job(
        f"127.0.0.1:{node.port}",
        paths["bank"],
        "uscc",
        "y",
        model_dir,
        "demo-bank",
        epochs=3,
        seed=1,
        key_bits=768,
        allow_test_keys=True,
        workers=0,
        quiet=True,
    )
    yield {"paths": paths, "address": f"127.0.0.1:{node.port}", "model": model_dir, "root": root}
    node.stop()


def _bank_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bank_node.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_two_batch_runs_against_a_bureau_node(served):
    root, model = served["root"], served["model"]
    clients = pacsv.read_csv(
        served["paths"]["bank"],
        convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()}),
    ).drop_columns(["y"])
    november, december = root / "november.csv", root / "december.csv"
    pacsv.write_csv(clients, november)
    # a month later the bank's balances have tripled: its feature has drifted
    balance = clients.column_names.index("avg_balance_6m_10k_cny")
    tripled = pa.compute.multiply(clients.column(balance), 3.0)
    pacsv.write_csv(clients.set_column(balance, "avg_balance_6m_10k_cny", tripled), december)
    common = ["--insecure", "--bureau", served["address"], "--id-column", "uscc"]
    common += ["--model-dir", str(model), "--workers", "0", "--json"]
    runs = root / "runs"

    first = _bank_cli(
        "batch", *common, "--portfolio", str(november), "--out", str(runs / "2026-11")
    )
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["baseline"] and result["alerts"] == 0 and result["exit_status"] == 0
    assert result["rows"] == clients.num_rows and result["bureau_matched"] > 800
    assert result["bands"]["kind"] == "probability"  # the model has no scorecard

    second = _bank_cli(
        "batch", *common, "--portfolio", str(december), "--out", str(runs / "2026-12")
    )
    assert second.returncode == 3, second.stderr
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["previous"] == str(runs / "2026-11")  # the newest finished sibling
    assert not result["baseline"] and result["joined"] == result["left"] == 0
    assert result["psi"]["avg_balance_6m_10k_cny"]["level"] == "significant"
    for name in ("account_age_months", "overdue_count_12m", "credit_utilization"):
        assert result["psi"][name]["psi"] == 0.0  # the other columns did not move
    alerts = _read(runs / "2026-12" / "alerts.csv").to_pylist()
    shifted = [a for a in alerts if a["kind"] == "psi_feature"]
    assert len(shifted) == 1 and shifted[0]["id"] == "" and shifted[0]["severity"] == "high"
    assert "avg_balance_6m_10k_cny" in shifted[0]["detail_en"]
    assert len(alerts) == result["alerts"] > 0
    # both runs scored every client; the matrix counts the enterprises in both runs
    assert sum(map(sum, result["migration"])) == result["common"] == result["enterprises"]
    scores = _read(runs / "2026-12" / "scores.csv")
    assert scores.column("uscc").to_pylist() == clients.column("uscc").to_pylist()
    flags = scores["bureau_matched"].to_pylist()
    known = {u for u, m in zip(scores["uscc"].to_pylist(), flags, strict=True) if m}
    assert len(known) == result["bureau_matched"]  # enterprises, as PSI counts them
    for name in ("scores.csv", "portfolio.parquet", "alerts.csv", "batch.html", "summary.json"):
        assert ((runs / "2026-12" / name).stat().st_mode & 0o777) == 0o600, name

    # products this bureau does not serve (it has no registry file): a clear refusal
    refused = _bank_cli(
        "batch", *common, "--portfolio", str(november), "--out", str(runs / "x"),
        "--products", "watch",
    )  # fmt: skip
    assert refused.returncode == 2
    assert "no table 'watch'" in refused.stderr and not (runs / "x").exists()
    again = _bank_cli(
        "batch", *common, "--portfolio", str(november), "--out", str(runs / "2026-12")
    )
    assert again.returncode == 2 and "already holds a finished run" in again.stderr


def test_size_class_changes_read_in_chinese_on_the_chinese_page():
    """A review's Chinese batch page showed size classes as micro/small: a run whose
    products file had no size_class_zh column, and the previous/current columns."""
    from bank_node.report.batch_page import _value

    empty = pa.array([None, None], pa.string())
    before = pa.table({"size_class": ["micro", "small"], "size_class_zh": empty})
    after = pa.table(
        {"size_class": ["small", "small"], "size_class_zh": empty, "size_class_rule": empty}
    )
    (alert,) = batch.size_class_alerts(["a", "b"], before, after)
    assert alert.detail_zh == "企业划型 微型 → 小型"
    row = {"kind": "size_class", "previous": "micro", "current": "small"}
    assert (_value(row, "previous", "zh"), _value(row, "current", "zh")) == ("微型", "小型")
    assert _value(row, "previous", "en") == "micro"


def test_a_second_batch_run_into_the_same_out_is_refused_while_the_first_runs(
    tmp_path, held_elsewhere
):
    """A review started two `bank-node batch` runs into one --out at once: both wrote their
    files there and both ended well, the last summary.json over a mix of the two runs. The
    second is refused at once, before anything is scored, and says why; once the first has
    ended, the directory can be used."""
    model_dir = _model_dir(tmp_path)
    out = tmp_path / "runs" / "2027-01"
    scored: list[int] = []

    def scorer(table: pa.Table) -> pa.Table:
        scored.append(table.num_rows)
        return _scorer(model_dir)(table)

    portfolio = tmp_path / "portfolio.csv"
    pacsv.write_csv(_portfolio(300, 1), portfolio)
    release = held_elsewhere(out, "batch run", "--out")
    try:
        with pytest.raises(InputDataError, match=r"is in use by another batch run \(pid \d+\)"):
            run_batch(_portfolio(300, 1), "uscc", model_dir, (), out, scorer, None)
        # `bank-node batch`: refused before the bureau (none listens here) is asked anything
        with pytest.raises(InputDataError, match=f"{out} is in use by another batch run"):
            batch.batch_job(portfolio, "uscc", model_dir, out, "bank-a", "127.0.0.1:1")
        assert scored == [] and not (out / "summary.json").exists()
    finally:
        release()
    first = run_batch(_portfolio(300, 1), "uscc", model_dir, (), out, scorer, None)
    assert first.exit_status == 0 and (out / "summary.json").exists()
