"""Private lookups: labelled unbalanced PSI (PSI with payloads), design notes section 8.

The bureau already holds ``H(y)^b`` for every enterprise ``y`` (its PSI preparation for one
bank and key epoch); the bank obtains ``H(x)^b`` for each of its own IDs from an ordinary
PSI exchange (it sends ``H(x)^a``, gets ``H(x)^ab`` back and unblinds). Both sides derive from
that point a lookup tag and a per-enterprise key; the bureau publishes, for all of its
enterprises, ``tag -> AEAD(key, payload)``, and the bank can open exactly the entries of IDs
it holds. This is the OPRF-based labelled PSI of Chen, Huang, Laine, Rindal, "Labeled PSI
from Fully Homomorphic Encryption with Malicious Security" (CCS 2018, section 2.4's "labels
encrypted under keys derived from the OPRF output"), as SecretFlow's unbalanced PSI also
ships it, with the 2HashDH OPRF of the PSI (Jarecki, Kiayias, Krawczyk, ASIACRYPT 2014).

- Key: HKDF-SHA256 (RFC 5869, ``cryptography``) of the point, with a salt naming the
  protocol, and an info string naming the product, its version and the key epoch, so a key
  never serves two products, two versions or two epochs.
- Payload: ChaCha20-Poly1305 (RFC 8439, ``cryptography``) with that key and a zero nonce:
  every key encrypts exactly one payload (a new version of a product is a new key), so the
  nonce never repeats under a key. The tag and the product name are associated data, so an
  entry cannot be moved to another tag or product without failing authentication.
- Tag: 8 bytes of ``SHA-256(domain || point)`` with a domain of its own, so lookup tags are
  not the PSI's tags (a table does not tell which PSI tag it belongs to).

What each side learns: the bureau, the number of points the bank blinded (the PSI step, on
record and counted against a quota); the bank, the payloads of the IDs it holds, and the
table's size. A payload is a projection of the bureau's data: which products a bank may look
up is the bureau's policy.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ProtocolViolation
from .group import POINT_BYTES

LOOKUP_TAG_BYTES = 8
KEY_BYTES = 32
AEAD_OVERHEAD = 16
MAX_PAYLOAD_BYTES = 4096
_SALT = b"xinrong/v1/lookup/hkdf-salt"
_TAG_DOMAIN = b"xinrong/v1/lookup/tag\x00"
_NONCE = bytes(12)
_PRODUCT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class EntryNotAuthentic(ProtocolViolation):
    """A table entry failed authentication: it was altered, or belongs to another tag,
    product, version or key epoch."""


@dataclass(frozen=True)
class TableVersion:
    """What a lookup table is of: a product (``size_class``, ``model_<id>`` ...), its
    version (a new one whenever any payload changes) and the PSI key epoch."""

    product: str
    version: int
    key_epoch: int

    def check(self) -> None:
        if not _PRODUCT.match(self.product):
            raise ProtocolViolation(
                f"product name {self.product!r}: 1-40 lower-case letters, digits or '_', "
                "starting with a letter"
            )
        for name in ("version", "key_epoch"):
            value = getattr(self, name)
            if not 0 <= value < 2**32:
                raise ProtocolViolation(f"{name} {value} is out of range")

    @property
    def info(self) -> bytes:
        return (
            b"xinrong/v1/lookup/key\x00"
            + struct.pack(">II", self.version, self.key_epoch)
            + self.product.encode()
        )

    @property
    def associated(self) -> bytes:
        return self.product.encode() + struct.pack(">II", self.version, self.key_epoch)


def lookup_tag(point: bytes) -> bytes:
    return hashlib.sha256(_TAG_DOMAIN + point).digest()[:LOOKUP_TAG_BYTES]


def entry_key(point: bytes, table: TableVersion) -> bytes:
    if len(point) != POINT_BYTES:
        raise ProtocolViolation(f"a point is {POINT_BYTES} bytes, not {len(point)}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_SALT, info=table.info)
    return hkdf.derive(point)


def seal_entry(point: bytes, payload: bytes, table: TableVersion) -> tuple[bytes, bytes]:
    """The bureau's entry for one enterprise: ``(tag, ciphertext)``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolViolation(f"a payload is at most {MAX_PAYLOAD_BYTES} bytes")
    tag = lookup_tag(point)
    sealed = ChaCha20Poly1305(entry_key(point, table)).encrypt(
        _NONCE, payload, tag + table.associated
    )
    return tag, sealed


def seal_table(
    points: Iterable[bytes], payloads: Iterable[bytes], table: TableVersion
) -> Iterator[tuple[bytes, bytes]]:
    """Entries for every enterprise, in the order given (the caller sorts by tag, so the
    published order says nothing about the bureau's file)."""
    table.check()
    for point, payload in zip(points, payloads, strict=True):
        yield seal_entry(point, payload, table)


def open_entry(point: bytes, sealed: bytes, table: TableVersion) -> bytes:
    """The bank opens the entry of an ID it holds (``point`` is its unblinded ``H(x)^b``)."""
    if not AEAD_OVERHEAD <= len(sealed) <= MAX_PAYLOAD_BYTES + AEAD_OVERHEAD:
        raise ProtocolViolation(f"a sealed entry of {len(sealed)} bytes is out of range")
    tag = lookup_tag(point)
    try:
        return ChaCha20Poly1305(entry_key(point, table)).decrypt(
            _NONCE, sealed, tag + table.associated
        )
    except InvalidTag:
        raise EntryNotAuthentic(
            f"the {table.product} entry (version {table.version}, key epoch "
            f"{table.key_epoch}) for tag {tag.hex()} failed authentication: the table was "
            "altered or is not the one announced; download it again"
        ) from None


def open_all(
    points: Iterable[bytes], table_entries: dict[bytes, bytes], table: TableVersion
) -> list[bytes | None]:
    """Payloads for the bank's points, in order; ``None`` where the bureau has no entry."""
    table.check()
    out: list[bytes | None] = []
    for point in points:
        sealed = table_entries.get(lookup_tag(point))
        out.append(None if sealed is None else open_entry(point, sealed, table))
    return out
