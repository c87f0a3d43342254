"""RFC 6962 Merkle tree: roots, audit paths and consistency proofs, checked against
a direct transcription of the RFC's recursive definitions and the CT test vectors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.domain import merkle

# The Certificate Transparency reference test inputs (RFC 6962 era).
CT_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def mth(data: list[bytes]) -> bytes:
    """RFC 6962 §2.1, transcribed: MTH over raw leaf inputs."""
    n = len(data)
    if n == 0:
        return sha(b"")
    if n == 1:
        return sha(b"\x00" + data[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return sha(b"\x01" + mth(data[:k]) + mth(data[k:]))


def path(m: int, data: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, data[:k]), mth(data[k:])]
    return [*path(m - k, data[k:]), mth(data[:k])]


def subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(data)
    if m == n:
        return [] if b else [mth(data)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, data[:k], b), mth(data[k:])]
    return [*subproof(m - k, data[k:], False), mth(data[:k])]


def store_of(data: list[bytes]) -> merkle.NodeSource:
    growth = merkle.append_leaves(0, {}, [merkle.leaf_hash(d) for d in data])
    table = {(lv, ix): h for lv, ix, h in growth.nodes}

    def nodes(ids: object) -> dict[merkle.NodeId, bytes]:
        return {i: table[i] for i in ids}  # type: ignore[attr-defined]

    return nodes


def test_ct_vectors() -> None:
    data = [bytes.fromhex(h) for h in CT_LEAVES]
    for n in range(1, 9):
        assert mth(data[:n]).hex() == CT_ROOTS[n - 1]
        assert merkle.root_of([merkle.leaf_hash(d) for d in data[:n]]).hex() == CT_ROOTS[n - 1]
        assert merkle.root_at(n, store_of(data)).hex() == CT_ROOTS[n - 1]
    assert merkle.root_of([]) == sha(b"") == merkle.root_at(0, store_of([]))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 16, 17, 31, 33, 100])
def test_every_path_and_consistency_matches_the_rfc(n: int) -> None:
    data = [str(i).encode() for i in range(n)]
    nodes = store_of(data)
    for size in range(1, n + 1):
        root = merkle.root_at(size, nodes)
        assert root == mth(data[:size])
        for m in range(size):
            p = merkle.audit_path(m, size, nodes)
            assert p == path(m, data[:size])
            leaf = merkle.leaf_hash(data[m])
            assert merkle.verify_inclusion(m, size, leaf, p, root)
            assert not merkle.verify_inclusion(m, size, merkle.leaf_hash(b"x"), p, root)
            if p:
                bad = [p[0][:-1] + bytes([p[0][-1] ^ 1]), *p[1:]]
                assert not merkle.verify_inclusion(m, size, leaf, bad, root)
        for old in range(1, size + 1):
            proof = merkle.consistency_proof(old, size, nodes)
            assert proof == subproof(old, data[:size], True)
            old_root = merkle.root_at(old, nodes)
            assert merkle.verify_consistency(old, size, old_root, root, proof)
            if old < size:
                assert not merkle.verify_consistency(old, size, sha(b"no"), root, proof)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_incremental_growth_equals_one_shot(chunks: list[bytes], data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(c) for c in chunks]
    cut = data.draw(st.integers(0, len(leaves)))
    first = merkle.append_leaves(0, {}, leaves[:cut])
    table = {(lv, ix): h for lv, ix, h in first.nodes}
    frontier = {i: table[i] for i in merkle.perfect_ranges(0, cut)}
    second = merkle.append_leaves(cut, frontier, leaves[cut:])
    table.update({(lv, ix): h for lv, ix, h in second.nodes})
    whole = merkle.append_leaves(0, {}, leaves)
    assert table == {(lv, ix): h for lv, ix, h in whole.nodes}
    assert merkle.root_at(len(leaves), lambda ids: {i: table[i] for i in ids}) == mth(chunks)


def test_out_of_range() -> None:
    nodes = store_of([b"a", b"b"])
    with pytest.raises(ValueError):
        merkle.audit_path(2, 2, nodes)
    assert merkle.root_from_path(5, 2, b"", []) is None
