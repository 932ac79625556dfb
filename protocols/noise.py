"""Exact integer noise for differential privacy: the discrete Laplace distribution.

The samplers are Algorithms 1 and 2 of C. Canonne, G. Kamath, T. Steinke, "The Discrete
Gaussian for Differential Privacy", NeurIPS 2020 (arXiv:2004.00010). They use only exact
integer arithmetic on rational parameters and uniform integers from the operating system
(:mod:`secrets`), so the output follows the stated distribution exactly: no floating point,
whose rounding can leak the value the noise is meant to hide (Mironov, CCS 2012).

``discrete_laplace(scale)`` returns an integer ``Z`` with ``P(Z = z)`` proportional to
``exp(-|z| / scale)``. Added to a count whose value can change by at most ``Delta`` between
two neighbouring data sets, it gives ``epsilon``-differential privacy for
``scale = Delta / epsilon`` (the discrete analogue of the Laplace mechanism; CKS 2020, sec. 2).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from fractions import Fraction

RandBelow = Callable[[int], int]  # a uniform integer in [0, n); secrets.randbelow by default


def _bernoulli(p: Fraction, randbelow: RandBelow) -> bool:
    return randbelow(p.denominator) < p.numerator


def bernoulli_exp(gamma: Fraction, randbelow: RandBelow = secrets.randbelow) -> bool:
    """True with probability exp(-gamma), gamma >= 0 rational (CKS 2020, Algorithm 1)."""
    if gamma < 0:
        raise ValueError("gamma must not be negative")
    while gamma > 1:  # exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma)))
        if not bernoulli_exp(Fraction(1), randbelow):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k, randbelow):
        k += 1
    return k % 2 == 1


def discrete_laplace(scale: Fraction, randbelow: RandBelow = secrets.randbelow) -> int:
    """One sample of the discrete Laplace distribution of ``scale`` = t/s (CKS 2020,
    Algorithm 2): P(z) proportional to exp(-|z| * s / t)."""
    if scale <= 0:
        raise ValueError("the scale must be positive")
    t, s = scale.numerator, scale.denominator
    while True:
        u = randbelow(t)
        if not bernoulli_exp(Fraction(u, t), randbelow):
            continue
        v = 0
        while bernoulli_exp(Fraction(1), randbelow):
            v += 1
        y = (u + t * v) // s
        negative = randbelow(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def laplace_scale(sensitivity: int, epsilon: float) -> Fraction:
    """The scale that makes a sum of L1 ``sensitivity`` epsilon-DP, as an exact fraction
    (epsilon is a configured decimal, read exactly from its shortest representation)."""
    if sensitivity < 1 or not epsilon > 0:
        raise ValueError("the sensitivity and epsilon must be positive")
    return Fraction(sensitivity) / Fraction(repr(float(epsilon)))


def discrete_laplace_variance(scale: Fraction) -> float:
    """2 q / (1 - q)^2 with q = exp(-1/scale): what the bank should expect of the noise."""
    q = math.exp(-1 / float(scale))
    return 2 * q / (1 - q) ** 2
