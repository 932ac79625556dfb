"""The synthetic city: valid and distinct codes, reproducible, dirty where documented."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from protocols import uscc
from protocols.features import FeatureRecipe
from protocols.ids import IdType, prepare_ids
from xinrong.synthetic import (
    BANK_COLUMNS,
    BUREAU_COLUMNS,
    generate_city,
    generate_usccs,
    org_check_character,
)


def test_codes_are_distinct_and_valid():
    codes = generate_usccs(20_000, np.random.default_rng(5))
    assert codes.dtype == np.dtype("S18")
    assert np.unique(codes).size == codes.size
    assert uscc.check_many(codes).all()
    for code in codes[:200].astype(str):
        assert uscc.is_valid(code)
        assert code[16] == org_check_character(code[8:16])  # GB 11714 organisation code


@pytest.fixture(scope="module")
def city():
    return generate_city(5_000, 1_500, seed=11)


def test_same_seed_same_city(city):
    again = generate_city(5_000, 1_500, seed=11)
    assert again.bureau.equals(city.bureau) and again.bank.equals(city.bank)
    other = generate_city(5_000, 1_500, seed=12)
    assert not other.bank.equals(city.bank)


def test_shapes_labels_and_gaps(city):
    assert city.bureau.num_rows == 5_000 and city.bank.num_rows == 1_500
    assert set(city.bank.column("y").to_pylist()) == {0, 1}
    rate = pc.mean(city.bank.column("y")).as_py()
    assert 0.02 < rate < 0.2
    # Real platforms have gaps: missing values in some bureau columns, none in the key.
    assert city.bureau.column("uscc").null_count == 0
    assert sum(c.null_count for c in city.bureau.columns) > 0


def test_bank_ids_are_mostly_city_codes_with_documented_dirt(city):
    prepared = prepare_ids(city.bank.column("uscc"), IdType.USCC)
    bureau = set(city.bureau.column("uscc").to_pylist())
    known = [x for x in prepared.ids if x in bureau]
    assert 0.8 < len(known) / len(prepared) < 0.97  # about 90% in the city
    assert prepared.rejects, "some IDs are invalid on purpose"
    assert prepared.duplicates > 0
    raw = city.bank.column("uscc").to_pylist()
    reformatted = [r for r in raw if r not in bureau and uscc.normalise(r) in bureau]
    assert reformatted, "some valid codes arrive with spaces, lower case or full width"


def test_bureau_features_carry_real_lift():
    # Large enough that the lift of one split is steady (it scatters by about 0.013 across
    # seeds here, around +0.11); still well under a second.
    city = generate_city(40_000, 16_000, seed=3)
    _, first = np.unique(city.bank.column("uscc").to_numpy(zero_copy_only=False), return_index=True)
    bank = city.bank.take(np.sort(first))  # duplicated rows once
    # Sorted: the hash join's row order is not deterministic, the split below must be.
    joined = bank.join(city.bureau, "uscc", join_type="inner").sort_by("uscc")
    y = joined.column("y").to_numpy().astype(float)
    assert 0.05 < y.mean() < 0.12
    half = y.size // 2  # fit on one half, score the other: no in-sample optimism
    train = joined.slice(0, half)
    bank_x, bureau_x = (
        FeatureRecipe.fit(train, list(names)).transform(joined)
        for names in (BANK_COLUMNS[1:-1], BUREAU_COLUMNS[1:])
    )

    def held_out_auc(x: np.ndarray) -> float:
        # Least squares on 4y - 2: the loss the federated (Taylor) model optimises.
        x = np.column_stack([np.ones(len(x)), x])
        w, *_ = np.linalg.lstsq(x[:half], 4 * y[:half] - 2, rcond=None)
        return _auc(x[half:] @ w, y[half:])

    bank_only = held_out_auc(bank_x)
    joint = held_out_auc(np.column_stack([bank_x, bureau_x]))
    assert 0.65 < bank_only < 0.77, bank_only  # a realistic bank scorecard
    # The issue-5 bar is +0.05 for the federated model; the data carry about +0.07 (less
    # than before issue 15: contagion along the graph adds risk only the graph features see).
    assert joint >= bank_only + 0.05, (bank_only, joint)
    # No leak: no single bureau column comes near the label.
    for column in range(bureau_x.shape[1]):
        single = _auc(bureau_x[half:, column], y[half:])
        assert max(single, 1 - single) < 0.75, column


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    ranks = np.empty(score.size)
    ranks[np.argsort(score, kind="stable")] = np.arange(1, score.size + 1)
    positives = y.sum()
    return float(
        (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * (y.size - positives))
    )


def test_the_graph_is_realistic_and_its_features_add_lift(tmp_path):
    import pyarrow.parquet as pq

    from bureau_node.edges import DEFAULT_FLAG_COLUMNS, graph_columns

    city = generate_city(40_000, 16_000, seed=3)
    edges = city.edges
    assert edges is not None and edges.num_rows > 2.5 * city.bureau.num_rows
    bureau_ids = set(city.bureau.column("uscc").to_pylist())
    ends = edges.column("src").to_pylist() + edges.column("dst").to_pylist()
    others = {e for e in ends if e not in bureau_ids}
    assert all(len(e) == 32 and int(e, 16) >= 0 for e in others)  # persons only hashed
    relation = edges.column("relation").to_numpy(zero_copy_only=False)
    persons = [s for s, r in zip(edges.column("src").to_pylist(), relation) if r == "legal_rep"]
    _, held = np.unique(persons, return_counts=True)
    assert held.max() >= 20 and np.median(held) == 1  # heavy-tailed: most one firm, some many

    path = tmp_path / "edges.parquet"
    pq.write_table(edges, path)
    ids = city.bureau.column("uscc").combine_chunks()
    graph, summary = graph_columns(path, city.bureau, ids, IdType.USCC, DEFAULT_FLAG_COLUMNS)
    assert summary.rejected == 0
    circle = graph.column("graph_guarantee_circle_size").to_numpy()
    assert (circle >= 3).sum() > 100  # guarantee circles
    assert graph.column("graph_largest_address_cluster").to_numpy().max() > 50  # a hub

    bureau = city.bureau
    for name in graph.column_names:
        bureau = bureau.append_column(name, graph.column(name))
    _, first = np.unique(city.bank.column("uscc").to_numpy(zero_copy_only=False), return_index=True)
    joined = city.bank.take(np.sort(first)).join(bureau, "uscc", join_type="inner")
    joined = joined.sort_by("uscc")
    y = joined.column("y").to_numpy().astype(float)
    half = y.size // 2
    train = joined.slice(0, half)
    bank_x, bureau_x, graph_x = (
        FeatureRecipe.fit(train, list(names)).transform(joined)
        for names in (BANK_COLUMNS[1:-1], BUREAU_COLUMNS[1:], graph.column_names)
    )

    def held_out_auc(x: np.ndarray) -> float:
        x = np.column_stack([np.ones(len(x)), x])
        w, *_ = np.linalg.lstsq(x[:half], 4 * y[:half] - 2, rcond=None)
        return _auc(x[half:] @ w, y[half:])

    without = held_out_auc(np.column_stack([bank_x, bureau_x]))
    with_graph = held_out_auc(np.column_stack([bank_x, bureau_x, graph_x]))
    assert with_graph >= without + 0.02, (without, with_graph)
    for column in range(graph_x.shape[1]):  # no graph column near the label on its own
        single = _auc(graph_x[half:, column], y[half:])
        assert max(single, 1 - single) < 0.75, graph.column_names[column]
