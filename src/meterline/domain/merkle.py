"""The log as a Merkle tree (DESIGN §2), exactly as RFC 6962 §2.1 defines it.

Leaves are the facts in seq order: leaf i (0-based) is the fact with seq i + 1.
    leaf hash = SHA-256(0x00 || fact content hash (32 bytes))
    node hash = SHA-256(0x01 || left || right)
The root of n leaves (MTH) splits at the largest power of two below n, so every
tree is a left-to-right sequence of perfect subtrees, one per set bit of n. A
perfect subtree is named by (level, index): it covers leaves
[index * 2^level, (index + 1) * 2^level). Storing those nodes once, as the log
grows, is what makes the root at any size cost O(log n) lookups.

Pure functions only; the store supplies node hashes through `NodeSource`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, index) -> hash of that perfect, aligned subtree.
NodeId = tuple[int, int]
NodeSource = Callable[[Sequence[NodeId]], dict[NodeId, bytes]]


def leaf_hash(content_hash: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + content_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes (already leaf-hashed)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    # Pairwise fold; an odd last node is carried up unchanged, which is the
    # same tree as MTH's split at the largest power of two.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def perfect_ranges(lo: int, hi: int) -> list[NodeId]:
    """The aligned perfect subtrees that tile leaves [lo, hi), left to right, as
    MTH of D[lo:hi] decomposes them (lo must be a multiple of the first size)."""
    out: list[NodeId] = []
    while lo < hi:
        n = hi - lo
        level = n.bit_length() - 1
        # Alignment: lo is a multiple of 2^level whenever [lo, hi) is a subtree
        # range of MTH (its left edge sits on a split point).
        while lo % (1 << level):
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def fold(parts: Sequence[bytes]) -> bytes:
    """Root of consecutive perfect subtrees (largest first): fold from the right."""
    acc = parts[-1]
    for h in reversed(parts[:-1]):
        acc = node_hash(h, acc)
    return acc


def root_at(size: int, nodes: NodeSource) -> bytes:
    """The tree head's root at `size` from stored perfect-subtree nodes."""
    if size == 0:
        return EMPTY_ROOT
    ids = perfect_ranges(0, size)
    got = nodes(ids)
    return fold([got[i] for i in ids])


def _range_ids(lo: int, hi: int) -> list[NodeId]:
    return perfect_ranges(lo, hi)


def _path_ranges(m: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """RFC 6962 PATH(m, D[lo:hi]) as the leaf ranges of its sibling subtrees,
    nearest the leaf first."""
    out: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if m - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def audit_path(index: int, size: int, nodes: NodeSource) -> list[bytes]:
    """The inclusion proof of leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    ranges = _path_ranges(index, 0, size)
    wanted = {r: _range_ids(*r) for r in ranges}
    got = nodes(sorted({i for ids in wanted.values() for i in ids}))
    return [fold([got[i] for i in wanted[r]]) for r in ranges]


def root_from_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root an audit path implies (RFC 9162 §2.1.3.2), or None if its
    length does not fit (index, size)."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    return root_from_path(index, size, leaf, path) == root


def consistency_proof(old: int, new: int, nodes: NodeSource) -> list[bytes]:
    """RFC 6962 PROOF(old, D[new]): shows the tree of `old` leaves is a prefix."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    ranges: list[tuple[int, int]] = []

    def sub(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                ranges.append((lo, hi))
            return
        k = _split(n)
        if m <= k:
            sub(m, lo, lo + k, whole)
            ranges.append((lo + k, hi))
        else:
            sub(m - k, lo + k, hi, False)
            ranges.append((lo, lo + k))

    sub(old, 0, new, True)
    wanted = {r: _range_ids(*r) for r in ranges}
    got = nodes(sorted({i for ids in wanted.values() for i in ids}))
    return [fold([got[i] for i in wanted[r]]) for r in ranges]


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2."""
    if old == new:
        return not proof and old_root == new_root
    if not 0 < old < new:
        return False
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


@dataclass(frozen=True)
class Growth:
    """Nodes completed by appending leaves to a tree (what the store must write)."""

    nodes: list[tuple[int, int, bytes]]  # (level, index, hash), leaves included


def frontier_ids(size: int) -> list[NodeId]:
    """The perfect subtrees of a tree of `size` leaves, smallest (rightmost) first."""
    return list(reversed(perfect_ranges(0, size)))


def append_leaves(size: int, frontier: dict[NodeId, bytes], leaves: Iterable[bytes]) -> Growth:
    """Extend a tree of `size` leaves, whose frontier nodes are given, by `leaves`.

    Returns every perfect subtree node completed (level 0 = the leaves): a node
    (level, i) is complete once its 2^level leaves exist, and never changes.
    """
    # stack of (level, index, hash) of the current perfect subtrees, left to right
    stack = [(lv, ix, frontier[(lv, ix)]) for lv, ix in perfect_ranges(0, size)]
    out: list[tuple[int, int, bytes]] = []
    n = size
    for leaf in leaves:
        cur = (0, n, leaf)
        out.append(cur)
        while stack and stack[-1][0] == cur[0]:
            lv, ix, h = stack.pop()
            cur = (lv + 1, ix >> 1, node_hash(h, cur[2]))
            out.append(cur)
        stack.append(cur)
        n += 1
    return Growth(out)


def grow_levels(
    size: int, frontier: dict[NodeId, bytes], leaves: Sequence[bytes]
) -> list[tuple[int, list[bytes]]]:
    """The same nodes as `append_leaves`, level by level: for each level (0 = the
    leaves) the index of the first node completed and the hashes of the completed
    nodes, left to right. One hash call per node and no tuple per node, so an
    auditor can compare whole levels with the stored ones."""
    out: list[tuple[int, list[bytes]]] = [(size, list(leaves))]
    end = size + len(leaves)
    level, lo, cur = 0, size, out[0][1]
    sha = hashlib.sha256
    while True:
        nlo, nhi = size >> (level + 1), end >> (level + 1)
        if nhi <= nlo:
            return out
        first = 2 * nlo  # lo or lo - 1: then the left child is an old frontier node
        row = cur if first == lo else [frontier[(level, first)], *cur]
        pairs = 2 * (nhi - nlo)
        new = [
            sha(NODE_PREFIX + a + b).digest()
            for a, b in zip(row[0:pairs:2], row[1:pairs:2], strict=True)
        ]
        out.append((nlo, new))
        level, lo, cur = level + 1, nlo, new


def frontier_after(
    size: int, frontier: dict[NodeId, bytes], levels: list[tuple[int, list[bytes]]]
) -> dict[NodeId, bytes]:
    """The frontier of the grown tree (`grow_levels` from `size`)."""
    end = levels[0][0] + len(levels[0][1])
    out: dict[NodeId, bytes] = {}
    for lv, ix in perfect_ranges(0, end):
        if lv < len(levels) and levels[lv][0] <= ix < levels[lv][0] + len(levels[lv][1]):
            out[(lv, ix)] = levels[lv][1][ix - levels[lv][0]]
        else:
            out[(lv, ix)] = frontier[(lv, ix)]
    return out
