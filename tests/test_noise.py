"""The exact samplers (Canonne, Kamath, Steinke 2020) and the bureau's noise on binned
counts: each distribution against its exact probability mass function (chi-square, mean,
variance, tails), the zero-sum vectors, the zCDP calibration, the slot arithmetic, the
bank's cut."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from protocols import binning, noise
from protocols.errors import ProtocolViolation

DRAWS = 20_000


def _seeded(name: str):
    """A seeded source of uniform integers for the checks against an exact pmf, so that each
    gives the same verdict on every run (a p-value threshold on fresh randomness fails now
    and then by design). The samplers are the production code; only their uniform integers
    come from here. The tail and Bernoulli checks below keep the default, secrets."""
    return random.Random(f"xinrong-noise-{name}").randrange


def _exact_pmf(weight, support: int) -> dict[int, float]:
    """P(Z = z) for |z| <= support, normalised over a range wide enough that the rest of the
    mass is below 1e-30."""
    wide = range(-40 * support, 40 * support + 1)
    norm = math.fsum(weight(z) for z in wide)
    return {z: weight(z) / norm for z in range(-support, support + 1)}


def _gaussian_weight(sigma2: Fraction):
    return lambda z: math.exp(-(z * z) / (2 * float(sigma2)))


def _chi_square_p(draws: np.ndarray, pmf: dict[int, float]) -> float:
    """Goodness of fit over the cells of the pmf with an expected count of at least 5, the
    rest pooled into one tail cell."""
    cells = [z for z, p in pmf.items() if p * draws.size >= 5]
    observed = [int(np.sum(draws == z)) for z in cells]
    expected = [pmf[z] * draws.size for z in cells]
    observed.append(draws.size - sum(observed))
    expected.append(draws.size - sum(expected))
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(2), Fraction(25)])
def test_discrete_gaussian_follows_its_exact_pmf(sigma2):
    source = _seeded(f"gaussian-{sigma2}")
    draws = np.array([noise.discrete_gaussian(sigma2, source) for _ in range(DRAWS)])
    pmf = _exact_pmf(_gaussian_weight(sigma2), math.isqrt(int(sigma2) + 1) * 8 + 2)
    assert _chi_square_p(draws, pmf) > 1e-4
    variance = math.fsum(p * z * z for z, p in pmf.items())  # just below sigma2 (CKS, Cor. 9)
    assert variance <= float(sigma2)
    assert abs(np.mean(draws)) < 5 * math.sqrt(variance / DRAWS)
    assert np.var(draws) == pytest.approx(variance, rel=0.06)
    # the tail beyond 2 sigma, against the exact mass there
    cut = 2 * math.sqrt(sigma2)
    tail = math.fsum(p for z, p in pmf.items() if abs(z) > cut)
    seen = float(np.mean(np.abs(draws) > cut))
    assert abs(seen - tail) < 5 * math.sqrt(tail * (1 - tail) / DRAWS) + 1e-4


def test_discrete_gaussian_tail_is_sub_gaussian():
    """P(|Z| >= 6 sigma) is about 2e-9: no draw of 20,000 at sigma 5 should reach it."""
    draws = np.array([noise.discrete_gaussian(Fraction(25)) for _ in range(DRAWS)])
    assert np.max(np.abs(draws)) < 30


def test_zero_sum_vectors_follow_the_lattice_gaussian():
    """Three coordinates summing to zero: the first two (the third follows) against the exact
    pmf on the lattice, weight exp(-(a^2 + b^2 + (a + b)^2) / (2 sigma2)); and the variance
    of each coordinate against that pmf (a third less than sigma2's, on three bins)."""
    sigma2 = Fraction(4)
    source = _seeded("zero-sum")
    vectors = np.array([noise.zero_sum_discrete_gaussian(3, sigma2, source) for _ in range(DRAWS)])
    assert np.all(vectors.sum(axis=1) == 0)
    span = range(-20, 21)
    weight = {
        (a, b): math.exp(-(a * a + b * b + (a + b) ** 2) / (2 * float(sigma2)))
        for a in span
        for b in span
    }
    norm = math.fsum(weight.values())
    pmf = {cell: w / norm for cell, w in weight.items()}
    cells = [cell for cell, p in pmf.items() if p * DRAWS >= 5]
    pairs = [tuple(v) for v in vectors[:, :2].tolist()]
    counted = {cell: 0 for cell in cells}
    for pair in pairs:
        if pair in counted:
            counted[pair] += 1
    observed = [counted[c] for c in cells]
    expected = [pmf[c] * DRAWS for c in cells]
    observed.append(DRAWS - sum(observed))
    expected.append(DRAWS - sum(expected))
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    variance = math.fsum(p * a * a for (a, _), p in pmf.items())
    assert variance == pytest.approx(2 / 3 * float(sigma2), rel=0.01)
    assert np.var(vectors[:, 0]) == pytest.approx(variance, rel=0.06)
    assert noise.zero_sum_discrete_gaussian(1, sigma2) == [0]


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(2), Fraction(7, 3)])
def test_discrete_laplace_follows_its_exact_pmf(scale):
    source = _seeded(f"laplace-{scale}")
    draws = np.array([noise.discrete_laplace(scale, source) for _ in range(DRAWS)])
    pmf = _exact_pmf(lambda z: math.exp(-abs(z) / float(scale)), 40)
    assert _chi_square_p(draws, pmf) > 1e-4
    q = math.exp(-1 / float(scale))
    variance = 2 * q / (1 - q) ** 2
    assert np.var(draws) == pytest.approx(variance, rel=0.1)
    assert abs(np.mean(draws)) < 5 * math.sqrt(variance / DRAWS)


def test_the_chi_square_check_can_fail():
    """The same check rejects draws of a neighbouring sigma: it has the power to fail."""
    source = _seeded("power")
    draws = np.array([noise.discrete_gaussian(Fraction(4), source) for _ in range(DRAWS)])
    assert _chi_square_p(draws, _exact_pmf(_gaussian_weight(Fraction(5)), 20)) < 1e-4


def test_bernoulli_exp_matches_exp_minus_gamma():
    for gamma in (Fraction(0), Fraction(1, 3), Fraction(1), Fraction(5, 2)):
        hits = sum(noise.bernoulli_exp(gamma) for _ in range(10_000))
        p = math.exp(-float(gamma))
        assert abs(hits / 10_000 - p) < 5 * math.sqrt(p * (1 - p) / 10_000) + 1e-4


def test_the_samplers_use_only_the_integers_they_are_given():
    """Injected randomness (for exact tests; production uses secrets) gives one sample
    deterministically; no float and no other generator is consulted."""
    for sample in (
        noise.discrete_laplace,
        noise.discrete_gaussian,
        lambda s2, r: noise.zero_sum_discrete_gaussian(4, s2, r)[0],
    ):
        first, second = random.Random(3), random.Random(3)
        a = [sample(Fraction(4), first.randrange) for _ in range(50)]
        b = [sample(Fraction(4), second.randrange) for _ in range(50)]
        assert a == b and len(set(a)) > 3


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        noise.discrete_laplace(Fraction(0))
    with pytest.raises(ValueError):
        noise.discrete_gaussian(Fraction(0))
    with pytest.raises(ValueError):
        noise.bernoulli_exp(Fraction(-1))
    with pytest.raises(ValueError):
        noise.gaussian_sigma2(2, 0.0)
    with pytest.raises(ValueError):
        noise.zero_sum_discrete_gaussian(0, Fraction(1))


def test_the_calibration_is_exact_zcdp():
    """sigma^2 = Delta^2 / (2 rho) exactly: rho 0.0625 per feature (the default), sensitivity
    sqrt(2) (one enterprise moving between two bins), is sigma 4."""
    assert noise.gaussian_sigma2(2, 0.0625) == 16
    assert noise.gaussian_sigma2(2, 0.1) == 10
    assert noise.gaussian_sigma2(2, 0.04) == 25
    bin_noise = binning.BinNoise(0.0625)
    assert bin_noise.sigma2 == 16 and bin_noise.sigma == 4.0
    # the bound at which noise is clamped is out of reach: P(|Z| >= 2^40) < exp(-2^79 / 16)
    assert binning.NOISE_BOUND > 1e9 * bin_noise.sigma


def test_bin_noise_keeps_slots_non_negative_and_the_bank_recovers_counts():
    """Positives then negatives per bin, each with its own zero-sum noise: the bank's
    counts add up to its own totals, are never negative, and a bin's size is their sum; an
    answer whose counts do not add up, or out of range, is refused."""
    bin_noise = binning.BinNoise(0.0625)
    rows, bins = 1000, 10
    bits = bin_noise.slot_bits(rows)
    assert (1 << bits) > rows + 2 * bin_noise.offset
    positives = [5, 0, 20, 1, 30, 4, 10, 10, 0, 20]  # 100
    sizes = [100] * bins
    negatives = [t - p for t, p in zip(sizes, positives, strict=True)]
    seen = set()
    for _ in range(50):
        slots = [c + z for c, z in zip(positives, bin_noise.sample(bins), strict=True)]
        slots += [c + z for c, z in zip(negatives, bin_noise.sample(bins), strict=True)]
        assert all(0 <= s < (1 << bits) for s in slots)
        stats = binning.noisy_bins(slots, bin_noise.offset, 100, rows, "f", bin_noise.sigma)
        assert min(stats.bads) >= 0 and min(stats.goods) >= 0
        assert sum(stats.bads) >= 100 and sum(stats.goods) >= 900  # only the cut adds
        seen.add(tuple(stats.totals))
    assert len(seen) > 1  # the sizes are noisy too
    sigma = bin_noise.sigma
    slots[0] += 1  # no longer the bank's 100 positives
    with pytest.raises(ProtocolViolation, match="add up to 101 positives"):
        binning.noisy_bins(slots, bin_noise.offset, 100, rows, "f", sigma)
    # a hostile bureau's counts: far beyond any noise of this sigma (a review's +-2^60 and a
    # bin of 1.1e12 rows passed a check against the bureau's own offset), or another offset
    offset = bin_noise.offset
    near = [offset + 260, offset - 160, offset + 1060, offset - 160]  # 40 sigmas below 0
    assert binning.noisy_bins(near, offset, 100, rows, "f", sigma).totals == [1320, 0]
    far = [offset + 261, offset - 161, offset + 1061, offset - 161]
    with pytest.raises(ProtocolViolation, match="out of range"):
        binning.noisy_bins(far, offset, 100, rows, "f", sigma)
    with pytest.raises(ProtocolViolation, match="noise offset"):
        binning.noisy_bins([v + 2**60 for v in near], offset + 2**60, 100, rows, "f", sigma)
