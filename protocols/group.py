"""Ristretto255, the prime-order group of the PSI, through libsodium (bundled by ``rbcl``).

Everything here works on *chunks*: a chunk of points is one ``bytes`` of 32-byte
encodings laid end to end, which is also how they travel on the wire. The chunk functions
are module-level and take only bytes, so an executor can run them in other processes.

Hash to the group: ``H(x) = from_hash(SHA-512(HASH_DOMAIN || x))`` (libsodium's
``crypto_core_ristretto255_from_hash``, the one-way map of RFC 9496 section 4.3.4).
Tags: the first ``TAG_BYTES`` bytes of ``SHA-256(TAG_DOMAIN || point)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import rbcl

from .errors import InvalidGroupElement, ProtocolViolation

POINT_BYTES = 32
SCALAR_BYTES = 32
TAG_BYTES = 8
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, RFC 9496 section 4
HASH_DOMAIN = b"xinrong/v1/psi/hash-to-ristretto255\x00"
TAG_DOMAIN = b"xinrong/v1/psi/tag\x00"


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar mod the group order, from the OS's randomness
    (libsodium's ``randombytes``)."""
    return rbcl.crypto_core_ristretto255_scalar_random()


def invert_scalar(scalar: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_scalar_invert(scalar)


def check_scalar(scalar: bytes) -> None:
    """A secret scalar must be 32 little-endian bytes in 1..L-1 (else it has no inverse)."""
    if not isinstance(scalar, bytes) or len(scalar) != SCALAR_BYTES:
        raise ValueError(f"a scalar is {SCALAR_BYTES} bytes")
    if not 0 < int.from_bytes(scalar, "little") < GROUP_ORDER:
        raise ValueError("scalar is not reduced mod the group order, or is zero")


def hash_to_group(identifier: bytes) -> bytes:
    """H(x) for one identifier (its UTF-8 bytes)."""
    digest = hashlib.sha512(HASH_DOMAIN + identifier).digest()
    return rbcl.crypto_core_ristretto255_from_hash(digest)


def split_points(chunk: bytes, what: str = "point") -> list[bytes]:
    if len(chunk) % POINT_BYTES:
        raise ProtocolViolation(
            f"a chunk of {what}s is {len(chunk)} bytes, not a multiple of {POINT_BYTES}"
        )
    return [chunk[i : i + POINT_BYTES] for i in range(0, len(chunk), POINT_BYTES)]


IDENTITY = bytes(POINT_BYTES)


def check_points(chunk: bytes, what: str = "point") -> None:
    """Every point of the chunk a canonical encoding of a group element other than the
    identity (libsodium's check, about a tenth of an exponentiation): what a party checks
    before it charges for, or spends its key on, points it received."""
    valid = rbcl.crypto_core_ristretto255_is_valid_point
    for i, point in enumerate(split_points(chunk, what)):
        if point == IDENTITY or not valid(point):
            raise InvalidGroupElement(i, what)


def hash_ids(identifiers: Sequence[bytes]) -> bytes:
    """H(x) for each identifier, as one chunk."""
    return b"".join(hash_to_group(x) for x in identifiers)


def exponentiate(scalar: bytes, chunk: bytes, what: str = "point", first_index: int = 0) -> bytes:
    """``P^scalar`` for every point of the chunk (multiplicative notation, as in the design).

    Every input is validated by libsodium's decoding: a non-canonical encoding, a string
    that is not a group element, or a result equal to the identity raises
    :class:`InvalidGroupElement` naming the element's index (offset by ``first_index``).
    """
    out = []
    mult = rbcl.crypto_scalarmult_ristretto255
    for i, point in enumerate(split_points(chunk, what)):
        try:
            out.append(mult(scalar, point))
        except RuntimeError:
            raise InvalidGroupElement(first_index + i, what) from None
    return b"".join(out)


def hash_and_exponentiate(scalar: bytes, identifiers: Sequence[bytes]) -> bytes:
    """``H(x)^scalar`` for each identifier: the bank's blinding step."""
    mult = rbcl.crypto_scalarmult_ristretto255
    return b"".join(mult(scalar, hash_to_group(x)) for x in identifiers)


def tag_points(chunk: bytes) -> bytes:
    """The truncated SHA-256 tag of each point, as one byte string of ``TAG_BYTES`` each."""
    sha256 = hashlib.sha256
    return b"".join(
        sha256(TAG_DOMAIN + chunk[i : i + POINT_BYTES]).digest()[:TAG_BYTES]
        for i in range(0, len(chunk), POINT_BYTES)
    )


def exponentiate_and_tag(
    scalar: bytes, chunk: bytes, what: str = "point", first_index: int = 0
) -> bytes:
    """Tags of ``P^scalar``: the bureau's preparation and the bank's unblinding end here."""
    return tag_points(exponentiate(scalar, chunk, what, first_index))
