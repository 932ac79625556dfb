"""Merkle tree hashes and proofs of RFC 9162 (Certificate Transparency 2.0), section 2.1.

Leaves hash as ``SHA-256(0x00 || leaf)``, interior nodes as ``SHA-256(0x01 || left ||
right)``; the left subtree of a tree of ``n`` leaves holds the largest power of two below
``n``. An inclusion proof shows that a leaf is at its index in a tree of a given head; a
consistency proof that a tree of ``m`` leaves is the prefix of a tree of ``n``: neither a
leaf changed nor one removed or reordered. Pure functions on bytes: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not verify (or is malformed)."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n`` > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves whose hashes are given (in O(n) hashes, bottom-up)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return CompactRange(leaf_hashes).root()


class CompactRange:
    """The roots of the perfect subtrees that make up a tree of ``size`` leaves, largest
    first: enough to append a leaf or compute the root in O(log n)."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.size = 0
        self._peaks: list[bytes] = []
        for h in leaf_hashes:
            self.append(h)

    def append(self, h: bytes) -> None:
        # merge equal-sized neighbours, as a binary counter carries
        size = self.size
        while size & 1:
            h = node_hash(self._peaks.pop(), h)
            size >>= 1
        self._peaks.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        r = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            r = node_hash(peak, r)
        return r


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 2.1.3.1."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ProofError(f"leaf {index} is not in a tree of {n} leaves")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaf_hashes[:k]), root(leaf_hashes[k:])]
    return [*inclusion_proof(index - k, leaf_hashes[k:]), root(leaf_hashes[:k])]


def consistency_proof(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1: the tree of the first ``m`` leaves is a prefix."""
    n = len(leaf_hashes)
    if not 0 < m <= n:
        raise ProofError(f"no consistency proof from {m} to {n} leaves")
    return _subproof(m, leaf_hashes, True)


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def _check_hashes(*hashes: bytes) -> None:
    if any(len(h) != HASH_BYTES for h in hashes):
        raise ProofError(f"a hash in the proof is not {HASH_BYTES} bytes")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """RFC 9162 2.1.3.2; raises ProofError unless ``leaf`` is at ``index`` under the root."""
    _check_hashes(leaf, expected_root, *proof)
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    if r != expected_root:
        raise ProofError(f"leaf {index} is not in the tree of {size} leaves with that root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2; raises ProofError unless the tree (size1, root1) is a prefix of the
    tree (size2, root2)."""
    _check_hashes(root1, root2, *proof)
    if not 0 <= size1 <= size2:
        raise ProofError(f"a tree of {size2} leaves cannot extend one of {size1}")
    if size1 == size2:
        if proof or root1 != root2:
            raise ProofError(f"two different roots for the same tree size {size1}")
        return
    if size1 == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is itself a node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != root1 or sr != root2:
        raise ProofError(
            f"the tree of {size1} leaves is not a prefix of the tree of {size2} leaves"
        )
