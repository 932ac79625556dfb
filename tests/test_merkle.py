"""RFC 9162 Merkle hashes and proofs against the published vectors of Go's
transparency-dev/merkle (proof/verify_test.go), plus tampered proofs that must fail."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import merkle

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    bytes.fromhex(h)
    for h in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
# (leaf number from 1, tree size, proof)
INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]


def test_roots_of_every_size():
    for size in range(1, 9):
        assert merkle.root(HASHES[:size]) == ROOTS[size - 1]
    assert merkle.root([]).hex().startswith("e3b0c442")


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_vectors(leaf, size, proof):
    proof = [bytes.fromhex(p) for p in proof]
    assert merkle.inclusion_proof(leaf - 1, HASHES[:size]) == proof
    merkle.verify_inclusion(leaf - 1, size, HASHES[leaf - 1], proof, ROOTS[size - 1])
    root = ROOTS[size - 1]
    bad = [
        (leaf, size, HASHES[leaf - 1], proof, root),  # wrong index
        (leaf - 1, size * 2, HASHES[leaf - 1], proof, root),
        (leaf - 1, size, merkle.leaf_hash(b"other"), proof, root),
        (leaf - 1, size, HASHES[leaf - 1], [*proof, root], root),
        (leaf - 1, size, HASHES[leaf - 1], proof[:-1], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        bad.append((leaf - 1, size, HASHES[leaf - 1], flipped, root))
    for args in bad:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_vectors(size1, size2, proof):
    proof = [bytes.fromhex(p) for p in proof]
    assert merkle.consistency_proof(size1, HASHES[:size2]) == proof
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    merkle.verify_consistency(size1, size2, root1, root2, proof)
    bad = [
        (size1 + 1, size2, root1, root2, proof),
        (size1, size2 * 2, root1, root2, proof),
        (size1, size2, root2, root1, proof),
        (size1, size2, root1, root2, []),
        (size1, size2, root1, root2, proof[:-1]),
        (size1, size2, root1, root2, [*proof, root1]),
        (size1, size2, root1, root2, [proof[0], *proof]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        bad.append((size1, size2, root1, root2, flipped))
    for args in bad:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)


def test_every_proof_of_a_larger_tree_verifies():
    hashes = [merkle.leaf_hash(str(i).encode()) for i in range(37)]
    roots = [merkle.root(hashes[:n]) for n in range(len(hashes) + 1)]
    for n in range(1, len(hashes) + 1):
        for i in range(n):
            merkle.verify_inclusion(
                i, n, hashes[i], merkle.inclusion_proof(i, hashes[:n]), roots[n]
            )
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, hashes[:n])
            merkle.verify_consistency(m, n, roots[m], roots[n], proof)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_proofs_verify_and_any_changed_leaf_is_caught(data):
    n = data.draw(st.integers(1, 300))
    m = data.draw(st.integers(1, n))
    i = data.draw(st.integers(0, n - 1))
    hashes = [merkle.leaf_hash(k.to_bytes(4, "big")) for k in range(n)]
    root_m, root_n = merkle.root(hashes[:m]), merkle.root(hashes)
    proof = merkle.consistency_proof(m, hashes)
    merkle.verify_consistency(m, n, root_m, root_n, proof)
    merkle.verify_inclusion(i, n, hashes[i], merkle.inclusion_proof(i, hashes), root_n)
    changed = list(hashes)
    changed[i] = merkle.leaf_hash(b"rewritten")
    assert merkle.root(changed) != root_n
    if i < m:  # a signed head of m leaves no longer extends to the changed log
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(
                m, n, root_m, merkle.root(changed), merkle.consistency_proof(m, changed)
            )
