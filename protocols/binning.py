"""Binning, weight of evidence and information value: the credit modeller's first look at
which features carry signal.

Each party bins its own columns (quantile bins for numbers, one bin per frequent category,
missing values in a bin of their own; bins below a minimum count merged into a neighbour).
For the bureau's features the bank learns, per bin and in bin order, only its counts of
positives and of negatives (computed by the bureau on encrypted labels, each with the
bureau's noise): never the bureau's split points or values, nor an exact bin size. Optimal
monotonic binning then merges adjacent bins on the bank's side until the bad rate is
monotonic (pool adjacent violators), which needs only those counts.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa

from . import noise
from .errors import ProtocolViolation
from .features import MISSING, _numbers, _texts, column_kind, interval_labels

DEFAULT_BINS = 10
MAX_BINS = 50
# the smallest bin of the bureau's whole table (TrainingLimits.min_bin_count, its default)
# and of the bank's own features
BUREAU_MIN_BIN_COUNT = 30
DEFAULT_MIN_BIN_COUNT = 50
# ... and a bin holds at least this share of the matched rows by default (the scorecard
# practice of a few per cent a bin): with the bureau's noise on the counts of positives, a
# small bin's WOE moves by several units of noise over its few positives or negatives, and
# the IV with it (on default_credit, x9's bins of 80 and 84 rows moved its IV by up to 0.02
# at the default noise; merged at 2%, by under 0.008; BENCHMARKS.md)
DEFAULT_MIN_BIN_SHARE = 0.02
# a share above this leaves fewer than four bins, and at 0.5 one: a review's --min-bin-share
# 0.5 read every IV as 0, x5's 0.86 too
MAX_MIN_BIN_SHARE = 0.25
SMOOTHING = 0.5  # added to good and bad counts so that empty cells have a finite WOE

# One enterprise's bureau values moving it from one bin of a feature to another changes that
# feature's vector of sums of positives by at most 1 in two bins (its label is 0 or 1): an L2
# sensitivity of sqrt(2). Adding or removing the enterprise changes one sum by 1, less.
BIN_SENSITIVITY_SQUARED = 2
# The rho a bureau may configure (per feature and per day): the bank refuses an answer that
# claims another per feature, since the noise's sigma it implies bounds the counts' range.
RHO_RANGE = (0.001, 1000.0)
# Noise beyond this is clamped so that a slot has a fixed width; with sigma below 2^30 the
# chance of reaching it is below exp(-2^19).
NOISE_BOUND = 1 << 40
# A feature binned into one bin is not released: its IV is 0 whatever the labels, and it
# would spend budget to tell the bank nothing.
MIN_RELEASED_BINS = 2

STRENGTH_BANDS = [  # (lower bound of IV, label): the usual rule of thumb
    (0.5, "suspicious (check for leaks)"),
    (0.3, "strong"),
    (0.1, "medium"),
    (0.02, "weak"),
    (0.0, "not predictive"),
]


# The strength of a bureau feature whose bins all merged to carry the noise: its IV of 0
# says nothing about the feature (bank_node.toolkit)
UNMEASURED = "unmeasured (too few defaults for the noise)"


def strength(iv: float) -> str:
    for lower, label in STRENGTH_BANDS:
        if iv >= lower:
            return label
    return STRENGTH_BANDS[-1][1]


@dataclass(frozen=True)
class ColumnBins:
    """Bin membership of every row of one column. ``labels`` name the bins for their owner
    only (they hold split points); ``ordered`` says whether adjacent bins may be merged."""

    name: str
    kind: str
    index: np.ndarray  # bin of each row
    labels: list[str]
    ordered: bool
    missing_bin: int | None

    @property
    def count(self) -> int:
        return len(self.labels)


def _merge_small(counts: np.ndarray, min_count: int, ordered: bool) -> np.ndarray:
    """A mapping old bin -> new bin that merges bins below ``min_count`` into a neighbour
    (the smaller adjacent one when ordered; all small categories together otherwise)."""
    mapping = np.arange(len(counts))
    groups = _merged_groups(len(counts), lambda g: int(counts[g].sum()), min_count, ordered)
    for new, members in enumerate(groups):
        mapping[members] = new
    return mapping


def _merged_groups(
    bins: int, size: Callable[[list[int]], float], floor: float, ordered: bool
) -> list[list[int]]:
    """Bins 0..bins-1 grouped until every group's ``size`` is at least ``floor``: ordered
    bins pairwise, the smallest group first, into its smaller neighbour; otherwise every
    small group pooled, last, and that pool into the largest group if still small."""
    groups = [[b] for b in range(bins)]
    if ordered:
        while len(groups) > 1 and min(size(g) for g in groups) < floor:
            g = min(range(len(groups)), key=lambda k: size(groups[k]))
            neighbours = [k for k in (g - 1, g + 1) if 0 <= k < len(groups)]
            other = min(neighbours, key=lambda k: size(groups[k]))
            lo, hi = min(g, other), max(g, other)
            groups[lo] = groups[lo] + groups[hi]
            del groups[hi]
        return groups
    small = [g for g in groups if size(g) < floor]
    if small:
        groups = [g for g in groups if size(g) >= floor] + [[b for g in small for b in g]]
    if len(groups) > 1 and size(groups[-1]) < floor:
        largest = max(range(len(groups) - 1), key=lambda k: size(groups[k]))
        groups[largest] = sorted(groups[largest] + groups.pop())
    return groups


def min_bin_rows(rows: int, min_count: int, min_share: float) -> int:
    """The smallest bin over ``rows`` matched rows: ``min_count`` rows and ``min_share`` of
    them, whichever is more."""
    if not 0.0 <= min_share <= MAX_MIN_BIN_SHARE:
        raise ValueError(f"a minimum bin share must be from 0 to {MAX_MIN_BIN_SHARE}")
    return max(min_count, math.ceil(min_share * rows))


@dataclass(frozen=True)
class BinRule:
    """How a column is binned, fitted on one set of rows and applied to any: numbers by
    split points, text by its kept levels (the rest pooled); then each of those raw bins'
    reported bin (small ones merged) and where missing values go. The bureau fits its rules
    on its whole table, so that a session's bins (their number, which features have more
    than one) follow no session's rows: fitted on the session, whether a feature kept two
    bins of at least ``min_count`` rows read how many of its rows had a value, exactly."""

    name: str
    kind: str
    edges: np.ndarray  # numbers: a value's raw bin is searchsorted(edges, value, "right")
    levels: tuple[str, ...]  # text: a level's raw bin is its position, others len(levels)
    reported: np.ndarray  # raw bin -> reported bin
    labels: list[str]
    ordered: bool
    missing_bin: int | None
    missing_joins: int  # the reported bin of missing values when they have none of their own

    @property
    def count(self) -> int:
        return len(self.labels)

    def apply(self, column: pa.ChunkedArray | pa.Array) -> ColumnBins:
        values, missing = _values(self.kind, column)
        raw = _raw_bins(self.kind, values, self.edges, self.levels)
        if len(self.reported):
            index = self.reported[np.minimum(raw, len(self.reported) - 1)]
        else:  # no value at all where the rule was fitted
            index = np.zeros(len(raw), dtype=np.int64)
        into = self.missing_joins if self.missing_bin is None else self.missing_bin
        index = np.where(missing, into, index).astype(np.int64)
        return ColumnBins(self.name, self.kind, index, self.labels, self.ordered, self.missing_bin)


def _values(kind: str, column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A column's values as binning reads them (floats, or texts), and which are missing."""
    if kind == "numeric":
        x = _numbers(column)
        return x, np.isnan(x)
    texts = _texts(column)
    return texts, texts == MISSING


def _raw_bins(
    kind: str, values: np.ndarray, edges: np.ndarray, levels: tuple[str, ...]
) -> np.ndarray:
    """Each value's bin before merging: by the split points, or its level's position (every
    other level pooled after the kept ones)."""
    if kind == "numeric":
        return np.searchsorted(edges, values, side="right")
    position = {level: i for i, level in enumerate(levels)}
    return np.array([position.get(t, len(levels)) for t in values.tolist()], dtype=np.int64)


def fit_bins(
    name: str,
    column: pa.ChunkedArray | pa.Array,
    max_bins: int = DEFAULT_BINS,
    min_count: int = DEFAULT_MIN_BIN_COUNT,
) -> BinRule:
    """Quantile bins (numbers) or category bins (text), missing values apart, bins below
    ``min_count`` rows merged, all as these rows have them."""
    kind = column_kind(column.type)
    values, missing = _values(kind, column)
    edges = np.zeros(0)
    levels: tuple[str, ...] = ()
    if kind == "numeric":
        present = values[~missing]
        distinct = np.unique(present)
        if distinct.size <= max_bins:  # few values (flags, counts): one bin per value
            edges = distinct[1:]
        else:
            edges = np.unique(np.quantile(present, np.linspace(0, 1, max_bins + 1)[1:-1]))
        labels = interval_labels(edges.tolist())
        ordered = True
    else:
        found, counts_all = np.unique(values[~missing], return_counts=True)
        order = np.argsort(-counts_all, kind="stable")
        # the largest max_bins - 1 levels; every other one pooled
        levels = tuple(sorted(str(found[i]) for i in order[: max_bins - 1]))
        labels = list(levels) + (["(other levels)"] if len(found) > len(levels) else [])
        ordered = False
    raw = _raw_bins(kind, values, edges, levels)
    regular = len(labels)
    counts = np.bincount(raw[~missing], minlength=regular) if regular else np.zeros(0, int)
    # empty raw bins go with their next non-empty one (the last with the one before)
    keep = counts > 0
    kept = np.flatnonzero(keep)
    if kept.size:
        renumber = np.minimum(np.searchsorted(kept, np.arange(regular)), kept.size - 1)
    else:
        renumber = np.zeros(regular, dtype=np.int64)
    labels = [label for label, k in zip(labels, keep, strict=True) if k]
    counts = counts[keep]
    mapping = _merge_small(counts, min_count, ordered)
    merged = int(mapping.max()) + 1 if len(mapping) else 0
    new_labels = [
        " | ".join(labels[i] for i in range(len(labels)) if mapping[i] == b) for b in range(merged)
    ]
    reported = mapping[renumber] if len(mapping) else np.zeros(0, dtype=np.int64)
    sizes = np.bincount(mapping, weights=counts, minlength=merged) if merged else np.zeros(0)
    missing_bin, joins = None, 0
    if missing.any() and merged == 1 and sizes[0] < min_count:
        # a lone small bin is never reported apart: everything in one bin
        return BinRule(
            name, kind, edges, levels, reported, [new_labels[0] + " | missing"], ordered, None, 0
        )
    if missing.any():
        if missing.sum() >= min_count or merged == 0:
            missing_bin = merged
            new_labels.append("missing")
        else:  # too few missing values to report apart: they join the largest bin
            joins = int(np.argmax(sizes))
            new_labels[joins] += " | missing"
    return BinRule(name, kind, edges, levels, reported, new_labels, ordered, missing_bin, joins)


def bin_column(
    name: str,
    column: pa.ChunkedArray | pa.Array,
    max_bins: int = DEFAULT_BINS,
    min_count: int = DEFAULT_MIN_BIN_COUNT,
) -> ColumnBins:
    """The bins of a column fitted on its own rows (the bank's features, over its clients)."""
    return fit_bins(name, column, max_bins, min_count).apply(column)


# -- the bank's side: counts to WOE and IV -------------------------------------------------


@dataclass(frozen=True)
class BinStatistics:
    totals: list[int]
    bads: list[int]

    @property
    def goods(self) -> list[int]:
        return [t - b for t, b in zip(self.totals, self.bads, strict=True)]


def woe_and_iv(stats: BinStatistics) -> tuple[list[float], float]:
    """Weight of evidence per bin, ln(%bad / %good) (positive = riskier), and the IV (0 when
    there are no bads or no goods at all: nothing to tell apart)."""
    if sum(stats.bads) == 0 or sum(stats.goods) == 0:
        return [0.0] * len(stats.totals), 0.0
    bads = np.asarray(stats.bads, dtype=np.float64) + SMOOTHING
    goods = np.asarray(stats.goods, dtype=np.float64) + SMOOTHING
    share_bad, share_good = bads / bads.sum(), goods / goods.sum()
    woe = np.log(share_bad / share_good)
    return woe.tolist(), float(np.sum((share_bad - share_good) * woe))


def monotonic_groups(stats: BinStatistics, missing_bin: int | None) -> list[list[int]]:
    """Adjacent ordered bins merged until the bad rate is monotonic in the direction that
    keeps more IV (pool adjacent violators); the missing bin stays apart."""
    ordered = [b for b in range(len(stats.totals)) if b != missing_bin]

    def pool(increasing: bool) -> list[list[int]]:
        blocks: list[list[int]] = []
        totals: list[int] = []
        bads: list[int] = []
        for b in ordered:
            blocks.append([b])
            totals.append(stats.totals[b])
            bads.append(stats.bads[b])
            while len(blocks) > 1:
                rate_prev = bads[-2] / max(totals[-2], 1)
                rate_last = bads[-1] / max(totals[-1], 1)
                if (rate_last >= rate_prev) if increasing else (rate_last <= rate_prev):
                    break
                last_block, last_total, last_bads = blocks.pop(), totals.pop(), bads.pop()
                blocks[-1] = blocks[-1] + last_block
                totals[-1] += last_total
                bads[-1] += last_bads
        return blocks

    best: list[list[int]] | None = None
    best_iv = -1.0
    for increasing in (True, False):
        groups = pool(increasing)
        if missing_bin is not None:
            groups = [*groups, [missing_bin]]
        iv = woe_and_iv(merge(stats, groups))[1]
        if iv > best_iv:
            best, best_iv = groups, iv
    assert best is not None
    return best


def merge(stats: BinStatistics, groups: list[list[int]]) -> BinStatistics:
    return BinStatistics(
        [sum(stats.totals[b] for b in g) for g in groups],
        [sum(stats.bads[b] for b in g) for g in groups],
    )


@dataclass(frozen=True)
class FeatureValue:
    """One row of the IV table."""

    feature: str
    party: str
    kind: str
    bins: int
    iv: float
    strength: str
    totals: list[int]
    bads: list[int]
    woe: list[float]
    # the spread of the IV under the bureau's noise (0 for the bank's own features)
    iv_sd: float = 0.0


def evaluate_feature(
    feature: str,
    party: str,
    kind: str,
    stats: BinStatistics,
    ordered: bool,
    missing_bin: int | None,
    monotonic: bool = True,
) -> FeatureValue:
    if monotonic and ordered:
        stats = merge(stats, monotonic_groups(stats, missing_bin))
    woe, iv = woe_and_iv(stats)
    return FeatureValue(
        feature,
        party,
        kind,
        len(stats.totals),
        round(iv, 6),
        strength(iv),
        stats.totals,
        stats.bads,
        [round(w, 6) for w in woe],
    )


def local_statistics(bins: ColumnBins, labels: np.ndarray) -> BinStatistics:
    """The bank's own features: counts straight from its labels."""
    totals = np.bincount(bins.index, minlength=bins.count)
    bads = np.bincount(bins.index, weights=labels.astype(np.float64), minlength=bins.count)
    return BinStatistics(totals.astype(int).tolist(), np.rint(bads).astype(int).tolist())


# -- noise on the bureau's per-bin sums ---------------------------------------------------


@dataclass(frozen=True)
class BinNoise:
    """The discrete Gaussian noise the bureau adds to a feature's encrypted per-bin counts of
    positives and, independently, of negatives: ``rho`` per feature (rho-zCDP for one
    enterprise's bin in that feature, whatever 0/1 labels the bank chose; a request over F
    features is F * rho by composition), and the offset that keeps every noisy count
    non-negative in its slot.

    The enterprise moving from one bin to another changes one of the two vectors (its
    label's) in two coordinates by 1: the L2 sensitivity sqrt(2) of the vector of positives
    alone, so the negatives cost no more rho. They replace the exact bin sizes, which two PSI
    sessions differing in one ID read that enterprise's bin from, noise or not; and they
    make the IV more accurate, not less: with exact sizes a bin's negatives moved by minus
    its positives' noise, and both moved its WOE the same way (default_credit's worst IV
    error fell from 0.0125 to 0.0093 over 1,000 draws at sigma 4; BENCHMARKS.md).

    Each vector's noise sums to zero over the feature's bins: the bank knows its numbers of
    positives and negatives, so noise on their totals would only cost accuracy
    (``noise.zero_sum_discrete_gaussian``; the same rho for a move between bins, and about
    the same differences of noise between bins, which is what a probe compares)."""

    rho: float

    @property
    def sigma2(self) -> Fraction:
        return noise.gaussian_sigma2(BIN_SENSITIVITY_SQUARED, self.rho)

    @property
    def sigma(self) -> float:
        return math.sqrt(self.sigma2)

    @property
    def offset(self) -> int:
        return NOISE_BOUND

    def slot_bits(self, rows: int) -> int:
        """Wide enough for a count of 0..rows plus noise in [-bound, bound], offset."""
        return (rows + 2 * NOISE_BOUND).bit_length()

    def sample(self, bins: int, randbelow: noise.RandBelow = secrets.randbelow) -> list[int]:
        """Noise plus offset for each of a feature's ``bins``: non-negative integers to add to
        its encrypted counts."""
        z = noise.zero_sum_discrete_gaussian(bins, self.sigma2, randbelow)
        return [max(-NOISE_BOUND, min(NOISE_BOUND, v)) + NOISE_BOUND for v in z]


# An honest count lies within this many sigmas of the bureau's noise of its range: beyond is
# not noise (P < exp(-800)) but an answer no honest bureau sends.
NOISE_TAIL_SIGMAS = 40


def noisy_bins(
    slots: list[int], offset: int, positives: int, rows: int, feature: str, sigma: float = 0.0
) -> BinStatistics:
    """The bank's side: a feature's bins from its 2 x bins noisy slots (its positives per
    bin, then its negatives), each count cut at 0 (the noise may push a small one below),
    a bin's size the sum of its two. Each vector's noise sums to zero, so before the cut its
    counts add up to the bank's own ``positives`` and ``rows - positives``, and no count
    strays more than ``NOISE_TAIL_SIGMAS`` of ``sigma`` from 0..rows: anything else is not
    the bureau's honest answer."""
    if len(slots) % 2:
        raise ProtocolViolation(f"feature {feature!r}: an odd number of noisy counts")
    if offset != NOISE_BOUND:
        raise ProtocolViolation(f"feature {feature!r}: noise offset {offset}, not {NOISE_BOUND}")
    tail = math.ceil(NOISE_TAIL_SIGMAS * sigma)
    values = [slot - offset for slot in slots]
    if not all(-tail <= v <= rows + tail for v in values):
        raise ProtocolViolation(
            f"feature {feature!r}: a noisy count is out of range (0 to {rows} rows, with "
            f"noise of sigma {sigma:.3g})"
        )
    bins = len(values) // 2
    bads, goods = values[:bins], values[bins:]
    if sum(bads) != positives or sum(goods) != rows - positives:
        raise ProtocolViolation(
            f"feature {feature!r}: the noisy counts add up to {sum(bads)} positives and "
            f"{sum(goods)} negatives, not this session's {positives} and {rows - positives}"
        )
    bads, goods = [max(v, 0) for v in bads], [max(v, 0) for v in goods]
    return BinStatistics([b + g for b, g in zip(bads, goods, strict=True)], bads)


# -- the bank's side of noisy counts: bins that carry more than noise -----------------------

# A bureau feature's bins keep at least this many sigmas of the bureau's noise in (noisy)
# positives and negatives each: a review's bins of ~10 defaults under noise of sigma 4 were
# drawn to 0 and back, and one feature's IV moved from 0.23 to 0.77 between two requests.
NOISE_FLOOR_SIGMAS = 5
NOISE_DRAWS = 200


def merge_for_noise(
    stats: BinStatistics,
    ordered: bool,
    missing_bin: int | None,
    floor: float,
    min_rows: float = 0.0,
) -> tuple[BinStatistics, int | None]:
    """Bins merged until each has at least ``floor`` positives and negatives and
    ``min_rows`` rows (counts as the bank received them, noise and all: post-processing,
    which spends no privacy): adjacent ordered bins, the smallest first, into the smaller
    neighbour; small categories pooled, then into the largest; a small missing bin into the
    largest. The new statistics and the missing bin's new index."""

    def low(group: list[int]) -> float:
        """How far the group is from small: 1 or more when it is not (inf: no floor)."""
        bads = sum(stats.bads[b] for b in group)
        rows = sum(stats.totals[b] for b in group)
        measures = [min(bads, rows - bads) / floor] if floor > 0 else []
        measures += [rows / min_rows] if min_rows > 0 else []
        return min(measures, default=math.inf)

    if floor <= 0 and min_rows <= 0:
        return stats, missing_bin
    present = [b for b in range(len(stats.totals)) if b != missing_bin]
    groups = [
        [present[i] for i in g]
        for g in _merged_groups(len(present), lambda g: low([present[i] for i in g]), 1.0, ordered)
    ]
    new_missing = None
    if missing_bin is not None:
        if low([missing_bin]) < 1.0 and groups:
            largest = max(range(len(groups)), key=lambda k: low(groups[k]))
            groups[largest] = sorted(groups[largest] + [missing_bin])
        else:
            groups = [*groups, [missing_bin]]
            new_missing = len(groups) - 1
    return merge(stats, groups), new_missing


def iv_spread(
    stats: BinStatistics,
    ordered: bool,
    missing_bin: int | None,
    sigma: float,
    monotonic: bool,
    floor: float = 0.0,
    draws: int = NOISE_DRAWS,
    min_rows: float = 0.0,
) -> float:
    """How far the bureau's noise moves this IV: the standard deviation of the IV over
    fresh draws of noise of the same sigma (on positives and negatives, each summing to
    zero, as the bureau's) on the bins
    as the bank received them, each draw then merged as the bank merges (``floor``) and
    evaluated. (Drawn on the merged bins instead, a merged bin's noise of sigma sqrt(k)
    counted as sigma: a review found the spread read half the real one.) A statistic for
    the bank's reader, not a secret: numpy's generator, seeded, so that a table reads the
    same twice."""
    if sigma <= 0 or len(stats.totals) < 2:
        return 0.0
    rng = np.random.default_rng(0)
    bads, goods = np.asarray(stats.bads), np.asarray(stats.goods)
    ivs = []
    for _ in range(draws):
        z = rng.normal(0.0, sigma, (2, len(bads)))
        z -= z.mean(axis=1, keepdims=True)
        noisy_bads = np.maximum(np.rint(bads + z[0]), 0).astype(int)
        noisy_goods = np.maximum(np.rint(goods + z[1]), 0).astype(int)
        drawn = BinStatistics((noisy_bads + noisy_goods).tolist(), noisy_bads.tolist())
        drawn, missing = merge_for_noise(drawn, ordered, missing_bin, floor, min_rows)
        if monotonic and ordered:
            drawn = merge(drawn, monotonic_groups(drawn, missing))
        ivs.append(woe_and_iv(drawn)[1])
    return float(np.std(ivs))
