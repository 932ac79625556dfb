"""Suite-wide settings."""

from __future__ import annotations

import secrets

import gmpy2
import pytest


@pytest.fixture(autouse=True, scope="session")
def _receipts_out_of_home(tmp_path_factory):
    """Banks keep the bureau's audit receipts and lookup tables under ~/.xinrong by
    default: not in tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XINRONG_RECEIPTS_DIR", str(tmp_path_factory.mktemp("receipts")))
    mp.setenv("XINRONG_TABLES_DIR", str(tmp_path_factory.mktemp("lookup-tables")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _one_quota_day(monkeypatch):
    """Daily quotas count per UTC day: a test that spends one and then expects a refusal
    would see the quota reset if midnight fell between the two. In-process bureaus count on
    one fixed day (the roll-over itself is tested with its own clock)."""
    from bureau_node import config

    monkeypatch.setattr(config, "quota_day", lambda: "2026-12-01")


@pytest.fixture(scope="session")
def crafted_key() -> tuple[int, tuple[int, ...]]:
    """A review's malicious Paillier modulus (768 bits, for tests) and the best proof its
    owner can make. n = l_1 ... l_10 q with 24-bit primes l_i dividing q - 1: gcd(n, phi(n))
    > 1, and the owner reads through characters of order l_i whatever the other party
    multiplies into its ciphertexts, past any pad over Z_n and any r^n. The best try at the
    proof (protocols.paillier.prove_key) inverts n prime by prime where it can and joins the
    roots by CRT: mod q, x -> x^n is not onto, so the challenges have no roots there."""
    from protocols import paillier as he

    smalls: set[int] = set()
    while len(smalls) < 10:
        candidate = int(gmpy2.next_prime(secrets.randbits(24) | 1 << 23))
        if candidate.bit_length() == 24:
            smalls.add(candidate)
    product = 1
    for prime in smalls:
        product *= prime
    spare = 768 - 2 * product.bit_length()
    while True:
        q = 2 * (secrets.randbits(spare) | 1 << (spare - 1)) * product + 1
        # (q - 1) / product prime to every l_i, so that n is invertible modulo it below
        fits = (product * q).bit_length() == 768 and gmpy2.gcd(product, (q - 1) // product) == 1
        if fits and gmpy2.is_prime(q, 30):
            break
    n = product * q
    roots = []
    for challenge in he._key_challenges(n):
        parts = [
            (int(gmpy2.powmod(challenge, gmpy2.invert(n, f - 1), f)), f)
            for f in smalls
            if gmpy2.gcd(n, f - 1) == 1
        ]
        parts.append((int(gmpy2.powmod(challenge, gmpy2.invert(n, (q - 1) // product), q)), q))
        root, modulus = 0, 1
        for value, f in parts:
            root += modulus * ((value - root) * int(gmpy2.invert(modulus, f)) % f)
            modulus *= f
        roots.append(root)
    return n, tuple(roots)


@pytest.fixture
def held_elsewhere():  # type: ignore[no-untyped-def]
    """``hold(directory, what, option)``: the directory locked by another run (a thread here:
    the lock is the same across processes) until the function it returns is called; every
    lock still held is released when the test ends."""
    import threading

    from bank_node.training import hold_directory

    releases = []

    def hold(directory, what, option):  # type: ignore[no-untyped-def]
        held, release = threading.Event(), threading.Event()

        def run() -> None:
            with hold_directory(directory, what, option):
                held.set()
                release.wait(60)

        thread = threading.Thread(target=run)
        thread.start()
        assert held.wait(10)

        def done() -> None:
            release.set()
            thread.join(10)

        releases.append(done)
        return done

    yield hold
    for done in releases:
        done()
