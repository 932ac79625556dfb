"""Exact integer noise for differential privacy: the discrete Laplace and discrete Gaussian
distributions.

The samplers are Algorithms 1, 2 and 3 of C. Canonne, G. Kamath, T. Steinke, "The Discrete
Gaussian for Differential Privacy", NeurIPS 2020 (arXiv:2004.00010). They use only exact
integer arithmetic on rational parameters and uniform integers from the operating system
(:mod:`secrets`), so the output follows the stated distribution exactly: no floating point,
whose rounding can leak the value the noise is meant to hide (Mironov, CCS 2012).

``discrete_laplace(scale)`` returns an integer ``Z`` with ``P(Z = z)`` proportional to
``exp(-|z| / scale)``. ``discrete_gaussian(sigma2)`` returns one with ``P(Z = z)``
proportional to ``exp(-z^2 / (2 sigma2))``. Independent discrete Gaussians of variance
parameter ``sigma2`` added to the coordinates of an integer vector whose L2 norm changes by
at most ``Delta`` between neighbouring data sets give ``Delta^2 / (2 sigma2)``-zero-
concentrated differential privacy (zCDP; Bun and Steinke, TCC 2016; CKS 2020, sec. 2, for
the discrete Gaussian and for vectors of independent ones), and the zCDP parameters of
successive releases add up (Bun and Steinke's composition).

``zero_sum_discrete_gaussian(count, sigma2)`` is the same vector conditioned on summing to
zero: the discrete Gaussian on the lattice ``L = {z in Z^count : sum(z) = 0}``. When the
receiver knows the exact total anyway, noise on the total is pure loss. For a change ``v`` in
``L`` (one unit moving between two coordinates, ``|v|^2 = 2``) the guarantee is the same
``|v|^2 / (2 sigma2)``-zCDP: as in the one-dimensional proof of CKS 2020, the Renyi
divergence of order ``a > 1`` is ``a |v|^2 / (2 sigma2)`` plus ``1 / (a - 1)`` times the
logarithm of ``sum_{z in L} g(z - a v) / sum_{z in L} g(z)`` (``g`` the Gaussian weight), and
that ratio is at most 1 for every shift within the lattice's span, by Poisson summation (the
Fourier transform of ``g`` is positive).
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


def discrete_gaussian(sigma2: Fraction, randbelow: RandBelow = secrets.randbelow) -> int:
    """One sample of the discrete Gaussian of variance parameter ``sigma2`` (CKS 2020,
    Algorithm 3): a discrete Laplace proposal of scale floor(sigma) + 1, accepted with
    probability exp(-(|y| - sigma2 / t)^2 / (2 sigma2)), all in exact rationals."""
    if sigma2 <= 0:
        raise ValueError("the variance parameter must be positive")
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1  # floor(sigma) + 1
    while True:
        y = discrete_laplace(Fraction(t), randbelow)
        gamma = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if bernoulli_exp(gamma, randbelow):
            return y


def zero_sum_discrete_gaussian(
    count: int, sigma2: Fraction, randbelow: RandBelow = secrets.randbelow
) -> list[int]:
    """``count`` discrete Gaussians of variance parameter ``sigma2`` conditioned on summing to
    zero, exactly: the first ``count - 1`` drawn independently, the last their negated sum,
    the whole accepted with probability exp(-last^2 / (2 sigma2)) (rejection sampling, whose
    output has weight prod exp(-z_i^2 / (2 sigma2)) on L; about 1 in sqrt(count) accepted)."""
    if count < 1:
        raise ValueError("the vector needs at least one coordinate")
    while True:
        head = [discrete_gaussian(sigma2, randbelow) for _ in range(count - 1)]
        last = -sum(head)
        if bernoulli_exp(Fraction(last * last) / (2 * sigma2), randbelow):
            return [*head, last]


def gaussian_sigma2(sensitivity_squared: int, rho: float) -> Fraction:
    """The variance parameter that makes a vector of L2 sensitivity sqrt(``sensitivity_
    squared``) rho-zCDP: Delta^2 / (2 rho), exact (rho is a configured decimal, read exactly
    from its shortest representation)."""
    if sensitivity_squared < 1 or not rho > 0:
        raise ValueError("the sensitivity and rho must be positive")
    return Fraction(sensitivity_squared) / (2 * Fraction(repr(float(rho))))
