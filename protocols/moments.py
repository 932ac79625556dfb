"""A training step from a batch's cross moments: for a narrow bureau, the joint model's
steps (``vertical_lr``) without a ciphertext per row per step, and with what each party
learns unchanged.

With the Taylor loss a batch's gradients and loss depend on its rows only through sums over
them: the cross moments ``C = X_B^T [y' | X_A]`` (``y' = 2 - 4y``), the bureau's Gram matrix
``G = X_B^T X_B`` and the bank's own ``[y' | X_A]^T [y' | X_A]``. This is the observation of
Aono, Hayashi, Trieu Phong and Wang ("Scalable and Secure Logistic Regression via
Homomorphic Encryption", ACM CODASPY 2016), here inside the secret-shared protocol. The
batches are the same in every epoch (in a fresh order each epoch), so:

  once a job    the bank encrypts each row, packed: ``[[y'_i, x_A,i]]_A`` (one ciphertext);
                the bureau forms ``[[C]]_A`` per batch (one packed ciphertext per bureau
                column) and sends it masked, ``M = C + R`` (R uniform, 41 bits above |C|):
                the bank keeps M, the bureau keeps R.
  each step     the bank sends ``[[s1]]_A`` and ``[[w_A]]_A``; with ``a = (1, w_A)`` (at
                2^-12, as every weight and share here) and the
                bureau's share ``s2`` the bureau answers, all under the bank's key:
                  D = -R a + G (s1 + s2) + q      -> the bank's share of X_B^T 4d is M a + D,
                                                     the bureau's is -q (as in vertical_lr)
                  P = G s1 + q'                    (masked)
                  W_l = C^T d_l + rho_l            for the 24-bit digits d_l of s2 (masked)
                  Z = -R_A^T s1 - sum_l 2^(24 l) rho_l,A   (training steps only)
                      -> X_A^T u_B = M_A^T s1 + sum_l 2^(24 l) W_l,A + Z, the bank's gradient
                  one ciphertext with the rest of the loss:
                      s1^T (q' - 2q) - 2 a^T rho + s2^T G s2
                and the bank computes the Taylor loss's sum (4d)^2 from what it holds.

The bank learns what it learned before: its share of the bureau's gradient under a fresh
mask, its own gradient (``X_A^T u_B``) and the loss; everything else it decrypts is masked
by values drawn by the bureau (M by R, P by q', W by rho) or is fixed by those and its
outputs (D, Z, the loss term). The bureau decrypts nothing during training: its view is
ciphertexts under the bank's key. docs/protocol-training.md has each view and the derivation.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import gmpy2
import numpy as np

from . import paillier as he
from .errors import ProtocolViolation

# |C_jk| < 2^33: a batch has fewer than 2^13 rows (at most twice MAX_BATCH less one) of
# |x8| <= 2^10 times |y'8| = 2^7 or |x8| <= 2^10; |G_jk| < 2^33 likewise
MOMENT_BITS = 33
# R, the masks of the cross moments: 41 bits above their bound
CROSS_MASK_BITS = MOMENT_BITS + 1 + he.STATISTICAL_SECURITY
WEIGHT_BITS = 22  # |w| < 2^10 at 2^-12, for the bank's own weights and the bureau's
LIMB_BITS = 24  # the digits of s2 that multiply the packed cross moments
MAX_SHARE_BITS = 480  # a share bound beyond this is refused (shares stay near 2^100)
# the bureau's share of X_B^T 4d is masked as in vertical_lr (VALUE_BITS there), with one
# bit more: here u_A is not clipped, and an honest bank stops only once |2 + u_A - 4y|
# reaches 2^11 (``BankTrainer._open_moments``), so |4d| < 2^11 + 2^10 < 2^12
GRADIENT_VALUE_BITS = 53


def _bits(count: int) -> int:
    return max(1, int(count).bit_length())


def row_layout(bureau_columns: int, modulus_bits: int) -> he.SlotLayout:
    """The slots of a packed row, of ``C`` and of every ``W_l``: wide enough for
    ``sum_j C_jk d_jl`` with |d| <= 2^23 over the bureau's columns, plus its mask."""
    return he.SlotLayout(MOMENT_BITS + LIMB_BITS - 1 + _bits(bureau_columns), modulus_bits)


def pays(bank_columns: int, bureau_columns: int, batch_rows: int, modulus_bits: int) -> bool:
    """Whether a job takes this route. A row (y' and the bank's columns) must fit one packed
    plaintext, and a step must cost well under the per-row route's. Measured at 2048 bits
    on a 2-core machine (BENCHMARKS.md): a step from moments about 0.2 s + 0.1 ms x
    k_B (k_A + k_B), what a job does once about 1.1 ms + 0.035 ms x k_B a row, against
    about 2.2 ms + 0.028 ms x k_B a row and step per row. With the once-only work spread
    over ten epochs and a margin of 20% this is ``k_B (k_A + k_B) <= 16 m - 2000``: 10 x 24
    (default_credit) or 43 x 50 at 1,024 rows go from moments; batches of a few hundred rows
    or fewer, and the FATE shape (300 bureau columns), per row."""
    if 1 + bank_columns > row_layout(bureau_columns, modulus_bits).slots_per_plaintext:
        return False
    return bureau_columns * (bank_columns + bureau_columns) <= 16 * batch_rows - 2000


@dataclass(frozen=True)
class Layouts:
    """Every slot layout of a step, from the key, the two column counts and the bound of
    the shares that the bureau states with each answer (``share_bits``)."""

    rows: he.SlotLayout  # packed rows, M and W_l
    gradient: he.SlotLayout  # D
    gram: he.SlotLayout  # P
    cross: he.SlotLayout  # Z
    limbs: int
    share_bits: int

    @staticmethod
    def of(modulus_bits: int, bank_columns: int, bureau_columns: int, share_bits: int) -> Layouts:
        rows = row_layout(bureau_columns, modulus_bits)
        limbs = (share_bits + LIMB_BITS) // LIMB_BITS  # balanced digits of |s| < 2^share_bits
        # |R a| < k_A 2^74 2^22; 2^12 R_0, G w_B and q are smaller
        gradient = CROSS_MASK_BITS + WEIGHT_BITS + _bits(bank_columns) + 1
        gram = MOMENT_BITS + share_bits + _bits(bureau_columns)
        cross = 1 + max(
            CROSS_MASK_BITS + share_bits + _bits(bureau_columns),
            LIMB_BITS * (limbs - 1) + rows.mask_bits + 1,
        )
        return Layouts(
            rows,
            he.SlotLayout(gradient, modulus_bits),
            he.SlotLayout(gram, modulus_bits),
            he.SlotLayout(cross, modulus_bits),
            limbs,
            share_bits,
        )


def share_bits_for(own_share: Sequence[int]) -> int:
    """The bound the bureau states: an honest bank's share is ``w_B - s2`` (give or take a
    unit), so |s1| < 2^(bits + 2) with bits covering both |s2| and |w_B| < 2^22; rounded up
    to whole 24-bit digits, so that it tells the bank no more than how many digits its own
    share has (its masks' growth, not its weights)."""
    largest = max((abs(int(s)) for s in own_share), default=0)
    bits = max(largest.bit_length(), WEIGHT_BITS) + 2
    return -(-bits // LIMB_BITS) * LIMB_BITS


def balanced_digits(values: Sequence[int], count: int) -> np.ndarray:
    """Digits in [-2^23, 2^23) with ``v = sum_l 2^(24 l) d_l`` (values x count)."""
    base, half = 1 << LIMB_BITS, 1 << (LIMB_BITS - 1)
    out = np.zeros((len(values), count), dtype=np.int64)
    for i, value in enumerate(values):
        v = int(value)
        for limb in range(count):
            d = v & (base - 1)
            d = d - base if d >= half else d
            out[i, limb] = d
            v = (v - d) >> LIMB_BITS
        if v:
            raise ValueError("a value has more digits than its bound allows")
    return out


# -- the bank ------------------------------------------------------------------------------


def packed_rows(x8: np.ndarray, labels: np.ndarray, layout: he.SlotLayout) -> list[int]:
    """Each row's ``y'`` (at 2^-6: 128 for a good, -128 for a bad) and its fixed-point
    columns, packed into one signed integer (the bank encrypts it once per job)."""
    s = layout.slot_bits
    y8 = np.where(np.asarray(labels) > 0.5, -128, 128).astype(np.int64)
    values = np.column_stack([y8, x8]).tolist()
    return [sum(int(v) << (s * k) for k, v in enumerate(row)) for row in values]


def row_parts(x8: np.ndarray, labels: np.ndarray, weights: Sequence[int]) -> list[int]:
    """``y' + x_A . w_A`` per row at 2^-18 (``2 + u_A - 4y``, unclipped): the bank's own
    part of each residual, from the same fixed point as its packed rows."""
    y8 = np.where(np.asarray(labels) > 0.5, -128, 128).astype(np.int64)
    own = [int(v) for v in (x8 @ np.asarray(weights, dtype=np.int64)).tolist()]
    return [(int(y) << 12) + v for y, v in zip(y8.tolist(), own, strict=True)]


@dataclass
class Opened:
    """What the bank takes from one step."""

    gradient_share: list[int]  # its share of X_B^T 4d at 2^-24 (value + q)
    cross_gradient: list[int]  # X_A^T u_B at 2^-24 (training steps)
    interaction: int  # 2 a^T C^T w_B + w_B^T G w_B at 2^-36: sum (4d)^2 less sum own^2


def open_step(
    plain: Sequence[int],
    cross: list[list[int]],
    s1: Sequence[int],
    weights: Sequence[int],
    layouts: Layouts,
    bureau_columns: int,
    training: bool,
    modulus: int,
) -> Opened:
    """The bank's side: ``plain`` are the step's decrypted plaintexts in the order the
    bureau sent them (D, P, the W_l, Z, the loss term); ``cross`` is its M (k_B rows of
    1 + k_A); ``weights`` are ``a = (2^12, w_A)`` at 2^-12."""
    kb, ka1 = bureau_columns, len(weights)
    counts = [
        layouts.gradient.plaintexts_for(kb),
        layouts.gram.plaintexts_for(kb),
        layouts.limbs,
        layouts.cross.plaintexts_for(ka1 - 1) if training else 0,
        1,
    ]
    if len(plain) != sum(counts):
        raise ProtocolViolation(f"expected {sum(counts)} values from the bureau, got {len(plain)}")
    cuts = np.cumsum([0, *counts]).tolist()
    part = [list(plain[a:b]) for a, b in itertools.pairwise(cuts)]
    d = he.unpack_slots(part[0], layouts.gradient, kb, bounded=True)
    p = he.unpack_slots(part[1], layouts.gram, kb, bounded=False)
    v = [0] * ka1
    for limb, m in enumerate(part[2]):
        for k, w in enumerate(he.unpack_slots([m], layouts.rows, ka1, bounded=False)):
            v[k] += w << (LIMB_BITS * limb)
    term = he.from_residue(int(part[4][0]), modulus)
    a = [int(w) for w in weights]
    ma = [sum(m * w for m, w in zip(row, a, strict=True)) for row in cross]
    ms1 = [sum(cross[j][k] * int(s1[j]) for j in range(kb)) for k in range(ka1)]
    s1d = sum(int(x) * y for x, y in zip(s1, d, strict=True))
    s1p = sum(int(x) * y for x, y in zip(s1, p, strict=True))
    interaction = (
        2 * sum(x * y for x, y in zip(a, ms1, strict=True))
        + 2 * sum(x * y for x, y in zip(a, v, strict=True))
        + 2 * s1d
        - s1p
        + term
    )
    cross_gradient: list[int] = []
    if training:
        z = he.unpack_slots(part[3], layouts.cross, ka1 - 1, bounded=True)
        cross_gradient = [ms1[k] + v[k] + z[k - 1] for k in range(1, ka1)]
    return Opened([x + y for x, y in zip(ma, d, strict=True)], cross_gradient, interaction)


# -- the bureau ----------------------------------------------------------------------------


@dataclass
class BatchMoments:
    """What the bureau keeps of one batch for the whole job."""

    cross: list[gmpy2.mpz]  # [[C_j]]_A, one packed ciphertext per bureau column
    masks: list[list[int]]  # R: the bank holds C + R
    gram: np.ndarray  # G = X_B^T X_B (int64)


def batch_moments(
    rows: Sequence[gmpy2.mpz],
    x8: np.ndarray,
    bank_columns: int,
    layout: he.SlotLayout,
    key: he.PublicKey,
    executor: Executor | None,
    counts: he.OpCounts,
    noise: he.NoisePool | None,
) -> tuple[BatchMoments, list[gmpy2.mpz]]:
    """``[[C]]`` from the bank's packed rows, and ``M = C + R`` for the bank (one packed
    ciphertext per bureau column, each with a textbook ``r^n``)."""
    cross = he.inner_products(rows, x8, key, executor, counts)
    width = 1 + bank_columns
    masks = [[secrets.randbits(CROSS_MASK_BITS) for _ in range(width)] for _ in cross]
    sent = []
    for c, r in zip(cross, masks, strict=True):
        packed, _ = he.mask_packed([c], [0] * width, layout, key, r, noise)
        sent.extend(packed)
    counts.peer_encryptions += len(sent)
    return BatchMoments(cross, masks, x8.T @ x8), sent


@dataclass
class StepAnswer:
    """The bureau's answer to one step, in the order the bank opens it."""

    share_bits: int
    gradient: list[gmpy2.mpz]  # D, packed
    gram: list[gmpy2.mpz]  # P, packed
    limbs: list[gmpy2.mpz]  # W_l
    cross: list[gmpy2.mpz]  # Z, packed (training steps)
    loss_term: gmpy2.mpz
    masks: list[int]  # q: the bureau's share of X_B^T 4d is -q (kept, never sent)


def step_answer(
    batch: BatchMoments,
    share: Sequence[gmpy2.mpz],
    weights: Sequence[gmpy2.mpz],
    own: Sequence[int],
    training: bool,
    key: he.PublicKey,
    executor: Executor | None,
    counts: he.OpCounts,
    noise: he.NoisePool | None,
) -> StepAnswer:
    """The bureau's side: ``share`` is ``[[s1]]_A`` (k_B), ``weights`` is ``[[w_A]]_A``
    (k_A, the bank's columns), ``own`` is s2, all at 2^-12."""
    kb, ka = len(share), len(weights)
    nsquare = he.mpz(key.nsquare)
    bits = share_bits_for(own)
    lay = Layouts.of(key.n.bit_length(), ka, kb, bits)
    gram = batch.gram
    r = batch.masks
    # [[G s1]] (G is symmetric); D = -R a + G s1 + G s2 + q with a = (2^12, w_A)
    gs1 = he.inner_products(list(share), gram, key, None, counts)
    ra = he.power_products(
        list(weights), [[r[j][k + 1] for j in range(kb)] for k in range(ka)], key
    )
    gs2 = [sum(int(g) * int(t) for g, t in zip(row, own, strict=True)) for row in gram.tolist()]
    q = [secrets.randbits(GRADIENT_VALUE_BITS + 1 + he.STATISTICAL_SECURITY) for _ in range(kb)]
    d = he.add_plain(
        [g * gmpy2.invert(c, nsquare) % nsquare for g, c in zip(gs1, ra, strict=True)],
        [gs2[j] + q[j] - (r[j][0] << 12) for j in range(kb)],
        key,
    )
    gradient, _ = he.pack_masked(d, lay.gradient, key, None, [0] * kb, noise)
    q_gram = he.draw_masks(lay.gram, kb)
    gram_share, _ = he.pack_masked(gs1, lay.gram, key, None, q_gram, noise)
    # W_l = C^T d_l + rho_l for the digits d_l of s2
    digits = balanced_digits(own, lay.limbs)
    w = he.inner_products(batch.cross, digits, key, None, counts)
    rho = [he.draw_masks(lay.rows, ka + 1) for _ in range(lay.limbs)]
    limbs = []
    for c, masks in zip(w, rho, strict=True):
        packed, _ = he.mask_packed([c], [0] * (ka + 1), lay.rows, key, masks, noise)
        limbs.extend(packed)
    rho_total = [
        sum(rho[limb][k] << (LIMB_BITS * limb) for limb in range(lay.limbs)) for k in range(ka + 1)
    ]
    cross: list[gmpy2.mpz] = []
    if training:  # Z = -R_A^T s1 - rho_A: with M and W the bank's gradient X_A^T u_B
        rs1 = he.power_products(
            list(share), [[r[j][k + 1] for k in range(ka)] for j in range(kb)], key
        )
        z = he.add_plain([gmpy2.invert(c, nsquare) for c in rs1], [-t for t in rho_total[1:]], key)
        cross, _ = he.pack_masked(z, lay.cross, key, None, [0] * ka, noise)
    # the loss term: s1^T (q' - 2q) - 2 a^T rho + s2^T G s2
    exponents = [[-2 * rho_total[k + 1]] for k in range(ka)] + [
        [qg - 2 * qq] for qg, qq in zip(q_gram, q, strict=True)
    ]
    (term,) = he.power_products([*weights, *share], exponents, key)
    own_gram = sum(int(t) * g for t, g in zip(own, gs2, strict=True))
    (term,) = he.add_plain([term], [own_gram - (rho_total[0] << 13)], key)
    (fresh,) = noise.take(1) if noise is not None else [he.textbook_noise(key)]
    counts.peer_encryptions += len(gradient) + len(gram_share) + len(limbs) + len(cross) + 1
    return StepAnswer(bits, gradient, gram_share, limbs, cross, term * fresh % nsquare, q)
