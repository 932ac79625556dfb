"""Paillier arithmetic on whole vectors, over gmpy2, with `phe` keys.

Keys are `phe` keys and every ciphertext here is a `phe` raw ciphertext (g = n + 1): `phe`
decrypts what this module encrypts and the other way round (tested). What is faster here:

* The key owner encrypts with a Damgard-Jurik-Nielsen randomiser: ``c = (1 + m n) h^x`` with
  ``h = r0^n`` a fixed random n-th residue and ``x`` a fresh uniform exponent of half the
  bit length of n (Damgard, Jurik, Nielsen, "A generalization of Paillier's public-key system
  with applications to electronic voting", Int. J. Inf. Secur. 9 (2010), section 4.2). The
  owner knows p and q, so ``h^x`` comes from two fixed-base tables mod p^2 and q^2 (CRT).
* Encrypted inner products ``prod c_i^{a_i}`` with small integer scalars are
  multi-exponentiations by the bucket method (Pippenger), not one ``pow`` per term.
* Many masked values travel and are decrypted as one packed plaintext (``pack_masked``).

Everything the other party will decrypt is masked with statistically hiding masks (40 bits of
slack) and re-randomised with a fresh textbook encryption under the other party's key (phe's
own ``raw_encrypt``, randomness from the OS), so the decrypting party learns nothing from the
randomness of the ciphertexts it once produced.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np
from phe import paillier

from .errors import InvalidCiphertext, ProtocolViolation

mpz = gmpy2.mpz
PublicKey = paillier.PaillierPublicKey
PrivateKey = paillier.PaillierPrivateKey

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 2048  # below this only behind an explicit test flag
MIN_TEST_KEY_BITS = 512
MAX_KEY_BITS = 4096
STATISTICAL_SECURITY = 40  # bits of slack in every mask
_WINDOW = 8  # bits per window of the fixed-base table


def generate_keypair(
    bits: int = DEFAULT_KEY_BITS, allow_test_keys: bool = False
) -> tuple[PublicKey, PrivateKey]:
    check_key_bits(bits, allow_test_keys)
    return paillier.generate_paillier_keypair(n_length=bits)


def check_key_bits(bits: int, allow_test_keys: bool = False) -> None:
    floor = MIN_TEST_KEY_BITS if allow_test_keys else MIN_KEY_BITS
    if not floor <= bits <= MAX_KEY_BITS or bits % 8:
        hint = "" if allow_test_keys else " (smaller keys only with the explicit test flag)"
        raise ProtocolViolation(
            f"Paillier key size {bits} bits is not allowed: use a multiple of 8 from "
            f"{floor} to {MAX_KEY_BITS}{hint}"
        )


def public_key_from_n(n: int, allow_test_keys: bool = False) -> PublicKey:
    """The other party's public key, checked: odd, of an allowed size, not a perfect power."""
    bits = n.bit_length()
    check_key_bits(bits + (-bits % 8), allow_test_keys)
    if n % 2 == 0 or gmpy2.is_prime(n) or gmpy2.is_square(n):
        raise ProtocolViolation("the Paillier modulus received is not a valid RSA modulus")
    return paillier.PaillierPublicKey(int(n))


def ciphertext_bytes(public_key: PublicKey) -> int:
    return (public_key.nsquare.bit_length() + 7) // 8


# -- encoding ------------------------------------------------------------------------------


def encode(values: np.ndarray, scale_bits: int) -> list[int]:
    """Reals to signed fixed-point integers (round to nearest) at scale 2**scale_bits."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(1 << scale_bits))
    if not np.all(np.isfinite(scaled)):
        raise ValueError("cannot encode a value that is not finite")
    return [int(v) for v in scaled.tolist()]


def to_residue(value: int, n: int) -> int:
    return value % n


def from_residue(value: int, n: int) -> int:
    """A plaintext in [0, n) back to a signed integer (values above n/2 are negative)."""
    return value - n if value > n // 2 else value


# -- serialisation and checks of received ciphertexts ------------------------------------


def ciphertexts_to_bytes(ciphertexts: Sequence[int], public_key: PublicKey) -> bytes:
    width = ciphertext_bytes(public_key)
    return b"".join(int(c).to_bytes(width, "big") for c in ciphertexts)


def ciphertexts_from_bytes(
    data: bytes, public_key: PublicKey, expected: int | None = None
) -> list[gmpy2.mpz]:
    """Parse and check ciphertexts: each in (0, n^2) and coprime with n (else it is not a
    Paillier ciphertext and could leak through decryption)."""
    width = ciphertext_bytes(public_key)
    if len(data) % width:
        raise InvalidCiphertext(
            f"{len(data)} bytes is not a whole number of {width}-byte ciphertexts"
        )
    count = len(data) // width
    if expected is not None and count != expected:
        raise InvalidCiphertext(f"expected {expected} ciphertexts, got {count}")
    n, nsquare = mpz(public_key.n), mpz(public_key.nsquare)
    out = []
    for i in range(count):
        c = mpz(int.from_bytes(data[i * width : (i + 1) * width], "big"))
        if not 0 < c < nsquare or gmpy2.gcd(c, n) != 1:
            raise InvalidCiphertext(f"ciphertext {i} is not in Z*_(n^2) of the key it claims")
        out.append(c)
    return out


# -- the key owner's fast encryption -------------------------------------------------------


class _FixedBase:
    """``base^x mod modulus`` for many x, from a table of base^(j * 2^(8k))."""

    def __init__(self, base: gmpy2.mpz, modulus: gmpy2.mpz, exponent_bits: int) -> None:
        self.modulus = modulus
        self.windows = -(-exponent_bits // _WINDOW)
        self.table: list[list[gmpy2.mpz]] = []
        step = base
        for _ in range(self.windows):
            row = [mpz(1), step]
            for _j in range(2, 1 << _WINDOW):
                row.append(row[-1] * step % modulus)
            self.table.append(row)
            step = row[-1] * step % modulus  # base^(2^(8(k+1)))

    def power(self, exponent: int) -> gmpy2.mpz:
        table, modulus = self.table, self.modulus
        data = exponent.to_bytes(self.windows, "little")
        acc = None
        for k, digit in enumerate(data):
            if digit:
                acc = table[k][digit] if acc is None else acc * table[k][digit] % modulus
        return mpz(1) if acc is None else acc


class OwnerEncryptor:
    """Encrypts under the owner's own key fast (DJN randomiser, CRT, fixed-base tables).

    The tables cost about 2 x 32,000 multiplications (~0.2 s at 2048 bits) once per key."""

    def __init__(self, private_key: PrivateKey) -> None:
        pub = private_key.public_key
        self.public_key = pub
        self.n = mpz(pub.n)
        self.nsquare = mpz(pub.nsquare)
        p, q = mpz(private_key.p), mpz(private_key.q)
        self.psquare, self.qsquare = p * p, q * q
        self.exponent_bits = (pub.n.bit_length() + 1) // 2
        while True:
            r0 = mpz(secrets.randbelow(pub.n - 1) + 1)
            if gmpy2.gcd(r0, self.n) == 1:
                break
        h = gmpy2.powmod(r0, self.n, self.nsquare)  # a random n-th residue
        self._p = _FixedBase(h % self.psquare, self.psquare, self.exponent_bits)
        self._q = _FixedBase(h % self.qsquare, self.qsquare, self.exponent_bits)
        # CRT recombination: x = xp + psquare * ((xq - xp) * psquare^-1 mod qsquare)
        self._p2_inv = gmpy2.invert(self.psquare, self.qsquare)

    def randomiser(self) -> gmpy2.mpz:
        x = secrets.randbits(self.exponent_bits)
        hp, hq = self._p.power(x), self._q.power(x)
        return hp + self.psquare * ((hq - hp) * self._p2_inv % self.qsquare)

    def encrypt(self, values: Iterable[int]) -> list[gmpy2.mpz]:
        """Encrypt signed integers (already fixed-point encoded), each |v| < n/3."""
        n, nsquare = self.n, self.nsquare
        out = []
        for v in values:
            out.append((1 + (v % n) * n) * self.randomiser() % nsquare)
        return out


def encrypt_for_peer(public_key: PublicKey, plaintext: int) -> gmpy2.mpz:
    """A textbook encryption with fresh OS randomness under someone else's key (phe)."""
    return mpz(public_key.raw_encrypt(int(plaintext % public_key.n)))


def decrypt(private_key: PrivateKey, ciphertext: int) -> int:
    """phe's CRT decryption; the plaintext in [0, n)."""
    return int(private_key.raw_decrypt(int(ciphertext)))


# -- homomorphic operations ----------------------------------------------------------------


def add_plain(
    ciphertexts: Sequence[gmpy2.mpz], values: Sequence[int], public_key: PublicKey
) -> list[gmpy2.mpz]:
    """[[a_i]] -> [[a_i + v_i]] (g = n + 1, so g^v = 1 + v n mod n^2)."""
    n, nsquare = mpz(public_key.n), mpz(public_key.nsquare)
    return [c * (1 + (v % n) * n) % nsquare for c, v in zip(ciphertexts, values, strict=True)]


def _window_for(terms: int) -> int:
    if terms < 16:
        return 2
    return max(2, min(10, terms.bit_length() - 3))


def multiexp(bases: Sequence[gmpy2.mpz], exponents: Sequence[int], modulus: gmpy2.mpz) -> gmpy2.mpz:
    """prod bases[i]^exponents[i] mod modulus, exponents >= 0, by the bucket method."""
    pairs = [(b, e) for b, e in zip(bases, exponents, strict=True) if e]
    if not pairs:
        return mpz(1)
    max_bits = max(e for _, e in pairs).bit_length()
    c = _window_for(len(pairs))
    mask = (1 << c) - 1
    result = None
    for window in range((max_bits - 1) // c, -1, -1):
        if result is not None:
            for _ in range(c):
                result = result * result % modulus
        shift = window * c
        buckets: list[gmpy2.mpz | None] = [None] * (mask + 1)
        for b, e in pairs:
            d = (e >> shift) & mask
            if d:
                held = buckets[d]
                buckets[d] = b if held is None else held * b % modulus
        running = acc = None
        for d in range(mask, 0, -1):  # sum_d d * bucket_d as a running product
            held = buckets[d]
            if held is not None:
                running = held if running is None else running * held % modulus
            if running is not None:
                acc = running if acc is None else acc * running % modulus
        if acc is not None:
            result = acc if result is None else result * acc % modulus
    return mpz(1) if result is None else result


def inner_product(
    ciphertexts: Sequence[gmpy2.mpz], scalars: Sequence[int], public_key: PublicKey
) -> gmpy2.mpz:
    """[[sum_i a_i v_i]] from [[v_i]] and signed integers a_i."""
    nsquare = mpz(public_key.nsquare)
    pos_b, pos_e, neg_b, neg_e = [], [], [], []
    for c, a in zip(ciphertexts, scalars, strict=True):
        if a > 0:
            pos_b.append(c)
            pos_e.append(a)
        elif a < 0:
            neg_b.append(c)
            neg_e.append(-a)
    result = multiexp(pos_b, pos_e, nsquare)
    if neg_b:
        result = result * gmpy2.invert(multiexp(neg_b, neg_e, nsquare), nsquare) % nsquare
    return result


def inner_products(
    ciphertexts: Sequence[gmpy2.mpz], matrix: np.ndarray, public_key: PublicKey
) -> list[gmpy2.mpz]:
    """[[A^T v]] for an integer matrix A (rows x columns) and [[v]] (rows)."""
    columns = np.asarray(matrix, dtype=object)
    return [
        inner_product(ciphertexts, list(columns[:, j]), public_key) for j in range(columns.shape[1])
    ]


# -- masked, packed values for the other party to decrypt --------------------------------


@dataclass(frozen=True)
class SlotLayout:
    """How signed values with |v| < 2^value_bits are packed into Paillier plaintexts.

    A slot holds ``v + 2^value_bits + r`` with r uniform in [0, 2^(value_bits + 40)): never
    negative, below 2^(value_bits + 41), so slots never carry into each other."""

    value_bits: int
    modulus_bits: int

    @property
    def slot_bits(self) -> int:
        return self.value_bits + STATISTICAL_SECURITY + 2

    @property
    def slots_per_plaintext(self) -> int:
        per = (self.modulus_bits - 2) // self.slot_bits
        if per < 1:
            raise ValueError("the key is too small for one slot")
        return per

    def plaintexts_for(self, count: int) -> int:
        return -(-count // self.slots_per_plaintext)


@dataclass
class MaskedPacking:
    """What the requester keeps to unmask the packed values it gets back."""

    layout: SlotLayout
    masks: list[int]


def pack_masked(
    values: Sequence[gmpy2.mpz], layout: SlotLayout, peer_key: PublicKey
) -> tuple[list[gmpy2.mpz], MaskedPacking]:
    """[[v_0]], ..., [[v_k]] under the peer's key -> few ciphertexts of masked slots, each
    re-randomised by a fresh encryption of its masks. Returns them and the masks."""
    nsquare = mpz(peer_key.nsquare)
    s = layout.slot_bits
    offset = 1 << layout.value_bits
    per = layout.slots_per_plaintext
    masks = [secrets.randbits(layout.value_bits + STATISTICAL_SECURITY) for _ in values]
    out = []
    for start in range(0, len(values), per):
        group = values[start : start + per]
        acc = group[-1]
        for c in reversed(group[:-1]):  # Horner: acc = acc^(2^s) * c
            acc = gmpy2.powmod(acc, mpz(1) << s, nsquare) * c % nsquare
        plain_masks = 0
        for j, r in enumerate(masks[start : start + per]):
            plain_masks |= (offset + r) << (s * j)
        out.append(acc * encrypt_for_peer(peer_key, plain_masks) % nsquare)
    return out, MaskedPacking(layout, masks)


def decrypt_packed(
    ciphertexts: Sequence[gmpy2.mpz], private_key: PrivateKey, layout: SlotLayout, slots: int
) -> list[int]:
    """The decrypting side: plaintexts of packed masked slots, each checked to fit."""
    per = layout.slots_per_plaintext
    if len(ciphertexts) != layout.plaintexts_for(slots):
        raise ProtocolViolation(
            f"expected {layout.plaintexts_for(slots)} packed ciphertexts for {slots} values, "
            f"got {len(ciphertexts)}"
        )
    out = []
    for i, c in enumerate(ciphertexts):
        in_this = min(per, slots - i * per)
        m = decrypt(private_key, c)
        if m >> (layout.slot_bits * in_this):
            raise ProtocolViolation("a packed value is larger than its slots: refusing it")
        out.append(m)
    return out


def unpack_masked(plaintexts: Sequence[int], packing: MaskedPacking) -> list[int]:
    """The requesting side: remove the masks; each value checked against its bound."""
    layout = packing.layout
    s, per = layout.slot_bits, layout.slots_per_plaintext
    slot_mask = (1 << s) - 1
    offset = 1 << layout.value_bits
    if len(plaintexts) != layout.plaintexts_for(len(packing.masks)):
        raise ProtocolViolation("the peer returned the wrong number of packed plaintexts")
    values = []
    for k, r in enumerate(packing.masks):
        m = int(plaintexts[k // per])
        if m < 0:
            raise ProtocolViolation("a decrypted packed value is negative")
        v = ((m >> (s * (k % per))) & slot_mask) - offset - r
        if not -offset < v < offset:
            raise ProtocolViolation(
                "a value decrypted by the peer is outside its bound: the peer decrypted "
                "something else or the computation was corrupted"
            )
        values.append(v)
    return values


def plaintexts_to_bytes(values: Sequence[int], public_key: PublicKey) -> bytes:
    width = (public_key.n.bit_length() + 7) // 8
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def plaintexts_from_bytes(data: bytes, public_key: PublicKey, expected: int) -> list[int]:
    width = (public_key.n.bit_length() + 7) // 8
    if len(data) != width * expected:
        raise ProtocolViolation(f"expected {expected} plaintexts of {width} bytes")
    values = [int.from_bytes(data[i * width : (i + 1) * width], "big") for i in range(expected)]
    if any(v >= public_key.n for v in values):
        raise ProtocolViolation("a returned plaintext is not below n")
    return values
