"""Signed tree heads and receipts of the bureau's audit log, and what a holder of them can
check against a copy of the log (the bureau's own, or an export given to a bank or a
regulator). Pure logic over bytes and dicts: no files, no gRPC.

A signed head commits the bureau to the first ``size`` records of its log (the Merkle root
of their leaf hashes, RFC 9162) under its Ed25519 audit key. A receipt is one record's
index and leaf hash with a head signed over it (by the commit that wrote it, which may
have written other records too). Whoever holds a
receipt or a head can later show that the log still holds exactly those records in that
order: a record deleted, rewritten or moved changes the root, even if every hash after it
was recomputed, and the bureau cannot sign a second root for the same size without that
second head being evidence against it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from . import merkle
from .errors import InputDataError

_CONTEXT = b"xinrong audit tree head v1\n"  # no other signature of this key can pass as a head
MAX_RECEIPT_BYTES = 4096  # a receipt is ~500 bytes; anything bigger is not one


def log_id(public_key: bytes) -> str:
    """The log's name: the SHA-256 of its raw 32-byte public key (hex)."""
    return hashlib.sha256(public_key).hexdigest()


RECORD_FIELDS = ("time", "bank_id", "event", "outcome", "details")  # a leaf's content, in order


def leaf_bytes(time: str, bank_id: str, event: str, outcome: str, details: str) -> bytes:
    """A record's leaf: its content, canonically serialised (its place is its index)."""
    return json.dumps(
        [time, bank_id, event, outcome, details], ensure_ascii=False, separators=(",", ":")
    ).encode()


@dataclass(frozen=True)
class SignedHead:
    log_id: str
    size: int
    root: str  # hex
    time: str
    signature: str  # hex, Ed25519 over _CONTEXT + the other fields

    def message(self) -> bytes:
        body = {"log_id": self.log_id, "size": self.size, "root": self.root, "time": self.time}
        return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "size": self.size,
            "root": self.root,
            "time": self.time,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SignedHead:
        try:
            head = cls(
                str(data["log_id"]),
                int(data["size"]),
                str(data["root"]),
                str(data["time"]),
                str(data["signature"]),
            )
            bytes.fromhex(head.root)
            bytes.fromhex(head.signature)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputDataError(f"not a signed tree head ({exc})") from None
        # every field of its size: a head is what the bank keeps on disk for months, and a
        # hostile bureau's heads padded to 4 KB (the signature covers whatever it signs)
        # wrote 500 times an honest bureau's receipts
        if head.size < 0 or len(head.root) != 64:
            raise InputDataError("not a signed tree head (bad size or root)")
        if len(head.log_id) != 64 or len(head.signature) != 128 or len(head.time) > 40:
            raise InputDataError("not a signed tree head (a field of the wrong size)")
        return head

    def verify(self, public_key: bytes) -> None:
        """Raises InputDataError unless the head is signed by this log's key."""
        if self.log_id != log_id(public_key):
            raise InputDataError(
                f"the head of size {self.size} is from another audit log ({self.log_id[:16]})"
            )
        try:  # libsodium's check: half the time of OpenSSL's, once per online decision
            VerifyKey(public_key).verify(self.message(), bytes.fromhex(self.signature))
        except (BadSignatureError, ValueError, TypeError):
            raise InputDataError(
                f"the head of size {self.size} signed {self.time} has a bad signature"
            ) from None


def sign_head(
    key: Ed25519PrivateKey, public_key: bytes, size: int, root: bytes, time: str
) -> SignedHead:
    unsigned = SignedHead(log_id(public_key), size, root.hex(), time, "")
    return SignedHead(
        unsigned.log_id, size, unsigned.root, time, key.sign(unsigned.message()).hex()
    )


@dataclass(frozen=True)
class Receipt:
    """What the bank is given for one record: its place, its leaf hash, a signed head."""

    index: int  # 0-based leaf index; the record's number is index + 1
    leaf_hash: str
    head: SignedHead
    public_key: str  # hex: checked against the bureau's (receipts verify --bureau-key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "leaf_hash": self.leaf_hash,
            "head": self.head.to_dict(),
            "public_key": self.public_key,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Receipt:
        try:
            receipt = cls(
                int(data["index"]),
                str(data["leaf_hash"]),
                SignedHead.from_dict(data["head"]),
                str(data["public_key"]),
            )
            bytes.fromhex(receipt.leaf_hash)
            bytes.fromhex(receipt.public_key)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputDataError(f"not an audit receipt ({exc})") from None
        if not 0 <= receipt.index < receipt.head.size or len(receipt.leaf_hash) != 64:
            raise InputDataError("not an audit receipt (its record is outside its head)")
        if len(receipt.public_key) != 64:
            raise InputDataError("not an audit receipt (its key is not an Ed25519 key)")
        return receipt

    def verify(self, public_key: bytes | None = None) -> None:
        """The head's signature, by ``public_key`` if given (else the receipt's own)."""
        key = bytes.fromhex(self.public_key)
        if public_key is not None and key != public_key:
            raise InputDataError(
                f"the receipt for record {self.index + 1} is signed by another key than "
                "the bureau's audit key"
            )
        self.head.verify(key)


def _span(first: int, last: int) -> str:
    return f"record {first} was" if first == last else f"records {first}-{last} were"


def check_log(
    leaf_hashes: Sequence[bytes],
    heads: Iterable[SignedHead] = (),
    receipts: Iterable[Receipt] = (),
) -> list[str]:
    """What is wrong with a log of these leaf hashes, given heads and receipts its bureau
    signed (their signatures already checked): one sentence per problem, naming records.

    In one pass over the leaves (O(n log n)), so thousands of records check in well under
    a second."""
    heads = list(heads)
    receipts = list(receipts)
    n = len(leaf_hashes)
    problems: list[str] = []
    where = {h: i for i, h in enumerate(leaf_hashes)}
    for r in receipts:
        expected = bytes.fromhex(r.leaf_hash)
        if r.index >= n:
            continue  # reported with its head, as truncation
        if leaf_hashes[r.index] != expected:
            moved = where.get(expected)
            if moved is not None:
                problems.append(
                    f"record {r.index + 1} was moved to position {moved + 1}: records reordered "
                    "(a receipt holds it at its original place)"
                )
            else:
                problems.append(
                    f"record {r.index + 1} was rewritten or removed: it no longer matches the "
                    "receipt the bank holds for it"
                )
    all_heads = sorted({*heads, *(r.head for r in receipts)}, key=lambda h: (h.size, h.root))
    by_size: dict[int, list[SignedHead]] = {}
    for head in all_heads:
        by_size.setdefault(head.size, []).append(head)
    for size, group in by_size.items():
        if len({h.root for h in group}) > 1:
            problems.append(
                f"the bureau signed {len({h.root for h in group})} different logs of {size} "
                "records: a record was changed after a head was given out"
            )
    longest = max((h.size for h in all_heads), default=0)
    if longest > n:
        problems.append(
            f"the log was truncated: it has {n} records, but a head signed "
            f"{max(h.time for h in all_heads if h.size == longest)} covers {longest}: "
            f"{_span(n + 1, longest)} removed"
        )
    tree = merkle.CompactRange()
    good = 0  # the largest signed size that still matches
    first_bad: int | None = None
    for i, h in enumerate(leaf_hashes):
        tree.append(h)
        for head in by_size.get(i + 1, ()):
            if tree.root().hex() == head.root:
                if first_bad is None:
                    good = head.size
            elif first_bad is None:
                first_bad = head.size
    if first_bad is not None:
        problems.append(
            f"{_span(good + 1, first_bad)} rewritten, removed or reordered: the log no longer "
            f"matches the head signed over its first {first_bad} records"
        )
    return problems


def forks(own: Iterable[SignedHead], held: Iterable[SignedHead]) -> list[str]:
    """Sizes for which the bureau's stored heads and heads held by others sign different
    roots: the bureau rewrote its log (and its heads) after giving those out."""
    mine = {h.size: h.root for h in own}
    sizes = sorted({h.size for h in held if h.size in mine and mine[h.size] != h.root})
    return [
        f"the bureau's own head of {size} records differs from the one it gave out: its log "
        "and its heads were rewritten after that head was given out"
        for size in sizes
    ]
