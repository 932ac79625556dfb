"""The synthetic city: valid and distinct codes, reproducible, dirty where documented."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
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


# --------------------------------------------------------------------------- products


def _floats(table, name):
    return np.array(pc.cast(table.column(name), "float64").to_numpy(), dtype=float)


def test_the_registry_agrees_with_the_bureau_table(city):
    from protocols.products import EVENT_KINDS
    from xinrong.synthetic import INDUSTRIES
    from xinrong.synthetic_products import INDUSTRY_CODES

    bureau, registry = city.bureau, city.registry
    assert registry.column("uscc").equals(bureau.column("uscc"))
    assert registry.schema.metadata[b"xinrong.data_date"] == b"2026-11-30"
    assert city.events.schema.metadata[b"xinrong.data_date"] == b"2026-11-30"
    for name in ("insured_employees", "registered_capital_10k_cny"):
        assert registry.column(name).to_pylist() == bureau.column(name).to_pylist(), name
    # founded = data date less reg_age_years
    days = (np.datetime64("2026-11-30") - registry.column("founded").to_numpy()).astype(int)
    assert np.abs(days / 365.25 - _floats(bureau, "reg_age_years")).max() < 0.01
    # industry codes inside the bureau's category
    for category, code in zip(
        bureau.column("industry").to_pylist(), registry.column("industry_code").to_pylist()
    ):
        assert code in INDUSTRY_CODES[category]
    assert set(INDUSTRY_CODES) == set(INDUSTRIES)
    # 12 months ago: now / trend where the trend is known
    now, ago = (
        _floats(registry, "insured_employees"),
        _floats(registry, "insured_employees_12m_ago"),
    )
    trend = _floats(bureau, "employee_trend_12m")
    known = ~np.isnan(trend)
    assert (ago[known] == np.maximum(1, np.round(now[known] / trend[known]))).all()
    # money: revenue at least the invoices, assets the audited figure where there is one
    invoice, revenue = (
        _floats(bureau, "invoice_amount_12m_10k_cny"),
        _floats(registry, "revenue_10k_cny"),
    )
    assert (np.isnan(invoice) == np.isnan(revenue)).all()
    assert (revenue[~np.isnan(invoice)] >= invoice[~np.isnan(invoice)] - 0.01).all()
    audited, assets = (
        _floats(bureau, "total_assets_10k_cny"),
        _floats(registry, "total_assets_10k_cny"),
    )
    assert (assets[~np.isnan(audited)] == audited[~np.isnan(audited)]).all()
    # events: the counts and flags of the bureau's table
    events = city.events
    assert set(events.column("kind").to_pylist()) == set(EVENT_KINDS)
    counts = {}
    for kind, column in (("court_judgement", "court_judgements_3y"),
                         ("admin_penalty", "admin_penalties_3y"),
                         ("abnormal_operations", "abnormal_operation")):  # fmt: skip
        ids = events.filter(pc.equal(events.column("kind"), kind)).column("uscc").to_pylist()
        counts = {}
        for x in ids:
            counts[x] = counts.get(x, 0) + 1
        expected = bureau.column(column).to_pylist()
        got = [counts.get(x, 0) for x in bureau.column("uscc").to_pylist()]
        assert got == expected, kind
    status = registry.column("status").to_pylist()
    gone = [s in ("注销", "吊销") for s in status]
    assert gone == [bool(x) for x in bureau.column("deregistered").to_pylist()]


@pytest.fixture(scope="module")
def months():
    return {m: generate_city(5_000, 1_500, seed=11, month=m) for m in (1, 2, 3)}


def test_a_month_on_is_reproducible_and_keeps_month_one(city, months):
    again = generate_city(5_000, 1_500, seed=11, month=2)
    for name in ("bureau", "bank", "registry", "events"):
        assert getattr(again, name).equals(getattr(months[2], name)), name
    assert months[1].bureau.equals(city.bureau) and months[1].events.equals(city.events)
    second = months[2]
    assert second.data_date.isoformat() == "2026-12-31" and second.month == 2
    assert months[3].data_date.isoformat() == "2027-01-31"
    assert second.registry.schema.metadata[b"xinrong.data_date"] == b"2026-12-31"
    # the same enterprises, the same clients in the same rows with the same labels
    assert second.bureau.column("uscc").equals(city.bureau.column("uscc"))
    assert second.bank.column("uscc").equals(city.bank.column("uscc"))
    assert second.bank.column("y").equals(city.bank.column("y"))
    # month 1 as the month-2 city remembers it: its events up to month 1's date
    first_events = second.events.filter(
        pc.less_equal(second.events.column("date"), pa.scalar(city.data_date, pa.date32()))
    )
    assert first_events.equals(city.events.replace_schema_metadata(second.events.schema.metadata))


def _dated_in(events, start, end):
    dates = events.column("date")
    after = pc.greater(dates, pa.scalar(start, pa.date32()))
    upto = pc.less_equal(dates, pa.scalar(end, pa.date32()))
    return events.filter(pc.and_(after, upto))


def test_a_months_events_are_exactly_those_dated_in_it(months):
    one, two, three = months[1], months[2], months[3]
    new_in_two = _dated_in(two.events, one.data_date, two.data_date)
    assert new_in_two.num_rows > 20  # a month of a 5,000-firm city
    assert set(new_in_two.column("kind").to_pylist()) >= {"court_judgement", "admin_penalty"}
    latest = pc.max(one.events.column("date")).as_py()
    assert latest <= one.data_date  # month 1's file has nothing of month 2
    # month 3's file holds month 2's events unchanged, and month 2's none of month 3's
    assert _dated_in(three.events, one.data_date, two.data_date).equals(
        new_in_two.replace_schema_metadata(three.events.schema.metadata)
    )
    assert pc.max(two.events.column("date")).as_py() <= two.data_date
    assert _dated_in(three.events, two.data_date, three.data_date).num_rows > 20


def test_new_events_come_to_firms_in_trouble():
    # 30,000 firms: a month brings about 550 new events, enough to see the trouble in them
    one, two = (generate_city(30_000, 2_000, seed=4, month=m) for m in (1, 2))
    new = _dated_in(two.events, one.data_date, two.data_date)
    hit = set(new.column("uscc").to_pylist())
    got = np.array([x in hit for x in one.bureau.column("uscc").to_pylist()])
    listed = np.array(one.bureau.column("abnormal_operation").to_pylist()) > 0
    assert got[listed].mean() > 1.3 * got[~listed].mean()


def test_the_bureau_table_moves_with_the_registry(months):
    from protocols.products import months_before

    one, two = months[1], months[2]
    bureau, registry, events = two.bureau, two.registry, two.events
    assert registry.column("insured_employees").equals(bureau.column("insured_employees"))
    moved = np.array(one.bureau.column("insured_employees").to_pylist(), dtype=float)
    now = np.array(bureau.column("insured_employees").to_pylist(), dtype=float)
    known = ~np.isnan(now)
    assert 0 < (moved[known] != now[known]).mean() < 0.5  # headcounts move, most stay
    age = _floats(bureau, "reg_age_years") - _floats(one.bureau, "reg_age_years")
    assert np.abs(age - 31 / 365.25).max() < 0.006
    since = months_before(two.data_date, 36)
    window = _dated_in(events, since, two.data_date)
    for kind, column in (("court_judgement", "court_judgements_3y"),
                         ("abnormal_operations", "abnormal_operation")):  # fmt: skip
        ids = window.filter(pc.equal(window.column("kind"), kind)).column("uscc").to_pylist()
        counts = {}
        for x in ids:
            counts[x] = counts.get(x, 0) + 1
        got = [counts.get(x, 0) for x in bureau.column("uscc").to_pylist()]
        assert got == bureau.column(column).to_pylist(), kind
    gone = [s in ("注销", "吊销") for s in registry.column("status").to_pylist()]
    assert gone == [bool(x) for x in bureau.column("deregistered").to_pylist()]
    assert sum(gone) >= sum(one.bureau.column("deregistered").to_pylist())
    trend = _floats(bureau, "employee_trend_12m")
    ago = _floats(registry, "insured_employees_12m_ago")
    ok = ~np.isnan(trend)
    assert np.allclose(trend[ok], np.round(now[ok] / ago[ok], 3))


def test_the_banks_clients_drift_a_little(months):
    one, two = months[1].bank, months[2].bank
    age = np.array(two.column("account_age_months")) - np.array(one.column("account_age_months"))
    assert (age == 1).all()
    overdue = np.array(two.column("overdue_count_12m")) - np.array(one.column("overdue_count_12m"))
    assert 0 < (overdue != 0).mean() < 0.2 and (overdue > 0).sum() > 0
    balance = _floats(two, "avg_balance_6m_10k_cny") / np.maximum(
        _floats(one, "avg_balance_6m_10k_cny"), 0.01
    )
    assert 0.8 < np.median(balance) < 1.2
    assert two.column("loan_amount_10k_cny").equals(one.column("loan_amount_10k_cny"))


def test_synth_writes_a_month_on(tmp_path):
    import pyarrow.parquet as pq

    from bureau_node.cli import main

    assert main(["synth", "--enterprises", "800", "--bank-clients", "100", "--seed", "2",
                 "--month", "2", "--out", str(tmp_path)]) == 0  # fmt: skip
    for name in ("registry", "events"):
        metadata = pq.read_schema(tmp_path / f"{name}.parquet").metadata
        assert metadata[b"xinrong.data_date"] == b"2026-12-31"
    assert main(["synth", "--month", "0", "--out", str(tmp_path)]) == 2
