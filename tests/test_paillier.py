"""The vectorised Paillier layer against phe (known answers both ways), and the checks
on everything received from the other party."""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier

from protocols import paillier as he
from protocols.errors import InvalidCiphertext, ProtocolViolation


@pytest.fixture(scope="module")
def keys():
    pub, priv = paillier.generate_paillier_keypair(n_length=512)
    return pub, priv, he.OwnerEncryptor(priv)


@pytest.fixture(scope="module")
def full_keys():
    pub, priv = he.generate_keypair(2048)
    return pub, priv, he.OwnerEncryptor(priv)


signed = st.integers(min_value=-(2**100), max_value=2**100)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(signed, min_size=1, max_size=8))
def test_phe_decrypts_what_the_owner_encrypts(keys, values):
    pub, priv, enc = keys
    for value, c in zip(values, enc.encrypt(values), strict=True):
        assert priv.decrypt(paillier.EncryptedNumber(pub, int(c), 0)) == value


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.one_of(signed, st.floats(-1e6, 1e6)), min_size=1, max_size=6),
    precision_bits=st.integers(0, 30),
)
def test_phe_ciphertexts_decrypt_here(keys, values, precision_bits):
    pub, priv, _ = keys
    for value in values:
        encrypted = pub.encrypt(
            value, precision=2.0**-precision_bits if isinstance(value, float) else None
        )
        plain = he.from_residue(he.decrypt(priv, encrypted.ciphertext()), pub.n)
        assert plain * pow(float(paillier.EncodedNumber.BASE), encrypted.exponent) == pytest.approx(
            value, rel=1e-9, abs=2.0**-precision_bits
        )


def test_full_size_keys_interoperate(full_keys):
    pub, priv, enc = full_keys
    c = enc.encrypt([-123456789])[0]
    assert priv.decrypt(paillier.EncryptedNumber(pub, int(c), 0)) == -123456789
    assert he.from_residue(he.decrypt(priv, pub.encrypt(-42).ciphertext()), pub.n) == -42
    assert he.ciphertext_bytes(pub) == 512


def test_owner_encryption_is_randomised(keys):
    _, _, enc = keys
    a, b = enc.encrypt([7, 7])
    assert a != b


def test_owner_tables_are_built_only_for_many_values():
    # a few values by direct exponentiation, then tables: both decrypt in phe
    pub, priv = paillier.generate_paillier_keypair(n_length=512)
    enc = he.OwnerEncryptor(priv)
    few = enc.encrypt([-3, 0, 5])
    assert not enc.has_tables
    many = enc.encrypt(list(range(-100, 100)))
    assert enc.has_tables
    decrypted = [priv.decrypt(paillier.EncryptedNumber(pub, int(c))) for c in few + many]
    assert decrypted == [-3, 0, 5, *range(-100, 100)]


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(-(2**40), 2**40), st.integers(-(2**24), 2**24)),
        min_size=0,
        max_size=40,
    )
)
def test_inner_product_matches_phe(keys, data):
    pub, priv, enc = keys
    values = [v for v, _ in data]
    scalars = [a for _, a in data]
    ciphertexts = enc.encrypt(values)
    ours = he.inner_product(ciphertexts, scalars, pub)
    expected = sum(v * a for v, a in data)
    assert he.from_residue(he.decrypt(priv, ours), pub.n) == expected
    if data:  # and the same through phe's own arithmetic
        total = sum(
            (
                paillier.EncryptedNumber(pub, int(c), 0) * a
                for c, a in zip(ciphertexts, scalars, strict=True)
            ),
            paillier.EncryptedNumber(pub, 1, 0),
        )
        assert priv.decrypt(total) == expected


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(signed, signed), min_size=1, max_size=8))
def test_plain_minus_a_ciphertext_matches_phe(keys, pairs):
    """[[v - a]] from v and [[a]] (a bin's negatives from its size and its positives), read
    by phe's decryption, and equal to phe's own ``v - [[a]]``."""
    pub, priv, enc = keys
    ciphertexts = enc.encrypt([a for _, a in pairs])
    ours = he.plain_minus([v for v, _ in pairs], ciphertexts, pub)
    for (v, a), c, mine in zip(pairs, ciphertexts, ours, strict=True):
        assert priv.decrypt(paillier.EncryptedNumber(pub, int(mine), 0)) == v - a
        assert priv.decrypt(v - paillier.EncryptedNumber(pub, int(c), 0)) == v - a


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(1, 2**200), st.integers(0, 2**30)), max_size=60))
def test_multiexp_equals_one_pow_per_term(pairs):
    modulus = gmpy2.mpz(2**255 - 19)
    bases = [gmpy2.mpz(b) for b, _ in pairs]
    exponents = [e for _, e in pairs]
    expected = gmpy2.mpz(1)
    for b, e in zip(bases, exponents, strict=True):
        expected = expected * gmpy2.powmod(b, e, modulus) % modulus
    assert he.multiexp(bases, exponents, modulus) == expected


@settings(max_examples=200, deadline=None)
@given(
    exponents=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=5),
    bits_short=st.integers(0, 7),
    window=st.integers(1, 16),
)
def test_exponent_digits_recompose_the_exponent(exponents, bits_short, window):
    # the fixed-base tables multiply entry[k][digit k]: the digits must be the exponent's
    nbytes = max(len(e) for e in exponents)
    bits = max(1, 8 * nbytes - bits_short)
    raw = np.array([list(e.ljust(nbytes, b"\0")) for e in exponents], dtype=np.uint8)
    for row, digits in zip(raw, he.exponent_digits(raw, bits, window), strict=True):
        assert len(digits) == -(-bits // window)
        assert all(0 <= d < 1 << window for d in digits)
        exponent = int.from_bytes(bytes(row), "little") % (1 << bits)
        assert sum(d << (window * k) for k, d in enumerate(digits)) == exponent


def test_inner_products_of_a_matrix(keys):
    pub, priv, enc = keys
    rng = np.random.default_rng(1)
    v = rng.integers(-1000, 1000, size=30)
    matrix = rng.integers(-(2**20), 2**20, size=(30, 4))
    out = he.inner_products(enc.encrypt(v.tolist()), matrix, pub)
    got = [he.from_residue(he.decrypt(priv, c), pub.n) for c in out]
    assert got == [int(x) for x in (matrix.astype(object).T @ v.astype(object))]


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-(2**79) + 1, 2**79 - 1), min_size=1, max_size=12))
def test_masked_packing_round_trip(keys, values):
    pub, priv, enc = keys
    layout = he.SlotLayout(80, pub.n.bit_length())
    packed, packing = he.pack_masked(enc.encrypt(values), layout, pub)
    assert len(packed) == layout.plaintexts_for(len(values))
    plaintexts = he.decrypt_packed(packed, priv, layout, len(values))
    assert he.unpack_masked(plaintexts, packing) == values
    # what the decrypting party sees: every slot is hidden by a mask of 120 bits
    s, per = layout.slot_bits, layout.slots_per_plaintext
    for k, value in enumerate(values):
        slot = (plaintexts[k // per] >> (s * (k % per))) & ((1 << s) - 1)
        assert slot - (1 << 80) != value


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-(2**79) + 1, 2**79 - 1), min_size=1, max_size=12))
def test_padded_packing_round_trip(keys, values):
    pub, priv, enc = keys
    layout = he.SlotLayout(80, pub.n.bit_length())
    packed, packing = he.pack_padded(enc.encrypt(values), layout, pub)
    assert len(packed) == layout.plaintexts_for(len(values))
    plaintexts = [he.decrypt(priv, c) for c in packed]
    assert he.unpack_padded(plaintexts, packing) == values
    # the decrypting party sees each plaintext padded over all of Z_n, not only its slots
    assert all(m >> (layout.slot_bits * layout.slots_per_plaintext) for m in plaintexts[:1])


def test_padded_unpacking_refuses_what_does_not_fit(keys):
    pub, priv, enc = keys
    layout = he.SlotLayout(40, pub.n.bit_length())
    for value, message in ((2**41, "outside its bound"), (2**200, "larger than its slots")):
        packed, packing = he.pack_padded(enc.encrypt([value]), layout, pub)
        with pytest.raises(ProtocolViolation, match=message):
            he.unpack_padded([he.decrypt(priv, c) for c in packed], packing)
    with pytest.raises(ProtocolViolation, match="wrong number"):
        he.unpack_padded([], packing)


def test_packing_fills_a_2048_bit_plaintext(full_keys):
    pub, _, _ = full_keys
    layout = he.SlotLayout(80, pub.n.bit_length())
    assert layout.slot_bits == 122 and layout.slots_per_plaintext == 16


def test_unpacking_refuses_values_beyond_their_bound(keys):
    pub, priv, enc = keys
    layout = he.SlotLayout(40, pub.n.bit_length())
    packed, packing = he.pack_masked(enc.encrypt([2**41]), layout, pub)
    plaintexts = he.decrypt_packed(packed, priv, layout, 1)
    with pytest.raises(ProtocolViolation, match="outside its bound"):
        he.unpack_masked(plaintexts, packing)


def test_decrypting_side_refuses_oversized_packed_values(keys):
    pub, priv, enc = keys
    layout = he.SlotLayout(40, pub.n.bit_length())
    c = enc.encrypt([1 << (layout.slot_bits + 3)])
    with pytest.raises(ProtocolViolation, match="larger than its slots"):
        he.decrypt_packed(c, priv, layout, 1)
    with pytest.raises(ProtocolViolation, match="expected 1 packed"):
        he.decrypt_packed(c + c, priv, layout, 1)


def test_received_ciphertexts_are_checked(keys):
    pub, priv, enc = keys
    width = he.ciphertext_bytes(pub)
    good = he.ciphertexts_to_bytes(enc.encrypt([1, 2]), pub)
    assert len(he.ciphertexts_from_bytes(good, pub, 2)) == 2
    with pytest.raises(InvalidCiphertext, match="expected 3"):
        he.ciphertexts_from_bytes(good, pub, 3)
    with pytest.raises(InvalidCiphertext, match="whole number"):
        he.ciphertexts_from_bytes(good[:-1], pub)
    for bad in (0, pub.nsquare, pub.nsquare + 5, priv.p * 12345):
        data = (bad % (1 << (8 * width))).to_bytes(width, "big")
        with pytest.raises(InvalidCiphertext, match="Z\\*"):
            he.ciphertexts_from_bytes(data, pub)


def test_key_sizes_and_moduli_are_checked(keys):
    pub, priv, _ = keys
    proof = he.prove_key(priv)
    with pytest.raises(ProtocolViolation, match="--allow-test-keys"):
        he.check_key_bits(1024)
    he.check_key_bits(1024, allow_test_keys=True)
    with pytest.raises(ProtocolViolation, match="not allowed"):
        he.check_key_bits(8192, allow_test_keys=True)
    assert he.public_key_from_n(pub.n, True, proof).n == pub.n
    with pytest.raises(ProtocolViolation):
        he.public_key_from_n(pub.n, False, proof)
    with pytest.raises(ProtocolViolation, match="RSA modulus"):
        he.public_key_from_n(pub.n + 1, True, proof)
    prime = int(gmpy2.next_prime(gmpy2.mpz(2) ** 511))
    with pytest.raises(ProtocolViolation, match="RSA modulus"):
        he.public_key_from_n(prime, True, proof)


def test_a_key_comes_with_its_proof_of_being_a_paillier_modulus(keys):
    """Goldberg, Reyzin, Sagga and Baldimtsi (ASIACRYPT 2019), section 3.2: n-th roots of
    challenges hashed from n; trial division below 2^16."""
    pub, priv, _ = keys
    proof = he.prove_key(priv)
    assert len(proof) == he.KEY_PROOF_ROOTS and all(0 < r < pub.n for r in proof)
    assert he.prove_key(priv) == proof  # the challenges are n's alone: the roots are unique
    with pytest.raises(ProtocolViolation, match="0 roots"):
        he.public_key_from_n(pub.n, True, ())
    with pytest.raises(ProtocolViolation, match="fails at root 3"):
        he.public_key_from_n(pub.n, True, (*proof[:2], proof[2] + 1, *proof[3:]))
    other, _ = he.generate_keypair(512, allow_test_keys=True)
    with pytest.raises(ProtocolViolation, match="fails at root 1"):  # another key's proof
        he.public_key_from_n(other.n, True, proof)
    # a prime factor below 2^16 is refused before the roots are looked at
    small = 65521 * int(gmpy2.next_prime(gmpy2.mpz(3) << 750))
    assert small.bit_length() == 768
    with pytest.raises(ProtocolViolation, match="prime factor below 65536"):
        he.public_key_from_n(small, True, proof)


def test_a_crafted_modulus_cannot_be_proven(crafted_key):
    """Its owner knows every factor and still cannot take n-th roots of the challenges:
    x -> x^n mod q loses a factor l_i of q - 1 for each l_i dividing n."""
    n, best_try = crafted_key
    assert n.bit_length() == 768 and not gmpy2.is_prime(n) and not gmpy2.is_square(n)
    he.check_key_bits(n.bit_length(), True)  # every former check of a key passed
    with pytest.raises(ProtocolViolation, match="fails at root"):
        he.public_key_from_n(n, True, best_try)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-1e4, 1e4), max_size=20), scale=st.integers(0, 24))
def test_fixed_point_encoding_is_within_half_a_step(values, scale):
    encoded = he.encode(np.array(values), scale)
    for v, e in zip(values, encoded, strict=True):
        assert abs(e / 2**scale - v) <= 2.0 ** -(scale + 1) + 1e-9


def test_signed_residues_round_trip():
    n = 1009 * 1013
    for v in (-500000, -1, 0, 1, 500000):
        assert he.from_residue(he.to_residue(v, n), n) == v


@settings(max_examples=20, deadline=None)
@given(values=st.lists(signed, min_size=1, max_size=5))
def test_peer_encryption_with_its_own_base_decrypts_in_phe(keys, values):
    pub, priv, _ = keys
    peer = he.PeerEncryptor(pub)
    for value in values:
        c = peer.encrypt(value)
        assert priv.decrypt(paillier.EncryptedNumber(pub, int(c), 0)) == value
    assert peer.encrypt(5) != peer.encrypt(5)
    assert he.PeerEncryptor(pub).h != peer.h  # each requester draws its own base


def test_packing_with_the_requesters_base_round_trips(keys):
    pub, priv, enc = keys
    layout = he.SlotLayout(64, pub.n.bit_length())
    values = [-(2**63) + 1, 0, 12345, 2**63 - 1]
    packed, packing = he.pack_masked(enc.encrypt(values), layout, he.PeerEncryptor(pub))
    assert he.unpack_masked(he.decrypt_packed(packed, priv, layout, 4), packing) == values


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(signed, signed), min_size=1, max_size=6))
def test_adding_plaintexts_agrees_with_phe(keys, pairs):
    pub, priv, enc = keys
    ours = he.add_plain(enc.encrypt([a for a, _ in pairs]), [b for _, b in pairs], pub)
    for (a, b), c in zip(pairs, ours, strict=True):
        assert priv.decrypt(paillier.EncryptedNumber(pub, int(c), 0)) == a + b
        theirs = paillier.EncryptedNumber(pub, int(enc.encrypt([a])[0]), 0) + b
        assert he.from_residue(he.decrypt(priv, theirs.ciphertext()), pub.n) == a + b


def test_operation_counts_add_up(keys):
    pub, _, enc = keys
    counts = he.OpCounts()
    ciphertexts = enc.encrypt_many(list(range(50)), None, counts)
    he.inner_products(ciphertexts, np.ones((50, 3), dtype=np.int64), pub, None, counts)
    assert counts.encryptions == 50 and counts.inner_product_terms == 150
    assert counts.multiplications > 0
    before = counts.as_dict()
    enc.encrypt_many([1, 2], None, counts)
    assert counts.minus(before)["encryptions"] == 2


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_packed_combinations_equal_integer_arithmetic(keys, data):
    """Rows' products with an encrypted vector, packed from shifted copies of its
    ciphertexts, are exactly the packed integers (signed entries, short last groups)."""
    pub, priv, enc = keys
    k = data.draw(st.integers(1, 5), label="columns")
    rows = data.draw(st.integers(1, 25), label="rows")
    slots = data.draw(st.integers(1, 8), label="slots")
    v = data.draw(st.lists(st.integers(-(2**20), 2**20), min_size=k, max_size=k))
    entries = st.lists(st.integers(-(2**11), 2**11), min_size=k, max_size=k)
    a = data.draw(st.lists(entries, min_size=rows, max_size=rows))
    slot_bits = 60  # 8 slots of 60 bits fit a 512-bit plaintext; |a . v| < 2^35
    out = he.packed_combinations(enc.encrypt(v), np.array(a), slot_bits, slots, pub)
    values = [sum(x * y for x, y in zip(row, v, strict=True)) for row in a]
    expected = [
        sum(value << (slot_bits * i) for i, value in enumerate(values[g : g + slots])) % pub.n
        for g in range(0, rows, slots)
    ]
    assert [he.decrypt(priv, c) for c in out] == expected


def test_packed_combinations_over_a_pool_and_masked(keys):
    """With the bases split over worker processes, then masked and re-randomised for the
    key owner: it unpacks to the rows' products plus the clear parts, as pack_masked of the
    same values would."""
    from concurrent.futures import ProcessPoolExecutor

    pub, priv, enc = keys
    rng = np.random.default_rng(3)
    v = rng.integers(-(2**30), 2**30, size=6).tolist()
    a = rng.integers(-1024, 1024, size=(50, 6))
    plain = rng.integers(-(2**30), 2**30, size=50).tolist()
    layout = he.SlotLayout(45, pub.n.bit_length())
    with ProcessPoolExecutor(2) as pool:
        packed = he.packed_combinations(
            enc.encrypt(v), a, layout.slot_bits, layout.slots_per_plaintext, pub, pool
        )
    masked, packing = he.mask_packed(packed, plain, layout, pub)
    values = [int(x) for x in (a.astype(object) @ np.array(v, dtype=object))]
    plaintexts = he.decrypt_packed(masked, priv, layout, len(values))
    assert he.unpack_masked(plaintexts, packing) == [x + p for x, p in zip(values, plain)]
    # each ciphertext was re-randomised, not only shifted by its clear part and masks
    added = (plaintexts[0] - he.decrypt(priv, packed[0])) % pub.n
    assert masked[0] != packed[0] * (1 + added * pub.n) % pub.nsquare


def test_shifted_copies_are_chosen_only_when_they_cost_less():
    assert he.copies_pay(1024, 10, 29)  # default_credit: 290 copies for 1,024 rows
    assert not he.copies_pay(1200, 300, 29)  # the FATE shape: a ciphertext per row


def test_randomisers_computed_ahead_encrypt_like_encrypt(keys):
    """The owner's randomisers, computed on workers before the values are known, give
    ciphertexts that decrypt to the values (in phe too), each with its own randomness."""
    from concurrent.futures import ProcessPoolExecutor

    pub, priv, enc = keys
    values = [-(2**90), -1, 0, 1, 2**90] * 60  # 300 values: two chunks over the pool
    with ProcessPoolExecutor(2) as pool:
        collect = enc.randomisers_later(len(values), pool)
        ciphertexts = enc.encrypt_with(values, collect())
    assert [he.from_residue(he.decrypt(priv, c), pub.n) for c in ciphertexts] == values
    assert priv.decrypt(paillier.EncryptedNumber(pub, int(ciphertexts[3]), 0)) == 1
    assert len(set(ciphertexts)) == len(values)
    inline = enc.encrypt_with(values[:5], enc.randomisers_later(5)())
    assert [he.from_residue(he.decrypt(priv, c), pub.n) for c in inline] == values[:5]
    with pytest.raises(ValueError):
        enc.encrypt_with(values[:5], enc.randomisers(4))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_one_bad_ciphertext_among_many_is_named(keys, data):
    """The check of a batch (one gcd of the product) finds a ciphertext sharing a factor
    with n, or out of range, wherever it is, and names it."""
    pub, priv, enc = keys
    good = enc.encrypt(list(range(data.draw(st.integers(1, 12), label="count"))))
    assert he.ciphertexts_from_bytes(he.ciphertexts_to_bytes(good, pub), pub) == good
    at = data.draw(st.integers(0, len(good) - 1), label="at")
    multiple = data.draw(st.integers(1, 2**64), label="multiple")
    bad = list(good)
    bad[at] = data.draw(
        st.sampled_from([priv.p * multiple, priv.q * multiple, 0, pub.nsquare]), label="bad"
    )
    width = he.ciphertext_bytes(pub)
    with pytest.raises(InvalidCiphertext, match=f"ciphertext {at} "):
        he.ciphertexts_from_bytes(b"".join(int(c).to_bytes(width, "big") for c in bad), pub)
