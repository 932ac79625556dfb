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

Everything the other party will decrypt is masked with statistically hiding masks (a full 40
bits of slack above the value's range; values it only decrypts and returns are padded over
all of Z_n instead, ``pack_padded``) and re-randomised with a textbook ``r^n`` under the
other party's key, r uniform in Z*_n from ``secrets``. Not with a DJN ``h^x``: the decrypting
party holds the factorisation, can recover any ciphertext's randomness, and the DJN analysis
does not cover such an adversary (issue 12, item 6); a uniform n-th residue is exactly what a
fresh encryption carries, whoever looks at it.

Both arguments assume the other party's modulus is a Paillier modulus: with ``gcd(n,
phi(n)) = 1``, every element of Z*_(n^2) is ``(1 + n)^m s^n`` for one m, and a pad and an
``r^n`` hide everything but the padded plaintext. A party that chose n otherwise (small
primes dividing another factor minus one) has characters of Z*_(n^2) that both leave
unchanged, and reads through them what was multiplied into its ciphertexts (a review read a
bank's features so). So a public key never comes alone: its owner proves ``gcd(n, phi(n)) =
1`` (``prove_key``, ``public_key_from_n``).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import gmpy2
import numpy as np
from phe import paillier
from phe.paillier import PaillierPrivateKey as PrivateKey
from phe.paillier import PaillierPublicKey as PublicKey

from .errors import InvalidCiphertext, ProtocolViolation

mpz = gmpy2.mpz

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 2048  # below this only behind an explicit test flag
MIN_TEST_KEY_BITS = 512
MAX_KEY_BITS = 4096
STATISTICAL_SECURITY = 40  # bits of slack in every mask
_WINDOW = 8  # bits per window of a fixed-base table (16 MB at 2048 bits, 0.1 s to build)
# The key owner encrypts every row: wider windows, 103 instead of 128 multiplications per
# modulus, for 2 x 27 MB of tables (0.25 s to build) per key.
_OWNER_WINDOW = 10


def generate_keypair(
    bits: int = DEFAULT_KEY_BITS, allow_test_keys: bool = False
) -> tuple[PublicKey, PrivateKey]:
    check_key_bits(bits, allow_test_keys)
    return paillier.generate_paillier_keypair(n_length=bits)


def check_key_bits(bits: int, allow_test_keys: bool = False) -> None:
    floor = MIN_TEST_KEY_BITS if allow_test_keys else MIN_KEY_BITS
    if not floor <= bits <= MAX_KEY_BITS or bits % 8:
        hint = "" if allow_test_keys else " (smaller keys only for tests: --allow-test-keys)"
        raise ProtocolViolation(
            f"Paillier key size {bits} bits is not allowed: use a multiple of 8 from "
            f"{floor} to {MAX_KEY_BITS}{hint}"
        )


# The proof that a modulus is a Paillier modulus, gcd(n, phi(n)) = 1: Goldberg, Reyzin,
# Sagga and Baldimtsi, "Efficient Noninteractive Certification of RSA Moduli and Beyond"
# (ASIACRYPT 2019), section 3.2. n has no prime factor below KEY_PROOF_PRIME_BOUND (trial
# division), and its owner gives n-th roots mod n of KEY_PROOF_ROOTS challenges drawn from a
# hash of n. If a prime divided both n and phi(n) it would be at least the bound, and at most
# one element in that many of Z*_n would be an n-th power: all the challenges are with
# probability below 2^-16 each, 2^-128 for the eight (the paper's m = ceil(kappa / log2 alpha)).
KEY_PROOF_PRIME_BOUND = 1 << 16
KEY_PROOF_ROOTS = 8
_KEY_PROOF_DOMAIN = b"xinrong paillier modulus proof v1"

KeyProof = tuple[int, ...]


@functools.cache
def _small_primes_product() -> gmpy2.mpz:
    product, p = mpz(1), mpz(2)
    while p < KEY_PROOF_PRIME_BOUND:
        product *= p
        p = gmpy2.next_prime(p)
    return product


def _key_challenges(n: int) -> list[int]:
    """The challenges for modulus n, uniform in Z_n to 2^-128 (128 extra bits, reduced)."""
    width = (n.bit_length() + 128 + 7) // 8
    head = _KEY_PROOF_DOMAIN + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return [
        int.from_bytes(hashlib.shake_256(head + i.to_bytes(4, "big")).digest(width), "big") % n
        for i in range(KEY_PROOF_ROOTS)
    ]


def prove_key(private_key: PrivateKey) -> KeyProof:
    """The key owner's proof that its n is a Paillier modulus: n-th roots of the challenges
    (``n^-1 mod phi(n)``, by CRT)."""
    p, q = mpz(private_key.p), mpz(private_key.q)
    n = p * q
    roots = []
    for challenge in _key_challenges(int(n)):
        mod_p = gmpy2.powmod(challenge, gmpy2.invert(n, p - 1), p)
        mod_q = gmpy2.powmod(challenge, gmpy2.invert(n, q - 1), q)
        roots.append(int(mod_q + q * ((mod_p - mod_q) * gmpy2.invert(q, p) % p)))
    return tuple(roots)


def public_key_from_n(n: int, allow_test_keys: bool, proof: Sequence[int]) -> PublicKey:
    """The other party's public key, checked: odd, of an allowed size, not a perfect power,
    and proven a Paillier modulus (``prove_key``); otherwise ProtocolViolation."""
    check_key_bits(n.bit_length(), allow_test_keys)  # exact: 2,041 bits is not 2,048
    if n % 2 == 0 or gmpy2.is_prime(n) or gmpy2.is_square(n):
        raise ProtocolViolation("the Paillier modulus received is not a valid RSA modulus")
    if gmpy2.gcd(n, _small_primes_product()) != 1:
        raise ProtocolViolation(
            f"the Paillier modulus received has a prime factor below {KEY_PROOF_PRIME_BOUND}"
        )
    if len(proof) != KEY_PROOF_ROOTS:
        raise ProtocolViolation(
            f"the Paillier key came with {len(proof)} roots in its proof; {KEY_PROOF_ROOTS} "
            "are needed (the other party runs an older release?)"
        )
    for i, (root, challenge) in enumerate(zip(proof, _key_challenges(n), strict=True)):
        unit = 0 < root < n and gmpy2.gcd(challenge, n) == 1
        if not unit or gmpy2.powmod(root, n, n) != challenge:
            raise ProtocolViolation(
                f"the proof that the Paillier key received is a Paillier modulus fails at root "
                f"{i + 1}: the key is refused (gcd(n, phi(n)) = 1 is what keeps masks hiding)"
            )
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
    out = [mpz(int.from_bytes(data[i * width : (i + 1) * width], "big")) for i in range(count)]
    # one gcd for all: a prime factor of n divides the product mod n iff it divides a factor
    product = mpz(1)
    for c in out:
        if not 0 < c < nsquare:
            product = mpz(0)
            break
        product = product * (c % n) % n
    if gmpy2.gcd(product, n) != 1:
        for i, c in enumerate(out):
            if not 0 < c < nsquare or gmpy2.gcd(c, n) != 1:
                raise InvalidCiphertext(f"ciphertext {i} is not in Z*_(n^2) of the key it claims")
    return out


# -- operation counts and chunks over an executor ----------------------------------------


@dataclass
class OpCounts:
    """What a party's encrypted arithmetic cost: logged per epoch, so that a slowdown shows
    up as a count, not a feel."""

    encryptions: int = 0  # under the party's own key (fixed-base)
    peer_encryptions: int = 0  # textbook, under the other party's key (masks)
    decryptions: int = 0
    multiplications: int = 0  # modular multiplications mod n^2 in inner products
    inner_product_terms: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))

    def minus(self, earlier: dict[str, int]) -> dict[str, int]:
        return {k: v - earlier.get(k, 0) for k, v in vars(self).items()}


CHUNK_ROWS = 256  # rows per chunk sent to a worker


def _chunks(rows: int, executor: Executor | None, size: int = CHUNK_ROWS) -> list[tuple[int, int]]:
    if executor is None or rows <= size:
        return [(0, rows)]
    return [(a, min(rows, a + size)) for a in range(0, rows, size)]


# -- the key owner's fast encryption -------------------------------------------------------


def exponent_digits(raw: np.ndarray, exponent_bits: int, window: int) -> list[list[int]]:
    """Each row of ``raw`` (uint8, little-endian bytes of one exponent, bits from
    ``exponent_bits`` on ignored) as its base-2^window digits, least significant first.
    A digit of at most 16 bits spans at most 3 bytes: gathered and shifted for all rows at
    once, a few microseconds per 1,024-bit exponent."""
    if not 0 < window <= 16:
        raise ValueError("window must be 1..16 bits")
    count = raw.shape[0]
    nbytes = (exponent_bits + 7) // 8
    padded = np.zeros((count, nbytes + 3), dtype=np.uint32)
    padded[:, :nbytes] = raw[:, :nbytes]
    if exponent_bits % 8:
        padded[:, nbytes - 1] &= (1 << (exponent_bits % 8)) - 1
    starts = np.arange(-(-exponent_bits // window), dtype=np.int64) * window
    at = starts >> 3
    words = padded[:, at] | (padded[:, at + 1] << 8) | (padded[:, at + 2] << 16)
    return ((words >> (starts & 7).astype(np.uint32)) & ((1 << window) - 1)).tolist()


def _random_digits(count: int, exponent_bits: int, window: int) -> list[list[int]]:
    """``count`` fresh uniform exponents of ``exponent_bits`` bits from the OS, as digits."""
    if count == 0:
        return []
    nbytes = (exponent_bits + 7) // 8
    raw = np.frombuffer(secrets.token_bytes(count * nbytes), dtype=np.uint8)
    return exponent_digits(raw.reshape(count, nbytes), exponent_bits, window)


class _FixedBase:
    """``base^x mod modulus`` for many x, from a table of base^(j * 2^(w k)) (w-bit windows:
    one multiplication per window)."""

    def __init__(
        self, base: gmpy2.mpz, modulus: gmpy2.mpz, exponent_bits: int, window: int = _WINDOW
    ) -> None:
        self.modulus = modulus
        self.window = window
        self.exponent_bits = exponent_bits
        self.windows = -(-exponent_bits // window)
        self.table: list[list[gmpy2.mpz]] = []
        step = base
        for _ in range(self.windows):
            row = [mpz(1), step]
            for _j in range(2, 1 << window):
                row.append(row[-1] * step % modulus)
            self.table.append(row)
            step = row[-1] * step % modulus  # base^(2^(w(k+1)))

    def power_digits(self, digits: list[int]) -> gmpy2.mpz:
        table, modulus = self.table, self.modulus
        acc = None
        for row, digit in zip(table, digits):
            if digit:
                acc = row[digit] if acc is None else acc * row[digit] % modulus
        return mpz(1) if acc is None else acc

    def random_powers(self, count: int) -> list[gmpy2.mpz]:
        """base^x for ``count`` fresh uniform x of ``exponent_bits`` bits."""
        return [
            self.power_digits(d) for d in _random_digits(count, self.exponent_bits, self.window)
        ]


class OwnerEncryptor:
    """Encrypts under the owner's own key fast (DJN randomiser, CRT, fixed-base tables).

    The tables cost about 2 x 105,000 multiplications (~0.3 s and 2 x 27 MB at 2048 bits)
    per key and process, so they are built only once this encryptor has been asked for
    ``TABLES_AFTER`` values: until then each randomiser is one constant-time exponentiation
    mod p^2 and one mod q^2 (~2.7 ms together, so 128 of them cost about what the tables
    do). A process that hands its rows to workers, and encrypts only a value or two a batch
    itself, never pays for tables it would hardly use."""

    TABLES_AFTER = 128

    def __init__(self, private_key: PrivateKey) -> None:
        pub = private_key.public_key
        self.public_key = pub
        self.n = mpz(pub.n)
        self.nsquare = mpz(pub.nsquare)
        p, q = mpz(private_key.p), mpz(private_key.q)
        self._factors = (p, q)
        self.psquare, self.qsquare = p * p, q * q
        self.exponent_bits = (pub.n.bit_length() + 1) // 2
        while True:
            r0 = mpz(secrets.randbelow(pub.n - 1) + 1)
            if gmpy2.gcd(r0, self.n) == 1:
                break
        h = gmpy2.powmod(r0, self.n, self.nsquare)  # a random n-th residue
        self._hp, self._hq = h % self.psquare, h % self.qsquare
        self._tables: tuple[_FixedBase, _FixedBase] | None = None  # mod p^2, mod q^2
        self._asked = 0
        # CRT recombination: x = xp + psquare * ((xq - xp) * psquare^-1 mod qsquare)
        self._p2_inv = gmpy2.invert(self.psquare, self.qsquare)

    @property
    def has_tables(self) -> bool:
        return self._tables is not None

    def _halves(self, count: int) -> list[tuple[gmpy2.mpz, gmpy2.mpz]]:
        """(h^x mod p^2, h^x mod q^2) for ``count`` fresh x from the OS."""
        self._asked += count
        if self._tables is None and self._asked < self.TABLES_AFTER:
            # mpz_powm_sec: the same time for every exponent
            return [
                (
                    gmpy2.powmod_sec(self._hp, x, self.psquare),
                    gmpy2.powmod_sec(self._hq, x, self.qsquare),
                )
                for x in (mpz(secrets.randbits(self.exponent_bits)) for _ in range(count))
            ]
        if self._tables is None:
            self._tables = (
                _FixedBase(self._hp, self.psquare, self.exponent_bits, _OWNER_WINDOW),
                _FixedBase(self._hq, self.qsquare, self.exponent_bits, _OWNER_WINDOW),
            )
        tp, tq = self._tables
        return [
            (tp.power_digits(d), tq.power_digits(d))
            for d in _random_digits(count, self.exponent_bits, _OWNER_WINDOW)
        ]

    def randomisers(self, count: int) -> list[gmpy2.mpz]:
        """h^x mod n^2 for fresh x, computed mod p^2 and q^2 and recombined (CRT)."""
        psquare, qsquare, inverse = self.psquare, self.qsquare, self._p2_inv
        return [hp + psquare * ((hq - hp) * inverse % qsquare) for hp, hq in self._halves(count)]

    def encrypt(self, values: Iterable[int]) -> list[gmpy2.mpz]:
        """Encrypt signed integers (already fixed-point encoded), each |v| < n/3."""
        n, nsquare = self.n, self.nsquare
        values = list(values)
        return [
            (1 + (v % n) * n) * noise % nsquare
            for v, noise in zip(values, self.randomisers(len(values)), strict=True)
        ]

    def encrypt_many(
        self,
        values: Sequence[int],
        executor: Executor | None = None,
        counts: OpCounts | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[gmpy2.mpz]:
        """Encrypt a vector in chunks over the executor (the party's own workers: they
        hold the key's factors to use CRT, so a Dask cluster must be the party's own)."""
        chunks = _chunks(len(values), executor)
        if executor is None or len(chunks) <= 1:
            out = self.encrypt(values)
        else:
            factors = (int(self.public_key.n), int(self._factors[0]), int(self._factors[1]))
            futures = [
                executor.submit(_encrypt_chunk, factors, [int(v) for v in values[a:b]])
                for a, b in chunks
            ]
            out = []
            for future in futures:
                out.extend(future.result())
                if on_progress is not None:
                    on_progress(len(out), len(values))
        if counts is not None:
            counts.encryptions += len(values)
        return out

    def encrypt_with(
        self, values: Sequence[int], randomisers: Sequence[gmpy2.mpz]
    ) -> list[gmpy2.mpz]:
        """Encrypt with randomisers computed ahead (``randomisers_later``), each used once:
        the same ciphertexts as ``encrypt`` gives, one multiplication each."""
        n, nsquare = self.n, self.nsquare
        return [
            (1 + (v % n) * n) * noise % nsquare
            for v, noise in zip(values, randomisers, strict=True)
        ]

    def randomisers_later(
        self, count: int, executor: Executor | None = None
    ) -> Callable[[], list[gmpy2.mpz]]:
        """Start computing ``count`` fresh randomisers ``h^x`` on the executor now (they
        depend on nothing but the key), collect later: the encryptions of values not yet
        known are then one multiplication each."""
        if executor is None:
            return lambda: self.randomisers(count)
        factors = (int(self.public_key.n), int(self._factors[0]), int(self._factors[1]))
        futures = [
            executor.submit(_randomiser_chunk, factors, b - a) for a, b in _chunks(count, executor)
        ]
        return lambda: [c for f in futures for c in f.result()]

    def encrypt_later(
        self, values: Sequence[int], executor: Executor | None = None
    ) -> Callable[[], list[gmpy2.mpz]]:
        """Start encrypting on the executor now, collect later (values that do not depend on
        the other party's data, encrypted while this side would otherwise wait)."""
        if executor is None:
            return lambda: self.encrypt(values)
        factors = (int(self.public_key.n), int(self._factors[0]), int(self._factors[1]))
        futures = [
            executor.submit(_encrypt_chunk, factors, [int(v) for v in values[a:b]])
            for a, b in _chunks(len(values), executor)
        ]
        return lambda: [c for f in futures for c in f.result()]


_WORKER_ENCRYPTORS: dict[int, OwnerEncryptor] = {}


def forget_worker_keys() -> None:
    """Drop the keys this worker cached (node_runtime.parallel.forget_keys, at a job's
    end). Python cannot wipe the freed integers; the memory is reused, not zeroed."""
    _WORKER_ENCRYPTORS.clear()


def worker_key_count() -> int:
    """How many keys this process has cached (to check the above)."""
    return len(_WORKER_ENCRYPTORS)


def _worker_encryptor(factors: tuple[int, int, int]) -> OwnerEncryptor:
    """In a worker: the encryptor of this key, built once per worker and kept."""
    n, p, q = factors
    encryptor = _WORKER_ENCRYPTORS.get(n)
    if encryptor is None:
        private = paillier.PaillierPrivateKey(paillier.PaillierPublicKey(n), p, q)
        encryptor = _WORKER_ENCRYPTORS[n] = OwnerEncryptor(private)
        while len(_WORKER_ENCRYPTORS) > 4:  # keys of finished jobs
            del _WORKER_ENCRYPTORS[next(iter(_WORKER_ENCRYPTORS))]
    return encryptor


def _encrypt_chunk(factors: tuple[int, int, int], values: list[int]) -> list[gmpy2.mpz]:
    return _worker_encryptor(factors).encrypt(values)


def _randomiser_chunk(factors: tuple[int, int, int], count: int) -> list[gmpy2.mpz]:
    return _worker_encryptor(factors).randomisers(count)


def textbook_noise(public_key: PublicKey) -> gmpy2.mpz:
    """``r^n mod n^2`` for r uniform in Z*_n (from ``secrets``): the randomness of a textbook
    encryption, uniform among the n-th residues even to the holder of the factorisation
    (13-17 ms at 2048 bits: used once per ciphertext the other party will decrypt)."""
    n = mpz(public_key.n)
    while True:
        r = mpz(secrets.randbelow(public_key.n - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return gmpy2.powmod(r, n, n * n)


def _noises(n: int, count: int) -> list[gmpy2.mpz]:
    key = PublicKey(int(n))
    return [textbook_noise(key) for _ in range(count)]


class NoisePool:
    """Textbook randomisers ``r^n`` for one key, computed ahead on the executor while this
    side waits for the other (they depend on nothing but the key), taken when needed; what
    the pool does not hold yet is computed on the spot. Each is used once."""

    BATCH = 4  # per task: a task is ~60 ms of work at 2048 bits

    def __init__(self, public_key: PublicKey, executor: Executor | None) -> None:
        self.public_key = public_key
        self.executor = executor
        self._pending: list[Future[list[gmpy2.mpz]]] = []
        self._ready: list[gmpy2.mpz] = []

    def fill(self, count: int) -> None:
        """Have at least ``count`` on hand or under way (nothing without an executor)."""
        if self.executor is None:
            return
        missing = count - len(self._ready) - self.BATCH * len(self._pending)
        for _ in range(-(-missing // self.BATCH)):
            self._pending.append(self.executor.submit(_noises, int(self.public_key.n), self.BATCH))

    def take(self, count: int) -> list[gmpy2.mpz]:
        while len(self._ready) < count and self._pending:
            self._ready.extend(self._pending.pop(0).result())
        out, self._ready = self._ready[:count], self._ready[count:]
        return out + [textbook_noise(self.public_key) for _ in range(count - len(out))]


def encrypt_for_peer(public_key: PublicKey, plaintext: int) -> gmpy2.mpz:
    """A textbook encryption with fresh OS randomness under someone else's key."""
    n = mpz(public_key.n)
    return (1 + (mpz(plaintext) % n) * n) * textbook_noise(public_key) % (n * n)


def rerandomise(ciphertext: gmpy2.mpz, public_key: PublicKey) -> gmpy2.mpz:
    """The same plaintext under a fresh textbook randomiser (before the key owner decrypts
    what this side computed from its ciphertexts)."""
    return ciphertext * textbook_noise(public_key) % mpz(public_key.nsquare)


class PeerEncryptor:
    """Encrypts under the other party's key: ``(1 + m n) h^x mod n^2`` with a base
    ``h = r^n`` that this side draws itself (r from the OS) and a fresh x of half the bit
    length of n for every ciphertext (DJN, section 4.2), from a fixed-base table mod n^2:
    ~0.5 ms at 2048 bits against ~13 ms for a textbook ``r^n``.

    The base must never come from the key owner: the owner can read the randomness of what
    it decrypts, and a base it chose (of small order, or of known logarithm) would let it
    strip this re-randomisation off and see the other party's scalars."""

    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key
        self.n = mpz(public_key.n)
        self.nsquare = mpz(public_key.nsquare)
        while True:
            r = mpz(secrets.randbelow(public_key.n - 1) + 1)
            if gmpy2.gcd(r, self.n) == 1:
                break
        self.h = gmpy2.powmod(r, self.n, self.nsquare)  # a random n-th residue, ours
        self.exponent_bits = (public_key.n.bit_length() + 1) // 2
        self._table: _FixedBase | None = None

    def encrypt(self, value: int) -> gmpy2.mpz:
        if self._table is None:  # built on first use: 0.1 s, 16 MB at 2048 bits
            self._table = _FixedBase(self.h, self.nsquare, self.exponent_bits)
        (noise,) = self._table.random_powers(1)
        return (1 + (mpz(value) % self.n) * self.n) * noise % self.nsquare


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


def plain_minus(
    values: Sequence[int], ciphertexts: Sequence[gmpy2.mpz], public_key: PublicKey
) -> list[gmpy2.mpz]:
    """[[a_i]] -> [[v_i - a_i]]: g^v_i times the inverse of [[a_i]] mod n^2 (which exists:
    ``ciphertexts_from_bytes`` admits only ciphertexts coprime with n, and so their
    products)."""
    n, nsquare = mpz(public_key.n), mpz(public_key.nsquare)
    return [
        (1 + (v % n) * n) * gmpy2.invert(c, nsquare) % nsquare
        for v, c in zip(values, ciphertexts, strict=True)
    ]


def _window_for(terms: int, bits: int = 24) -> int:
    """The bucket window c that minimises ceil(bits / c) * (terms + 2^(c+1)) multiplications."""
    return min(range(1, 13), key=lambda c: -(-bits // c) * (terms + (2 << c)))


def multiexp_counted(
    bases: Sequence[gmpy2.mpz], exponents: Sequence[int], modulus: gmpy2.mpz
) -> tuple[gmpy2.mpz, int]:
    """prod bases[i]^exponents[i] mod modulus, exponents >= 0, by the bucket method; also
    the number of modular multiplications it took."""
    pairs = [(b, e) for b, e in zip(bases, exponents, strict=True) if e]
    if not pairs:
        return mpz(1), 0
    max_bits = max(e for _, e in pairs).bit_length()
    c = _window_for(len(pairs), max_bits)
    mask = (1 << c) - 1
    result = None
    mults = 0
    for window in range((max_bits - 1) // c, -1, -1):
        if result is not None:
            for _ in range(c):
                result = result * result % modulus
            mults += c
        shift = window * c
        buckets: list[gmpy2.mpz | None] = [None] * (mask + 1)
        for b, e in pairs:
            d = (e >> shift) & mask
            if d:
                held = buckets[d]
                if held is None:
                    buckets[d] = b
                else:
                    buckets[d] = held * b % modulus
                    mults += 1
        running = acc = None
        for d in range(mask, 0, -1):  # sum_d d * bucket_d as a running product
            held = buckets[d]
            if held is not None:
                running = held if running is None else running * held % modulus
                mults += 1
            if running is not None:
                acc = running if acc is None else acc * running % modulus
                mults += 1
        if acc is not None:
            result = acc if result is None else result * acc % modulus
            mults += 1
    return (mpz(1) if result is None else result), mults


def multiexp(bases: Sequence[gmpy2.mpz], exponents: Sequence[int], modulus: gmpy2.mpz) -> gmpy2.mpz:
    """prod bases[i]^exponents[i] mod modulus, exponents >= 0 (bucket method)."""
    return multiexp_counted(bases, exponents, modulus)[0]


def _offset_bits(matrix: np.ndarray) -> int:
    """Bits b such that every entry + 2^(b-1) is in [0, 2^b)."""
    if matrix.size == 0:
        return 1
    largest = int(max(-int(matrix.min()), int(matrix.max()) + 1, 1))
    return largest.bit_length() + 1


def _bit_sliced(
    bases: Sequence[gmpy2.mpz], exponents: np.ndarray, bits: int, modulus: gmpy2.mpz
) -> tuple[list[gmpy2.mpz], int]:
    """prod_i bases[i]^exponents[i, j] for every column j, exponents in [0, 2^bits).

    Bases are taken 8 at a time; each group's 256 subset products are built once and shared
    by every column, then each column costs one table look-up per group per bit (a
    bit-sliced Straus method). Cheaper than the bucket method from about 40 columns on.
    Exponents beyond int64 come as an object array of Python integers."""
    group = 8
    rows, columns = exponents.shape
    tables = []
    for start in range(0, rows, group):
        chunk = bases[start : start + group]
        table: list[gmpy2.mpz] = [mpz(1)]
        for k, base in enumerate(chunk):
            table.extend(t * base % modulus for t in table[: 1 << k])
        tables.append(table)
    mults = sum(len(t) - len(bases[i * group : (i + 1) * group]) - 1 for i, t in enumerate(tables))
    padded = np.zeros((len(tables) * group, columns), dtype=exponents.dtype)
    padded[:rows] = exponents
    weights = (1 << np.arange(group, dtype=np.int64))[None, :, None]
    grouped = padded.reshape(len(tables), group, columns)
    # index[j][t][g]: which subset of group g has bit t set in column j
    index = np.stack([(((grouped >> t) & 1) * weights).sum(axis=1) for t in range(bits)]).transpose(
        2, 0, 1
    )
    out = []
    for j in range(columns):
        acc = mpz(1)
        for row in index[j, ::-1].tolist():  # from the top bit down
            acc = acc * acc % modulus
            for table, k in zip(tables, row):
                if k:
                    acc = acc * table[k] % modulus
                    mults += 1
        mults += bits
        out.append(acc)
    return out, mults


def inner_products_counted(
    ciphertexts: Sequence[gmpy2.mpz], matrix: np.ndarray, nsquare: int
) -> tuple[list[gmpy2.mpz], int]:
    """[[A^T v]] for an integer matrix A (rows x columns) and [[v]] (rows); also returns the
    number of multiplications mod n^2 it took.

    Signed scalars are shifted to [0, 2^b) and the shift removed once for all columns:
    prod c_i^(a_i + 2^(b-1)) = prod c_i^(a_i) * (prod c_i)^(2^(b-1))."""
    modulus = mpz(nsquare)
    matrix = np.asarray(matrix, dtype=np.int64)
    rows, columns = matrix.shape
    if rows != len(ciphertexts):
        raise ValueError("one row of scalars per ciphertext")
    if rows == 0:
        return [mpz(1)] * columns, 0
    if columns >= 40:  # one shift for all columns: they share the tables
        column_bits = [_offset_bits(matrix)] * columns
        shifted = matrix + (1 << (column_bits[0] - 1))
        products, mults = _bit_sliced(ciphertexts, shifted, column_bits[0], modulus)
    else:  # a shift per column: each column's exponents as short as they can be
        column_bits = [_offset_bits(matrix[:, j]) for j in range(columns)]
        products, mults = [], 0
        for j, bits in enumerate(column_bits):
            shifted_column = (matrix[:, j] + (1 << (bits - 1))).tolist()
            product, used = multiexp_counted(ciphertexts, shifted_column, modulus)
            products.append(product)
            mults += used
    shifts = _shift_inverses(ciphertexts, column_bits, modulus)
    mults += rows + sum(shifts) + columns
    return [p * shifts[b] % modulus for p, b in zip(products, column_bits, strict=True)], mults


def _shift_inverses(
    bases: Sequence[gmpy2.mpz], offsets: Sequence[int], modulus: gmpy2.mpz
) -> dict[int, gmpy2.mpz]:
    """``(prod bases)^-(2^(b-1))`` for each offset size b: what takes the shift to
    non-negative exponents back out of a product of powers."""
    total = mpz(1)
    for base in bases:
        total = total * base % modulus
    return {
        b: gmpy2.invert(gmpy2.powmod(total, mpz(1) << (b - 1), modulus), modulus)
        for b in sorted(set(offsets))
    }


def power_products(
    bases: Sequence[gmpy2.mpz], exponents: Sequence[Sequence[int]], public_key: PublicKey
) -> list[gmpy2.mpz]:
    """``prod_i bases[i]^exponents[i][j]`` for every column j, for signed exponents of any
    length (few bases and columns: a step from cross moments, ``protocols.moments``). One
    shift to non-negative for all, bit-sliced tables shared by every column, the shift
    removed once as in ``inner_products_counted``."""
    modulus = mpz(public_key.nsquare)
    matrix = np.array([[int(e) for e in row] for row in exponents], dtype=object)
    if matrix.ndim != 2 or matrix.shape[0] != len(bases):
        raise ValueError("one row of exponents per base")
    bits = _offset_bits(matrix)
    shifted = matrix + (1 << (bits - 1))
    products, _ = _bit_sliced(list(bases), shifted, bits, modulus)
    shift = _shift_inverses(bases, [bits], modulus)[bits]
    return [p * shift % modulus for p in products]


def _inner_chunk(
    nsquare: int, ciphertexts: list[gmpy2.mpz], matrix: np.ndarray
) -> tuple[list[gmpy2.mpz], int]:
    return inner_products_counted(ciphertexts, matrix, nsquare)


def inner_products(
    ciphertexts: Sequence[gmpy2.mpz],
    matrix: np.ndarray,
    public_key: PublicKey,
    executor: Executor | None = None,
    counts: OpCounts | None = None,
) -> list[gmpy2.mpz]:
    """[[A^T v]]: rows split into chunks over the executor, partial products multiplied."""
    matrix = np.asarray(matrix, dtype=np.int64)
    nsquare = mpz(public_key.nsquare)
    rows, columns = matrix.shape
    # larger chunks than for encryption: buckets and tables pay off with more rows
    chunks = _chunks(rows, executor, 2 * CHUNK_ROWS)
    if len(chunks) <= 1 or executor is None:
        parts = [inner_products_counted(ciphertexts, matrix, nsquare)]
    else:
        futures = [
            executor.submit(_inner_chunk, int(nsquare), list(ciphertexts[a:b]), matrix[a:b])
            for a, b in chunks
        ]
        parts = [f.result() for f in futures]
    out = parts[0][0]
    for part, _ in parts[1:]:
        out = [x * y % nsquare for x, y in zip(out, part, strict=True)]
    if counts is not None:
        counts.multiplications += sum(m for _, m in parts) + columns * (len(parts) - 1)
        counts.inner_product_terms += rows * columns
    return out


def inner_product(
    ciphertexts: Sequence[gmpy2.mpz], scalars: Sequence[int], public_key: PublicKey
) -> gmpy2.mpz:
    """[[sum_i a_i v_i]] from [[v_i]] and signed integers a_i (|a_i| < 2^62)."""
    column = np.asarray(list(scalars), dtype=np.int64).reshape(-1, 1)
    return inner_products(ciphertexts, column, public_key)[0]


# -- masked, packed values for the other party to decrypt --------------------------------


@dataclass(frozen=True)
class SlotLayout:
    """How signed values with |v| < 2^value_bits are packed into Paillier plaintexts.

    A slot holds ``v + 2^value_bits + r`` with r uniform in [0, 2^(value_bits + 41)): the
    shifted value ranges over 2^(value_bits + 1) integers, so the mask leaves the full 40 bits
    of statistical distance (2^-40); never negative, below 2^(value_bits + 42), so slots never
    carry into each other."""

    value_bits: int
    modulus_bits: int

    @property
    def slot_bits(self) -> int:
        return self.value_bits + STATISTICAL_SECURITY + 2

    @property
    def mask_bits(self) -> int:
        return self.value_bits + 1 + STATISTICAL_SECURITY

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


def _pack(group: Sequence[gmpy2.mpz], slot_bits: int, nsquare: gmpy2.mpz) -> gmpy2.mpz:
    """[[v_0 + v_1 2^s + v_2 2^2s + ...]] from [[v_j]], by Horner: acc = acc^(2^s) [[v_j]]."""
    acc = group[-1]
    for c in reversed(group[:-1]):
        acc = gmpy2.powmod(acc, mpz(1) << slot_bits, nsquare) * c % nsquare
    return acc


def _pack_group(
    nsquare: int,
    n: int,
    group: list[gmpy2.mpz],
    slot_bits: int,
    plain_masks: int,
    noise: gmpy2.mpz | None,
) -> gmpy2.mpz:
    """One packed ciphertext with its masks added and a textbook ``r^n`` (given, or drawn
    here: a worker draws from the OS like the main process)."""
    packed = _pack(group, slot_bits, mpz(nsquare))
    if noise is None:
        noise = textbook_noise(PublicKey(int(n)))
    masks = 1 + (mpz(plain_masks) % n) * n
    return packed * masks % nsquare * noise % nsquare


def draw_masks(layout: SlotLayout, count: int) -> list[int]:
    """Fresh slot masks, uniform in [0, 2^(value_bits + 41)), from ``secrets``."""
    return [secrets.randbits(layout.mask_bits) for _ in range(count)]


def pack_masked(
    values: Sequence[gmpy2.mpz],
    layout: SlotLayout,
    peer: PeerEncryptor | PublicKey,
    executor: Executor | None = None,
    masks: list[int] | None = None,
    noise: NoisePool | None = None,
) -> tuple[list[gmpy2.mpz], MaskedPacking]:
    """[[v_0]], ..., [[v_k]] under the peer's key -> few ciphertexts of masked slots, each
    re-randomised by a textbook encryption of its masks (never a DJN base: see the module
    notes). Masks drawn here unless given (drawn ahead by ``draw_masks``); randomisers from
    the pool if one is given. Groups go to the executor when there are several. Returns the
    ciphertexts and the masks."""
    peer_key = peer.public_key if isinstance(peer, PeerEncryptor) else peer
    nsquare, n = int(peer_key.nsquare), int(peer_key.n)
    s = layout.slot_bits
    offset = 1 << layout.value_bits
    per = layout.slots_per_plaintext
    if masks is None:
        masks = draw_masks(layout, len(values))
    if len(masks) != len(values):
        raise ValueError("one mask per value")
    jobs = []
    for start in range(0, len(values), per):
        plain_masks = 0
        for j, r in enumerate(masks[start : start + per]):
            plain_masks |= (offset + r) << (s * j)
        jobs.append((list(values[start : start + per]), plain_masks))
    noises: list[gmpy2.mpz | None] = (
        list(noise.take(len(jobs))) if noise is not None else [None] * len(jobs)
    )
    if executor is None or len(jobs) < 2:
        out = [_pack_group(nsquare, n, g, s, m, r) for (g, m), r in zip(jobs, noises)]
    else:
        futures = [
            executor.submit(_pack_group, nsquare, n, g, s, m, r) for (g, m), r in zip(jobs, noises)
        ]
        out = [f.result() for f in futures]
    return out, MaskedPacking(layout, masks)


@dataclass
class PaddedPacking:
    """What the requester keeps to read back values it had the peer decrypt (``pack_padded``):
    the layout, how many values, and the pad of each plaintext."""

    layout: SlotLayout
    count: int
    pads: list[int]
    modulus: int  # the peer's n


def pack_padded(
    values: Sequence[gmpy2.mpz], layout: SlotLayout, peer_key: PublicKey
) -> tuple[list[gmpy2.mpz], PaddedPacking]:
    """[[v_0]], ..., [[v_k]] under the peer's key -> few ciphertexts whose plaintexts are the
    packed ``v_j + 2^value_bits`` plus a one-time pad uniform in Z_n (from ``secrets``), each
    re-randomised with a textbook ``r^n``: for values the peer only decrypts and sends back.

    The peer sees a uniform element of Z_n whatever the values were. Slot masks
    (``pack_masked``) hide a value only within its bound, and the peer may have chosen the
    inputs out of bound: a bureau that made some of its ``-r`` huge would otherwise read the
    bank's features from the bits above a slot, then return the honest low part."""
    n = int(peer_key.n)
    s, per = layout.slot_bits, layout.slots_per_plaintext
    offsets = sum(1 << layout.value_bits << (s * j) for j in range(per))
    out, pads = [], []
    for start in range(0, len(values), per):
        group = list(values[start : start + per])
        pad = secrets.randbelow(n)
        here = offsets & ((1 << (s * len(group))) - 1)
        out.append(_pack_group(int(peer_key.nsquare), n, group, s, here + pad, None))
        pads.append(pad)
    return out, PaddedPacking(layout, len(values), pads, n)


def unpack_padded(plaintexts: Sequence[int], packing: PaddedPacking) -> list[int]:
    """The requesting side: remove each pad mod n; the packed plaintext must have nothing
    above its slots and every value must be within its bound."""
    layout = packing.layout
    s, per = layout.slot_bits, layout.slots_per_plaintext
    if len(plaintexts) != len(packing.pads):
        raise ProtocolViolation("the peer returned the wrong number of packed plaintexts")
    values: list[int] = []
    for g, (m, pad) in enumerate(zip(plaintexts, packing.pads, strict=True)):
        here = min(per, packing.count - g * per)
        packed = (int(m) - pad) % packing.modulus
        if packed >> (s * here):
            raise ProtocolViolation(
                "a value decrypted by the peer is larger than its slots: the peer decrypted "
                "something else or the computation was corrupted"
            )
        values.extend(_peer_value(packed, j, layout) for j in range(here))
    return values


def _peer_value(plaintext: int, slot: int, layout: SlotLayout, mask: int = 0) -> int:
    """Slot ``slot`` of a plaintext the peer decrypted for the requester, less its offset
    and mask; refused beyond the value's bound."""
    s, offset = layout.slot_bits, 1 << layout.value_bits
    v = ((plaintext >> (s * slot)) & ((1 << s) - 1)) - offset - mask
    if not -offset < v < offset:
        raise ProtocolViolation(
            "a value decrypted by the peer is outside its bound: the peer decrypted "
            "something else or the computation was corrupted"
        )
    return v


def unpack_slots(
    plaintexts: Sequence[int], layout: SlotLayout, count: int, bounded: bool = False
) -> list[int]:
    """The requesting side of packed values the peer masked (``pack_masked``,
    ``mask_packed``): each slot less its offset ``2^value_bits``, nothing above the slots. A
    masked value (value + mask) is only checked to fit its slot; a value that carries no
    mask of its own (``bounded``) must be within its bound."""
    s, per = layout.slot_bits, layout.slots_per_plaintext
    if len(plaintexts) != layout.plaintexts_for(count):
        raise ProtocolViolation("the peer sent the wrong number of packed values")
    out: list[int] = []
    for i, m in enumerate(plaintexts):
        m = int(m)
        here = min(per, count - i * per)
        if m >> (s * here):
            raise ProtocolViolation("a packed value is larger than its slots: refusing it")
        if bounded:
            out.extend(_peer_value(m, j, layout) for j in range(here))
        else:
            out.extend(
                ((m >> (s * j)) & ((1 << s) - 1)) - (1 << layout.value_bits) for j in range(here)
            )
    return out


def _copies_product(
    nsquare: int, bases: list[gmpy2.mpz], exponents: np.ndarray, slot_bits: int, bits: int
) -> list[gmpy2.mpz]:
    """One part of ``packed_combinations``: the shifted copies ``b^(2^(slot_bits i))`` of its
    bases, then ``prod copies^exponents`` per plaintext over shared bit-sliced tables.
    ``exponents`` is (slots, bases, plaintexts), each in [0, 2^bits)."""
    modulus = mpz(nsquare)
    slots, k, plaintexts = exponents.shape
    shift = mpz(1) << slot_bits
    chains = []
    for base in bases:
        chain = [base]
        for _ in range(slots - 1):
            chain.append(gmpy2.powmod(chain[-1], shift, modulus))
        chains.append(chain)
    copies = [chains[b][i] for i in range(slots) for b in range(k)]  # the order of the rows
    products, _ = _bit_sliced(copies, exponents.reshape(slots * k, plaintexts), bits, modulus)
    return products


def packed_combinations(
    bases: Sequence[gmpy2.mpz],
    matrix: np.ndarray,
    slot_bits: int,
    slots: int,
    public_key: PublicKey,
    executor: Executor | None = None,
) -> list[gmpy2.mpz]:
    """``[[sum_i 2^(slot_bits i) (a_(g slots + i) . v)]]`` for each group g of ``slots`` rows
    of an integer matrix A (rows x k), from ``[[v]]`` (k ciphertexts): the rows' products with
    v already packed, without a ciphertext per row.

    The plaintext is linear in v: ``prod_(i,b) ([[v_b]]^(2^(slot_bits i)))^(a_(g slots+i, b))``,
    so the k x slots shifted copies of the bases serve every plaintext (slot_bits squarings
    per copy), and each plaintext costs one pass over shared bit-sliced tables, against
    slot_bits squarings per row by Horner. Signed entries are shifted by 2^(b-1) and the
    shift removed once: every plaintext carries the same ``(prod [[v]])^(2^(b-1) sum_i
    2^(slot_bits i))``. Rows past the end count as zero, so a short last group is exact.
    With an executor the bases are split in two parts (their partial products multiply)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    rows, k = matrix.shape
    if k != len(bases) or k == 0:
        raise ValueError("one base per matrix column, at least one")
    groups = -(-rows // slots)
    if groups == 0:
        return []
    modulus = mpz(public_key.nsquare)
    padded = np.zeros((groups * slots, k), dtype=np.int64)
    padded[:rows] = matrix
    exponents = padded.reshape(groups, slots, k).transpose(1, 2, 0)  # slot, base, group
    bits = _offset_bits(exponents)
    shifted = exponents + (1 << (bits - 1))
    cuts = [0, k] if executor is None or k < 2 else [0, k // 2, k]
    jobs = [
        (int(modulus), list(bases[a:b]), np.ascontiguousarray(shifted[:, a:b]), slot_bits, bits)
        for a, b in zip(cuts, cuts[1:])
    ]
    if executor is None or len(jobs) == 1:
        parts = [_copies_product(*job) for job in jobs]
    else:
        futures = [executor.submit(_copies_product, *job) for job in jobs]
        parts = [f.result() for f in futures]
    total = mpz(1)
    for base in bases:
        total = total * base % modulus
    every_slot = sum(1 << (slot_bits * i) for i in range(slots))
    correction = gmpy2.invert(gmpy2.powmod(total, every_slot << (bits - 1), modulus), modulus)
    out = [p * correction % modulus for p in parts[0]]
    for part in parts[1:]:
        out = [x * y % modulus for x, y in zip(out, part, strict=True)]
    return out


def copies_pay(rows: int, columns: int, slots: int) -> bool:
    """Whether ``packed_combinations`` is cheaper than a ciphertext per row packed by Horner:
    its shifted copies (columns x slots of them, slot_bits squarings each) against the
    slot_bits squarings of every row. Measured at 2048 bits, 10 columns and 1,024 rows: 0.4
    core-seconds against 0.7."""
    return columns * slots <= rows


def mask_packed(
    packed: Sequence[gmpy2.mpz],
    plain: Sequence[int],
    layout: SlotLayout,
    peer_key: PublicKey,
    masks: list[int] | None = None,
    noise: NoisePool | None = None,
) -> tuple[list[gmpy2.mpz], MaskedPacking]:
    """What ``pack_masked`` sends, from plaintexts already packed (``packed_combinations``):
    slot j gets ``plain[j]`` added (a part of the value the sender holds in clear), the
    offset 2^value_bits and its mask, and each ciphertext a textbook ``r^n``. The slots
    hold exactly what ``pack_masked`` would put there for the values ``packed + plain``."""
    n, nsquare = mpz(peer_key.n), mpz(peer_key.nsquare)
    s, per = layout.slot_bits, layout.slots_per_plaintext
    offset = 1 << layout.value_bits
    if masks is None:
        masks = draw_masks(layout, len(plain))
    if len(masks) != len(plain) or len(packed) != layout.plaintexts_for(len(plain)):
        raise ValueError("one mask and one clear part per value, one ciphertext per group")
    noises = noise.take(len(packed)) if noise is not None else [None] * len(packed)
    out = []
    for g, (c, r) in enumerate(zip(packed, noises, strict=True)):
        added = 0
        for j in range(g * per, min(len(plain), (g + 1) * per)):
            added += (int(plain[j]) + offset + masks[j]) << (s * (j - g * per))
        noise_g = textbook_noise(peer_key) if r is None else r
        out.append(c * (1 + (mpz(added) % n) * n) % nsquare * noise_g % nsquare)
    return out, MaskedPacking(layout, masks)


def pack_sums(
    values: Sequence[gmpy2.mpz], slot_bits: int, peer: PeerEncryptor | PublicKey
) -> list[gmpy2.mpz]:
    """Non-negative values below 2^slot_bits that the other party may learn (no masks),
    packed into few ciphertexts and each re-randomised with a textbook encryption of zero,
    so that the randomness of the result tells the decrypting party nothing about which of
    its ciphertexts went in."""
    key = peer.public_key if isinstance(peer, PeerEncryptor) else peer
    nsquare = mpz(key.nsquare)
    per = max(1, (key.n.bit_length() - 2) // slot_bits)
    out = []
    for start in range(0, len(values), per):
        out.append(
            _pack(values[start : start + per], slot_bits, nsquare) * textbook_noise(key) % nsquare
        )
    return out


def unpack_sums(
    ciphertexts: Sequence[gmpy2.mpz], private_key: PrivateKey, slot_bits: int, count: int
) -> list[int]:
    """Decrypt and split what ``pack_sums`` made; every slot checked to fit."""
    per = max(1, (private_key.public_key.n.bit_length() - 2) // slot_bits)
    if len(ciphertexts) != -(-count // per):
        raise ProtocolViolation(f"expected {-(-count // per)} packed sums, got {len(ciphertexts)}")
    mask = (1 << slot_bits) - 1
    values: list[int] = []
    for i, c in enumerate(ciphertexts):
        m = decrypt(private_key, c)
        here = min(per, count - i * per)
        if m >> (slot_bits * here):
            raise ProtocolViolation("a packed sum is larger than its slots")
        values.extend((m >> (slot_bits * j)) & mask for j in range(here))
    return values


def decrypt_packed(
    ciphertexts: Sequence[gmpy2.mpz],
    private_key: PrivateKey,
    layout: SlotLayout,
    slots: int,
    executor: Executor | None = None,
) -> list[int]:
    """The decrypting side: plaintexts of packed masked slots, each checked to fit."""
    per = layout.slots_per_plaintext
    if len(ciphertexts) != layout.plaintexts_for(slots):
        raise ProtocolViolation(
            f"expected {layout.plaintexts_for(slots)} packed ciphertexts for {slots} values, "
            f"got {len(ciphertexts)}"
        )
    out = decrypt_many(ciphertexts, private_key, executor)
    for i, m in enumerate(out):
        in_this = min(per, slots - i * per)
        if m >> (layout.slot_bits * in_this):
            raise ProtocolViolation("a packed value is larger than its slots: refusing it")
    return out


def _decrypt_chunk(factors: tuple[int, int, int], ciphertexts: list[gmpy2.mpz]) -> list[int]:
    n, p, q = factors
    private = paillier.PaillierPrivateKey(paillier.PaillierPublicKey(n), p, q)
    return [decrypt(private, c) for c in ciphertexts]


def decrypt_many(
    ciphertexts: Sequence[gmpy2.mpz], private_key: PrivateKey, executor: Executor | None = None
) -> list[int]:
    """Plaintexts in [0, n), in chunks over the owner's own executor (it holds the factors)."""
    chunks = _chunks(len(ciphertexts), executor, 16)
    if executor is None or len(chunks) <= 1:
        return [decrypt(private_key, c) for c in ciphertexts]
    factors = (int(private_key.public_key.n), int(private_key.p), int(private_key.q))
    futures = [executor.submit(_decrypt_chunk, factors, list(ciphertexts[a:b])) for a, b in chunks]
    return [m for f in futures for m in f.result()]


def unpack_masked(plaintexts: Sequence[int], packing: MaskedPacking) -> list[int]:
    """The requesting side: remove the masks; each value checked against its bound."""
    layout = packing.layout
    per = layout.slots_per_plaintext
    if len(plaintexts) != layout.plaintexts_for(len(packing.masks)):
        raise ProtocolViolation("the peer returned the wrong number of packed plaintexts")
    values = []
    for k, r in enumerate(packing.masks):
        m = int(plaintexts[k // per])
        if m < 0:
            raise ProtocolViolation("a decrypted packed value is negative")
        values.append(_peer_value(m, k % per, layout, r))
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
