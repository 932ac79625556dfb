"""Private lookups: labelled unbalanced PSI (PSI with payloads), design notes section 8.

The bureau holds ``H(y)^k`` for every enterprise ``y`` under a lookup scalar ``k`` of one
bank and key epoch (:func:`oprf_points`); the bank obtains ``H(x)^k`` for each of its own IDs
from the same exchange as PSI's (it sends ``H(x)^a``, gets ``H(x)^ak`` back and unblinds),
but against ``k``, not the PSI scalar ``b``: PSI's answers are charged to another, larger
quota, and with one scalar they would open lookup tables. Both sides derive from that point
a lookup tag and a per-enterprise key; the bureau publishes, for all of its enterprises,
``tag -> AEAD(key, payload)``, and the bank can open exactly the entries of IDs it holds.
This is the OPRF-based labelled PSI of Chen, Huang, Laine, Rindal, "Labeled PSI from Fully
Homomorphic Encryption with Malicious Security" (CCS 2018, section 2.4's "labels encrypted
under keys derived from the OPRF output"), as SecretFlow's unbalanced PSI also ships it,
with the 2HashDH OPRF of the PSI (Jarecki, Kiayias, Krawczyk, ASIACRYPT 2014) under a key
of its own.

- Key: HKDF-SHA256 (RFC 5869, ``cryptography``) of the point, with a salt naming the
  protocol, and an info string naming the product, the entry's revision (the table version
  at which its payload last changed) and the key epoch, so a key never serves two products,
  two payloads or two epochs.
- Payload: ChaCha20-Poly1305 (RFC 8439, ``cryptography``) with that key and a zero nonce:
  every key encrypts exactly one payload (a changed payload gets a new revision, so a new
  key), so the nonce never repeats under a key with another plaintext. The tag, product,
  revision and epoch are associated data: an entry cannot be moved to another tag or
  product without failing authentication.
- Tag: 8 bytes of ``SHA-256(domain || point)`` with a domain of its own, so lookup tags are
  not the PSI's tags (a table does not tell which PSI tag it belongs to).

What each side learns: the bureau, the number of points the bank blinded (the OPRF step, on
record and counted against the lookup quota); the bank, the payloads of the IDs it holds, and the
table's size. A payload is a projection of the bureau's data: which products a bank may look
up is the bureau's policy.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import group, psi
from .errors import ProtocolViolation
from .explain import MAX_REASONS
from .group import POINT_BYTES

LOOKUP_TAG_BYTES = 8
KEY_BYTES = 32
AEAD_OVERHEAD = 16
MAX_PAYLOAD_BYTES = 4096
_SALT = b"xinrong/v1/lookup/hkdf-salt"
_TAG_DOMAIN = b"xinrong/v1/lookup/tag\x00"
_NONCE = bytes(12)
_SHA256 = hashes.SHA256()
_PRODUCT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class EntryNotAuthentic(ProtocolViolation):
    """A table entry failed authentication: it was altered, or belongs to another tag,
    product, version or key epoch."""


@dataclass(frozen=True)
class TableVersion:
    """What a lookup table is of: a product (``size_class``, ``model_<id>`` ...), its
    version (a new one whenever any payload changes) and the bank's key epoch."""

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

    @cached_property
    def info(self) -> bytes:
        return (
            b"xinrong/v1/lookup/key\x00"
            + struct.pack(">II", self.version, self.key_epoch)
            + self.product.encode()
        )

    @cached_property
    def associated(self) -> bytes:
        return self.product.encode() + struct.pack(">II", self.version, self.key_epoch)


def lookup_tag(point: bytes) -> bytes:
    return hashlib.sha256(_TAG_DOMAIN + point).digest()[:LOOKUP_TAG_BYTES]


def entry_key(point: bytes, table: TableVersion) -> bytes:
    if len(point) != POINT_BYTES:
        raise ProtocolViolation(f"a point is {POINT_BYTES} bytes, not {len(point)}")
    hkdf = HKDF(algorithm=_SHA256, length=KEY_BYTES, salt=_SALT, info=table.info)
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
    """The bank opens the entry of an ID it holds (``point`` is its unblinded ``H(x)^k``)."""
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


# -------------------------------------------------------------------------- tables
#
# A table of version v holds, per enterprise, its entry sealed under the entry's *revision*:
# the table version at which that enterprise's payload last changed (``TableVersion(product,
# revision, epoch)`` keys it). An unchanged payload keeps its revision, key and ciphertext
# from one version to the next, so a bank holding version s needs only the entries with a
# revision above s and the tags removed since s: an incremental update. A payload that
# changes gets a new revision, hence a new key: no key ever seals two payloads.


# A model's table (private scoring): per enterprise the bureau's score u_B (float64,
# little-endian), then one reason code per byte (1 + the index of a bureau feature; 0: none).
MODEL_PREFIX = "model_"
MODEL_PAYLOAD_BYTES = 8 + MAX_REASONS


MODEL_ID = re.compile(r"^[0-9a-f]{32}$")  # the bureau's secrets.token_hex(16)


def model_table(model_id: str) -> str:
    """The product name of a model's table."""
    return MODEL_PREFIX + model_id


TAG_ORDER = np.dtype(">u8")  # tags sort as big-endian numbers: the same as their bytes
REVISION = np.dtype("<u4")


def sealed_bytes(payload_bytes: int) -> int:
    return payload_bytes + AEAD_OVERHEAD


# The bank holds a whole table in memory (tag, sealed entry and revision per enterprise): a
# city's registry is a few million enterprises of tens of bytes each. A bureau announcing
# more is refused before anything is allocated, as PSI refuses a larger set.
MAX_TABLE_ENTRIES = psi.MAX_BUREAU_SET_SIZE
MAX_TABLE_BYTES = 4 << 30


def check_table_size(entries: int, payload_bytes: int, what: str) -> None:
    """Refuse a table (``what``: which, for the message) the bank could not hold."""
    if not 0 <= payload_bytes <= MAX_PAYLOAD_BYTES:
        raise ProtocolViolation(
            f"{what}: a payload length of {payload_bytes} is out of range "
            f"(0 to {MAX_PAYLOAD_BYTES} bytes)"
        )
    width = LOOKUP_TAG_BYTES + sealed_bytes(payload_bytes) + REVISION.itemsize
    if not 0 <= entries <= MAX_TABLE_ENTRIES or entries * width > MAX_TABLE_BYTES:
        raise ProtocolViolation(
            f"{what} is announced with {entries:,} entries of {payload_bytes} bytes; the bank "
            f"takes at most {MAX_TABLE_ENTRIES:,} entries and {MAX_TABLE_BYTES >> 30} GiB in "
            "all: ask the bureau's operator what it serves"
        )


def seal_chunk(
    points: bytes, payloads: bytes, revisions: bytes, payload_bytes: int, product: str, epoch: int
) -> tuple[bytes, bytes]:
    """Entries for a chunk of enterprises: ``points`` (32 bytes each), their payloads
    (``payload_bytes`` each) and revisions (``REVISION``), end to end; returns their tags and
    sealed payloads, end to end, in the same order. Bytes in and out, so that an executor
    can run it in another process."""
    count = len(points) // POINT_BYTES
    if (
        len(points) != count * POINT_BYTES
        or len(payloads) != count * payload_bytes
        or len(revisions) != count * REVISION.itemsize
    ):
        raise ProtocolViolation("points, payloads and revisions of a chunk do not line up")
    tags, sealed = [], []
    tables = _versions(product, epoch)
    for i, revision in enumerate(np.frombuffer(revisions, REVISION).tolist()):
        point = points[i * POINT_BYTES : (i + 1) * POINT_BYTES]
        table = tables[revision]
        tag, box = seal_entry(point, payloads[i * payload_bytes : (i + 1) * payload_bytes], table)
        tags.append(tag)
        sealed.append(box)
    return b"".join(tags), b"".join(sealed)


@dataclass(frozen=True)
class TableChunk:
    """Part of a table as it travels: consecutive entries from ``offset``."""

    offset: int
    tags: bytes
    sealed: bytes
    revisions: bytes


@dataclass(frozen=True)
class LookupTable:
    """A table at the bank: ``tags`` ascending (``TAG_ORDER``), ``sealed[i]`` the entry of
    ``tags[i]`` (a ``(n, payload_bytes + 16)`` uint8 matrix), sealed under revision
    ``revisions[i]`` (at most ``version.version``)."""

    version: TableVersion
    payload_bytes: int
    tags: np.ndarray
    sealed: np.ndarray
    revisions: np.ndarray

    @classmethod
    def from_chunks(
        cls,
        version: TableVersion,
        payload_bytes: int,
        total: int,
        chunks: Iterable[TableChunk],
    ) -> LookupTable:
        """Assemble and check a table (or a delta) from chunks as they came from the bureau:
        contiguous, the announced size, tags strictly ascending, revisions in range."""
        version.check()
        check_table_size(total, payload_bytes, f"the {version.product} table")
        width = sealed_bytes(payload_bytes)
        tags = np.empty(total, dtype=TAG_ORDER)
        sealed = np.empty((total, width), dtype=np.uint8)
        revisions = np.empty(total, dtype=REVISION)
        filled = 0
        for chunk in chunks:
            count = len(chunk.tags) // LOOKUP_TAG_BYTES
            if (
                chunk.offset != filled
                or len(chunk.tags) != count * LOOKUP_TAG_BYTES
                or len(chunk.sealed) != count * width
                or len(chunk.revisions) != count * REVISION.itemsize
                or filled + count > total
            ):
                raise ProtocolViolation(
                    f"table chunk at offset {chunk.offset} ({len(chunk.tags)} tag bytes, "
                    f"{len(chunk.sealed)} sealed bytes) does not continue the table at "
                    f"{filled} of {total} entries of {width} bytes"
                )
            part = slice(filled, filled + count)
            tags[part] = np.frombuffer(chunk.tags, dtype=TAG_ORDER)
            sealed[part] = np.frombuffer(chunk.sealed, np.uint8).reshape(count, width)
            revisions[part] = np.frombuffer(chunk.revisions, dtype=REVISION)
            filled += count
        if filled != total:
            raise ProtocolViolation(f"the table ended after {filled} of {total} entries")
        if total > 1 and not bool(np.all(tags[1:] > tags[:-1])):
            raise ProtocolViolation("the table's tags are not strictly ascending")
        if total and not (1 <= int(revisions.min()) and int(revisions.max()) <= version.version):
            raise ProtocolViolation(
                f"an entry's revision is outside 1..{version.version}, the table's version"
            )
        return cls(version, payload_bytes, tags, sealed, revisions)

    def updated(self, delta: LookupTable, removed: bytes) -> LookupTable:
        """This table brought to ``delta``'s version: entries of ``delta`` replace or join
        those with the same tag, tags in ``removed`` leave."""
        if (delta.version.product, delta.version.key_epoch) != (
            self.version.product,
            self.version.key_epoch,
        ) or delta.payload_bytes != self.payload_bytes:
            raise ProtocolViolation("an update of another product, key epoch or payload size")
        if delta.version.version <= self.version.version:
            raise ProtocolViolation("an update to an older or the same version")
        if delta.revisions.size and int(delta.revisions.min()) <= self.version.version:
            raise ProtocolViolation("an update holds entries the bank already has")
        if len(removed) % LOOKUP_TAG_BYTES:
            raise ProtocolViolation("removed tags are 8 bytes each")
        # compared as native integers: numpy's isin refuses some byte-swapped dtypes
        native = self.tags.astype(np.uint64)
        gone = np.frombuffer(removed, dtype=TAG_ORDER).astype(np.uint64)
        keep = ~np.isin(native, gone) & ~np.isin(native, delta.tags.astype(np.uint64))
        # concatenate gives native byte order: cast back, or the kept copy no longer loads
        tags = np.concatenate([self.tags[keep], delta.tags]).astype(TAG_ORDER, copy=False)
        order = np.argsort(tags, kind="stable")
        revisions = np.concatenate([self.revisions[keep], delta.revisions])
        return LookupTable(
            delta.version,
            self.payload_bytes,
            tags[order],
            np.concatenate([self.sealed[keep], delta.sealed])[order],
            revisions.astype(REVISION, copy=False)[order],
        )

    def find(self, points: Sequence[bytes]) -> np.ndarray:
        """The row of each point's entry, or -1 where the table has none (an enterprise the
        bureau does not hold)."""
        wanted = np.frombuffer(b"".join(lookup_tag(p) for p in points), TAG_ORDER)
        rows = np.searchsorted(self.tags, wanted)
        inside = rows < self.tags.size
        found = np.zeros(wanted.size, dtype=bool)
        found[inside] = self.tags[rows[inside]] == wanted[inside]
        return np.where(found, rows, -1)

    def open(self, points: Sequence[bytes], executor: Executor | None = None) -> list[bytes | None]:
        """Payloads for the bank's points, in order; ``None`` where the table has no entry
        or its entry fails authentication (``open_counted`` says how many did)."""
        return self.open_counted(points, executor)[0]

    def open_counted(
        self, points: Sequence[bytes], executor: Executor | None = None
    ) -> tuple[list[bytes | None], int]:
        """Payloads for the bank's points, in order (``None`` where the table has no entry),
        and how many entries failed authentication, which are ``None`` too: never raised,
        because stopping at one would tell the bureau, by the calls that did not follow,
        that the bank had looked up the enterprise whose entry it had altered. With an
        executor, many entries are opened in chunks on its workers."""
        rows = self.find(points)
        hit = np.flatnonzero(rows >= 0)
        spans = list(psi.chunk_offsets(hit.size, OPEN_CHUNK))
        product, epoch = self.version.product, self.version.key_epoch
        work = (
            (
                b"".join(points[i] for i in hit[a:b]),
                self.sealed[rows[hit[a:b]]].tobytes(),
                self.revisions[rows[hit[a:b]]].tobytes(),
                self.payload_bytes,
                product,
                epoch,
            )
            for a, b in spans
        )
        run = executor if executor is not None and hit.size > OPEN_CHUNK else None
        out: list[bytes | None] = [None] * len(points)
        failed = 0
        for (a, b), payloads in zip(spans, psi.ordered_map(run, open_chunk, work)):
            for i, payload in zip(hit[a:b], payloads):
                out[i] = payload
                failed += payload is None
        return out, failed


OPEN_CHUNK = 4096  # entries per task when opening with an executor


def open_chunk(
    points: bytes, sealed: bytes, revisions: bytes, payload_bytes: int, product: str, epoch: int
) -> list[bytes | None]:
    """Open a chunk of entries (points, sealed entries and revisions end to end), ``None``
    for one that fails authentication; bytes in and out so that an executor can run it in
    another process."""
    width = sealed_bytes(payload_bytes)
    count = len(points) // POINT_BYTES
    if len(sealed) != count * width or len(revisions) != count * REVISION.itemsize:
        raise ProtocolViolation("points and sealed entries of a chunk do not line up")
    tables = _versions(product, epoch)
    out: list[bytes | None] = []
    for i, revision in enumerate(np.frombuffer(revisions, REVISION).tolist()):
        try:
            payload: bytes | None = open_entry(
                points[i * POINT_BYTES : (i + 1) * POINT_BYTES],
                sealed[i * width : (i + 1) * width],
                tables[revision],
            )
        except EntryNotAuthentic:
            payload = None
        out.append(payload)
    return out


class _versions(dict[int, TableVersion]):  # noqa: N801 - a dict used like a function
    """The checked ``TableVersion`` of each revision of a chunk, made once per revision (a
    chunk of thousands of entries has a handful of revisions)."""

    def __init__(self, product: str, epoch: int) -> None:
        super().__init__()
        self.product, self.epoch = product, epoch

    def __missing__(self, revision: int) -> TableVersion:
        table = TableVersion(self.product, revision, self.epoch)
        table.check()
        self[revision] = table
        return table


# -------------------------------------------------------------------------- the OPRF


@dataclass(frozen=True)
class BlindedQuery:
    """The bank's side of one OPRF call: ``H(x)^a`` for its IDs and the secret ``a``."""

    scalar: bytes = field(repr=False)
    points: bytes
    count: int


def blind(identifiers: Sequence[bytes]) -> BlindedQuery:
    """A fresh secret scalar (libsodium's randomness) for each query, so two queries of the
    same ID look unrelated to the bureau."""
    scalar = group.random_scalar()
    return BlindedQuery(scalar, group.hash_and_exponentiate(scalar, identifiers), len(identifiers))


def blind_again(points: bytes) -> tuple[bytes, bytes]:
    """The same query under a fresh extra scalar c: ``(c, P^c)``. For sending points again
    (a stream broke after it may have sent them): the same bytes twice would let the bureau
    link the two calls; these look unrelated to the first."""
    extra = group.random_scalar()
    return extra, group.exponentiate(extra, points, "blinded point")


def unblind_again(extra: bytes, evaluated: bytes) -> bytes:
    """``(P^k)`` from the bureau's ``(P^c)^k``: the answer to the original points."""
    return group.exponentiate(group.invert_scalar(extra), evaluated, "evaluated point")


def unblind(query: BlindedQuery, evaluated: bytes) -> list[bytes]:
    """``H(x)^k`` for each ID of the query, from the bureau's ``(H(x)^a)^k``: one point per
    ID asked, each a valid group element (else :class:`InvalidGroupElement`)."""
    if len(evaluated) != query.count * POINT_BYTES:
        raise ProtocolViolation(
            f"the bureau answered {len(evaluated)} bytes for {query.count} points"
        )
    inverse = group.invert_scalar(query.scalar)
    return group.split_points(group.exponentiate(inverse, evaluated, "evaluated point"))


def oprf_points(
    scalar: bytes, points: Iterable[bytes], executor: Executor | None = None
) -> Iterator[bytes]:
    """The bureau's one-time work per (bank, key epoch) for its tables: ``H(y)^k`` under the
    lookup scalar ``k`` for chunks of precomputed ``H(y)``, one chunk out per chunk in."""
    return psi.ordered_map(executor, group.exponentiate, ((scalar, c) for c in points))


def evaluate(scalar: bytes, blinded: bytes, max_points: int) -> bytes:
    """The bureau's side: ``P^k`` for every blinded point, each checked to be a group element
    (libsodium's decoding) and the count within ``max_points``."""
    count = len(blinded) // POINT_BYTES
    if len(blinded) % POINT_BYTES:
        raise ProtocolViolation(f"{len(blinded)} bytes are not a whole number of points")
    if not 0 < count <= max_points:
        raise ProtocolViolation(f"{count} points in one call; send 1 to {max_points:,}")
    return group.exponentiate(scalar, blinded, "blinded point")
