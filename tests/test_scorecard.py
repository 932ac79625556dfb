"""Scorecards: points per bin add up to offset - factor x log-odds for rows that sit on the
bins' representative values, and stay close for everyone else."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from protocols.errors import InputDataError, ProtocolViolation
from protocols.features import FeatureRecipe, column_layout
from protocols.scorecard import Scaling, points_table, row_points


def _recipe():
    rng = np.random.default_rng(4)
    train = pa.table(
        {
            "income": pa.array(np.where(rng.random(500) < 0.1, np.nan, rng.lognormal(3, 1, 500))),
            "sector": pa.array(rng.choice(["a", "b", "c"], 500).tolist()),
        }
    )
    return FeatureRecipe.fit(train, ["income", "sector"]), train


def test_the_scaling_follows_the_definition():
    s = Scaling(600, 50, 20)
    assert s.factor == pytest.approx(50 / math.log(2))
    # odds 20:1 -> 600 points; doubling the odds -> 50 more
    assert s.offset + s.factor * math.log(20) == pytest.approx(600)
    assert s.offset + s.factor * math.log(40) == pytest.approx(650)
    with pytest.raises(ProtocolViolation, match="pdo"):
        Scaling(600, 0, 20).check()


def test_points_equal_the_model_on_representative_rows():
    recipe, train = _recipe()
    weights = np.array([0.8, -0.3, 0.2, -0.1, 0.05, 0.0])[: len(recipe.outputs)]
    scaling = Scaling()
    table = points_table(recipe, weights, scaling)
    income = recipe.columns[0]
    assert [p["feature"] for p in table].count("income") == len(income.bin_values) + 1  # missing
    # a row at each income bin's median and a known sector: points = -factor * (x @ w)
    rows = pa.table(
        {
            "income": pa.array(income.bin_values, pa.float64()),
            "sector": pa.array(["b"] * len(income.bin_values)),
        }
    )
    exact = -scaling.factor * (recipe.transform(rows) @ weights)
    np.testing.assert_allclose(row_points(rows, recipe, table), exact, atol=0.02)
    # everyone else: close to the exact value (binning is an approximation)
    approx = row_points(train, recipe, table)
    exact_all = -scaling.factor * (recipe.transform(train) @ weights)
    assert np.corrcoef(approx, exact_all)[0, 1] > 0.9


def test_models_without_bins_are_a_clear_error():
    recipe, _ = _recipe()
    recipe.columns[0].bin_values = []
    with pytest.raises(InputDataError, match="train the model again"):
        points_table(recipe, np.zeros(len(recipe.outputs)), Scaling())


def test_the_bureaus_outputs_and_bins_follow_its_whole_table_not_the_rows():
    """Two sessions that differ in one enterprise (missing its income, in a sector of its
    own) get the same columns and the same scorecard bins from the bureau's layouts; fitted
    on the rows alone, the odd one out adds a missing flag and a level."""
    rng = np.random.default_rng(3)
    income = [float(v) for v in rng.normal(100, 20, 400)] + [None]
    sector = ["retail", "trade"] * 200 + ["mining"]
    whole = pa.table({"income": income, "sector": sector})
    layouts = {name: column_layout(whole.column(name)) for name in whole.column_names}
    names = ["income", "sector"]
    without, with_target = whole.slice(0, 150), whole.take(list(range(149)) + [400])
    plain = [FeatureRecipe.fit(t, names) for t in (without, with_target)]
    assert plain[0].outputs != plain[1].outputs  # the leak the layouts close
    fitted = [FeatureRecipe.fit(t, names, layouts) for t in (without, with_target)]
    assert fitted[0].outputs == fitted[1].outputs
    # the missing flag: the table has a missing income; "mining", one row in 401, is rare
    assert fitted[0].outputs == [
        "income",
        "income[missing]",
        "sector=retail",
        "sector=trade",
        "sector=__other__",
    ]
    assert [c.bin_edges for c in fitted[0].columns] == [c.bin_edges for c in fitted[1].columns]
    assert fitted[0].columns[0].bin_edges == list(layouts["income"].edges)


def test_a_bin_without_training_rows_takes_the_whole_tables_median():
    """With the bins from the whole table, a session's values can leave a middle bin empty;
    its points are then those of the whole table's median there, not of the training
    minimum (which gave 4 or 5 court judgements the points of none)."""
    whole = pa.table({"judgements": [float(v % 10) for v in range(1000)]})
    layout = column_layout(whole.column("judgements"))
    train = pa.table({"judgements": [float(v) for v in [0, 1, 2, 7, 8, 9] * 50]})
    column = FeatureRecipe.fit(train, ["judgements"], {"judgements": layout}).columns[0]
    where = int(np.searchsorted(np.array(column.bin_edges), 4.5, side="right"))
    assert 4.0 <= column.bin_values[where] <= 5.0
    assert column.bin_values[0] == 0.0 and column.bin_values[-1] == 9.0


def test_exposure_and_varying_name_features_that_leave_the_score_to_one_other():
    """Where the enterprises of a group share every feature but one, a linear score is an
    affine function of that one (FeatureRecipe.exposure); a feature constant on the training
    rows varies nowhere there (FeatureRecipe.varying)."""
    n = 1000
    rng = np.random.default_rng(3)
    missing = np.arange(n) < 600  # 60% file no statements
    table = pa.table(
        {
            "court": rng.integers(0, 4, n).astype(float),
            "assets": np.where(missing, np.nan, rng.lognormal(3, 1, n)),
            "debt": np.where(missing, np.nan, rng.uniform(0, 1, n)),
            "capital": rng.lognormal(4, 1, n),
            "age": rng.uniform(0, 30, n),
        }
    )
    narrow = FeatureRecipe.fit(table, ["court", "assets", "debt"])
    exposure = narrow.exposure(table)
    assert exposure["court"] == pytest.approx(0.6) and exposure["assets"] == 0.0
    wide = FeatureRecipe.fit(table, ["court", "assets", "debt", "capital", "age"])
    assert max(wide.exposure(table).values()) < 0.01  # capital and age vary everywhere
    # not only the commonest values: any group that shares the others (public categories)
    categories = table.append_column("industry", pa.array([f"i{i % 7}" for i in range(n)]))
    categories = categories.append_column("form", pa.array([f"f{i % 3}" for i in range(n)]))
    public = FeatureRecipe.fit(categories, ["court", "industry", "form"])
    assert public.exposure(categories)["court"] > 0.99
    inputs = narrow.transform(table.slice(0, 600))  # the non-filers only
    assert narrow.varying(inputs, 0.01) == {"court"}


def _exact_points_exposure(recipe: FeatureRecipe, table: pa.Table) -> dict[str, float]:
    """Exposure by grouping on the bins themselves (Arrow's group-by on every other
    feature's bin column)."""
    from protocols.scorecard import _bin_of_rows

    pc = pa.compute
    names = table.column_names
    bins = {n: _bin_of_rows(recipe.columns[k], table.column(n)) for k, n in enumerate(names)}
    exact = {}
    for name in names:
        others = [o for o in names if o != name]
        groups = (
            pa.table({**{o: bins[o] for o in others}, "own": bins[name]})
            .group_by(others)
            .aggregate([("own", "count"), ("own", "count_distinct")])
        )
        wide = pc.and_(
            pc.greater_equal(groups["own_count"], 10), pc.greater(groups["own_count_distinct"], 1)
        )
        exact[name] = (pc.sum(groups.filter(wide)["own_count"]).as_py() or 0) / table.num_rows
    return exact


def test_exposure_from_one_hash_per_row_groups_exactly_as_the_bins_do():
    """Exposure from one 64-bit hash per row (``features.exposure_of``, here over the
    scorecard's bins of each row) equals grouping on the bins themselves. A review found
    the hash built from doubles' bits put 39,763 distinct bin tuples of 40,000 rows into
    21,280 values (small whole numbers as doubles differ only in their top bits): exposure
    overstated 2-3 times, and honest models refused."""
    from protocols.features import exposure_of, row_hashes
    from protocols.scorecard import _bin_of_rows

    def points_exposure(recipe: FeatureRecipe, table: pa.Table) -> dict[str, float]:
        return exposure_of(
            recipe.names,
            lambda k: row_hashes(_bin_of_rows(recipe.columns[k], table.column(recipe.names[k]))),
            table.num_rows,
            frozenset(),
        )

    rng = np.random.default_rng(4)
    rows = 40_000
    numbers = {f"n{j}": np.round(rng.exponential(50, rows), 1) for j in range(6)}
    flags = {f"k{j}": rng.integers(0, 4, rows).astype(float) for j in range(6)}
    wide = pa.table({**numbers, **flags})  # groups of one: nothing exposed, many tuples
    narrow = pa.table({"n0": numbers["n0"], "k0": flags["k0"], "k1": flags["k1"]})
    for table in (wide, narrow):
        names = table.column_names
        layouts = {n: column_layout(table.column(n)) for n in names}
        recipe = FeatureRecipe.fit(table.slice(0, 4000), names, layouts)
        exact = _exact_points_exposure(recipe, table)
        assert points_exposure(recipe, table) == pytest.approx(exact, abs=1e-12)
    assert max(exact.values()) > 0.5  # the narrow table's groups expose: not a vacuous check


def test_decile_edges_read_as_a_committee_reads_them():
    """A review's scorecard showed bins "[17, 22.800000000000068)" and, for a count of late
    payments, a first bin "< 0" that held no one."""
    from protocols.features import interval_labels

    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "months": rng.uniform(0, 120, 2000) * 1.1,
            "late": np.where(rng.random(2000) < 0.6, 0, rng.integers(1, 6, 2000)).astype(float),
        }
    )
    recipe = FeatureRecipe.fit(table, ["months", "late"])
    for column in recipe.columns:
        labels = interval_labels(column.bin_edges)
        assert all(float(f"{e:.6g}") == e for e in column.bin_edges), labels
        assert column.bin_edges[0] > min(table.column(column.name).to_pylist()), labels
