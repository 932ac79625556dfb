"""What a bank reads of the bureau's features from its models' scores together
(protocols.score_span): a feature inside the span of the scores is read whole, one
outside it is not, and levels are read back from exact inputs unchanged."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import score_span
from protocols.features import FeatureRecipe

ROWS = 3000


def _city(seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    age = rng.gamma(3.0, 3.0, ROWS)
    capital = rng.lognormal(4.0, 1.0, ROWS)
    capital[rng.random(ROWS) < 0.1] = np.nan
    return pa.table(
        {
            "flag": (rng.random(ROWS) < 0.05).astype(np.int64),
            "age": age,
            "capital": capital,
            "courts": rng.poisson(0.6, ROWS),
            "industry": rng.choice(["制造业", "批发零售", "建筑业", "服务业"], ROWS),
        }
    )


def _levels(recipe: FeatureRecipe, table: pa.Table) -> dict[str, score_span.FeatureLevels]:
    return {
        c.name: score_span.column_levels(c, c.raw(table.column(c.name))) for c in recipe.columns
    }


def _scores(x: np.ndarray, models: int, seed: int) -> np.ndarray:
    weights = np.random.default_rng(seed).normal(size=(x.shape[1], models))
    return x @ weights


def test_as_many_models_as_inputs_read_every_feature_whole():
    """The review's attack in the clear: enough projections of the same features span them,
    and every level of every feature (a flag, a number with missing values, a count, a
    category) is read from sums of the scores."""
    table = _city()
    recipe = FeatureRecipe.fit(table, table.column_names)
    x = recipe.transform(table)
    shares = score_span.readable_shares(_scores(x, x.shape[1], 1), _levels(recipe, table))
    assert shares == dict.fromkeys(table.column_names, 1.0)


def test_one_balanced_model_reads_little_of_any_feature():
    table = _city()
    recipe = FeatureRecipe.fit(table, table.column_names)
    x = recipe.transform(table)
    weights = np.full(x.shape[1], 0.3)
    shares = score_span.readable_shares((x @ weights)[:, None], _levels(recipe, table))
    assert max(shares.values()) < 0.5


def test_a_feature_outside_the_span_is_not_read_and_a_public_one_opens_the_rest():
    """Models on three features read nothing of a fourth they never use; the same models
    read a feature once the bank can take a public one out of the scores."""
    table = _city()
    used = FeatureRecipe.fit(table, ["flag", "age", "capital"])
    x = used.transform(table)
    scores = _scores(x, 2, 4)  # two models on four inputs: no feature whole
    levels = _levels(FeatureRecipe.fit(table, table.column_names), table)
    hidden = score_span.readable_shares(scores, levels)
    assert hidden["courts"] < 0.02 and hidden["industry"] < 0.05  # chance, in-sample
    assert max(hidden.values()) < 1.0
    public_age = used.transform(table)[:, [1]]
    opened = score_span.readable_shares(np.column_stack([scores, public_age]), levels)
    assert opened["flag"] > hidden["flag"]


def test_a_set_may_read_what_its_best_model_reads_alone_and_a_step_more():
    """The bound: ``max(limit, min(CAP, alone + GAIN))``; a score that is one feature's
    value in all but name is over it even alone."""
    table = _city()
    recipe = FeatureRecipe.fit(table, ["flag", "age", "capital"])
    x = recipe.transform(table)
    levels = _levels(recipe, table)
    dominated = (x @ np.array([1.0, 0.01, 0.01, 0.0]))[:, None]  # the flag, as in a review
    assert score_span.judge_models([dominated], np.zeros((ROWS, 0)), levels, 0.5).over
    four = [m[:, None] for m in _scores(x, 4, 6).T]  # as many models as inputs: read whole
    verdict = score_span.judge_models(four, np.zeros((ROWS, 0)), levels, 0.5)
    assert set(verdict.together.values()) == {1.0}
    assert set(verdict.over) == set(levels)  # whole is beyond any bound below 1
    assert not score_span.judge_models(four, np.zeros((ROWS, 0)), levels, 1.0).over


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.integers(-5, 40), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=2,
        max_size=200,
    )
)
def test_exact_inputs_are_read_back_at_their_own_level(values):
    """Whatever a number column holds (ties, missing values, few or many distinct values),
    a read that is exact up to rounding names each row's own level."""
    column = pa.array([float(v) if v is not None else None for v in values], pa.float64())
    table = pa.table({"v": column})
    if all(v is None for v in values):
        return
    recipe = FeatureRecipe.fit(table, ["v"])
    (c,) = recipe.columns
    levels = score_span.column_levels(c, c.raw(table.column("v")))
    assert len(np.unique(levels.levels)) <= score_span.MAX_LEVELS + 1
    jitter = levels.inputs * (1 + 1e-12)
    assert np.array_equal(levels.level_of(jitter), levels.levels)


def test_a_rare_flag_is_read_by_the_best_cut_not_the_midpoint_of_the_fit():
    """A review: a least-squares fit of a rare flag is shrunk towards its mean, so cutting it
    at 0.5 named almost no listed enterprise (measured 0.20), while a bank's own cut on the
    same scores, fitted on its clients' flags, named 69%. The measure takes the best cut."""
    rng = np.random.default_rng(8)
    flag = (rng.random(ROWS) < 0.05).astype(np.int64)
    score = flag + rng.normal(0, 0.25, ROWS)  # one model, the flag and the rest of its score
    table = pa.table({"flag": flag})
    (column,) = FeatureRecipe.fit(table, ["flag"]).columns
    levels = score_span.column_levels(column, column.raw(table.column("flag")))
    basis = score_span.span_basis(score[:, None])
    listed = flag == 1

    def share(named: np.ndarray) -> float:
        return (np.sum(named & listed) - np.sum(named & ~listed)) / np.sum(listed)

    midpoint = share((basis @ (basis.T @ levels.inputs))[:, 0] > 0.5)
    best_cut = share(score > 0.75)
    assert midpoint + 0.3 < best_cut <= score_span.readable_share(basis, levels)


@settings(max_examples=80, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(-3, 3).map(float), st.booleans()), min_size=1, max_size=40)
)
def test_the_best_cut_is_the_best_of_every_cut(pairs):
    """``_Ranked.share`` against trying every cut and direction by hand."""
    score = np.array([p[0] for p in pairs])
    truth = np.array([p[1] for p in pairs])
    rows, positives = len(truth), int(truth.sum())
    common = max(positives, rows - positives)
    best = common
    for t in np.unique(score):
        for named in (score >= t, score <= t):
            best = max(best, int(np.sum(named == truth)))
    expected = 0.0 if rows == common else (best - common) / (rows - common)
    assert score_span._Ranked.of(score).share(truth) == pytest.approx(expected)


def test_a_rare_flag_read_whole_is_measured_and_a_handful_is_not():
    """A review: a floor of 1% of the table measured a flag on 0.9% of a city as unread,
    while one model named every listed enterprise. The floor is now 20 enterprises of the
    whole table, whatever its size; a read of fewer (a rare level singled out by two honest
    models' difference) counts as none."""
    rng = np.random.default_rng(9)

    def read(listed: int, per_row: float = 1.0) -> float:
        flag = np.zeros(4000, dtype=np.int64)
        flag[rng.choice(4000, listed, replace=False)] = 1
        levels = score_span.FeatureLevels(
            flag[:, None].astype(float), flag, False, np.array([0.5]), per_row=per_row
        )
        score = flag * 3.0 + rng.normal(0, 0.3, 4000)
        return score_span.readable_shares(score[:, None], {"flag": levels})["flag"]

    assert read(36) == 1.0  # 0.9% of the city, named whole
    assert read(12) == 0.0  # a handful
    assert read(12, per_row=50.0) == 1.0  # a sample's 12 rows stand for 600 enterprises
