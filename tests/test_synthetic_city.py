"""The synthetic city: valid and distinct codes, reproducible, dirty where documented."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from xinrong.protocols import uscc
from xinrong.protocols.ids import IdType, prepare_ids
from xinrong.synthetic import generate_city, generate_usccs, org_check_character


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


def _design(table, skip: set[str]) -> np.ndarray:
    columns = []
    for name in table.column_names:
        if name in skip:
            continue
        if table.schema.field(name).type == "string":  # categories, one-hot
            values = np.asarray(table.column(name).to_pylist(), dtype=object)
            columns += [(values == v).astype(float) for v in sorted(set(values) - {None})[1:]]
            continue
        values = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=float)
        missing = np.isnan(values)
        if missing.all():
            continue
        filled = np.where(missing, np.nanmedian(values), values)
        filled = np.sign(filled) * np.log1p(np.abs(filled))  # amounts are heavy-tailed
        std = filled.std() or 1.0
        columns.append((filled - filled.mean()) / std)
        if missing.any():
            columns.append(missing.astype(float))
    return np.column_stack(columns)


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    ranks = np.empty(score.size)
    ranks[np.argsort(score)] = np.arange(1, score.size + 1)
    positives = y.sum()
    return float(
        (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * (y.size - positives))
    )


def test_bureau_features_carry_real_lift():
    city = generate_city(20_000, 8_000, seed=3)
    _, first = np.unique(city.bank.column("uscc").to_numpy(zero_copy_only=False), return_index=True)
    bank = city.bank.take(np.sort(first))  # duplicated rows once
    joined = bank.join(city.bureau, "uscc", join_type="inner")
    y = joined.column("y").to_numpy().astype(float)
    half = y.size // 2  # fit on one half, score the other: no in-sample optimism

    def held_out_auc(x: np.ndarray) -> float:
        x = np.column_stack([np.ones(len(x)), x])
        w, *_ = np.linalg.lstsq(x[:half], y[:half], rcond=None)
        return _auc(x[half:] @ w, y[half:])

    bank_only = held_out_auc(_design(joined.select(bank.column_names), {"uscc", "y"}))
    joint = held_out_auc(_design(joined, {"uscc", "y"}))
    # A linear probability fit on raw columns; the issue-5 bar (0.05 with the real model) is
    # checked where that model lives.
    assert joint >= bank_only + 0.015, (bank_only, joint)
