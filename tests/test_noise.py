"""The exact discrete Laplace sampler (Canonne, Kamath, Steinke 2020) and the bureau's noise
on binned counts: the distribution against its formula, the slot arithmetic, the bank's cut."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from protocols import binning, noise
from protocols.errors import ProtocolViolation


def _pmf(z: int, scale: float) -> float:
    q = math.exp(-1 / scale)
    return (1 - q) / (1 + q) * q ** abs(z)


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(2), Fraction(7, 3)])
def test_discrete_laplace_follows_its_formula(scale):
    draws = np.array([noise.discrete_laplace(scale) for _ in range(10_000)])
    for z in range(-4, 5):
        expected = _pmf(z, float(scale))
        observed = np.mean(draws == z)
        sigma = math.sqrt(expected * (1 - expected) / draws.size)
        assert abs(observed - expected) < 5 * sigma + 1e-4, (z, observed, expected)
    variance = noise.discrete_laplace_variance(scale)
    assert np.var(draws) == pytest.approx(variance, rel=0.1)
    assert abs(np.mean(draws)) < 5 * math.sqrt(variance / draws.size)


def test_bernoulli_exp_matches_exp_minus_gamma():
    for gamma in (Fraction(0), Fraction(1, 3), Fraction(1), Fraction(5, 2)):
        hits = sum(noise.bernoulli_exp(gamma) for _ in range(10_000))
        p = math.exp(-float(gamma))
        assert abs(hits / 10_000 - p) < 5 * math.sqrt(p * (1 - p) / 10_000) + 1e-4


def test_the_sampler_uses_only_the_integers_it_is_given():
    """Injected randomness (for exact tests; production uses secrets) gives one sample
    deterministically; no float and no other generator is consulted."""
    first = random.Random(3)
    second = random.Random(3)
    a = [noise.discrete_laplace(Fraction(2), first.randrange) for _ in range(50)]
    b = [noise.discrete_laplace(Fraction(2), second.randrange) for _ in range(50)]
    assert a == b and len(set(a)) > 3


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        noise.discrete_laplace(Fraction(0))
    with pytest.raises(ValueError):
        noise.bernoulli_exp(Fraction(-1))
    with pytest.raises(ValueError):
        noise.laplace_scale(2, 0.0)
    assert noise.laplace_scale(2, 0.1) == Fraction(20)


def test_bin_noise_keeps_slots_non_negative_and_the_bank_recovers_counts():
    bin_noise = binning.BinNoise(1.0)
    assert bin_noise.scale == 2
    rows = 1000
    bits = bin_noise.slot_bits(rows)
    assert (1 << bits) > rows + 2 * bin_noise.offset
    slots = [5 + bin_noise.sample() for _ in range(200)]
    assert all(0 <= s < (1 << bits) for s in slots)
    counts = binning.noisy_counts(slots, bin_noise.offset, [10] * 200, "f")
    assert all(0 <= c <= 10 for c in counts) and len(set(counts)) > 1
    with pytest.raises(ProtocolViolation, match="out of range"):
        binning.noisy_counts([3 * bin_noise.offset], bin_noise.offset, [10], "f")
