"""Reconcile checkpoints (DESIGN §9): what a clean run covered, chained.

A clean `reconcile` records the seq it covered, how many facts the log held up
to it, the tree root at that size, its report's hash and `state` (what the next
incremental run resumes from: last batch id, document counters, chain tip).
Each checkpoint's hash covers the previous one's, so the history of clean runs
cannot be edited without breaking the chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.canonical import content_hash

GENESIS = "0" * 64


@dataclass(frozen=True)
class Checkpoint:
    id: int
    seq: int
    fact_count: int
    root: str
    mode: str
    report_hash: str
    previous_hash: str
    checkpoint_hash: str
    state: dict[str, Any]

    def expected_hash(self) -> str:
        return chain_hash(
            self.seq,
            self.fact_count,
            self.root,
            self.mode,
            self.report_hash,
            self.previous_hash,
            self.state,
        )


def chain_hash(
    seq: int,
    fact_count: int,
    root: str,
    mode: str,
    report_hash: str,
    previous_hash: str,
    state: dict[str, Any],
) -> str:
    return content_hash(
        {
            "seq": seq,
            "fact_count": fact_count,
            "root": root,
            "mode": mode,
            "report_hash": report_hash,
            "previous_hash": previous_hash,
            "state": state,
        }
    )


_COLUMNS = "id, seq, fact_count, root, mode, report_hash, previous_hash, checkpoint_hash, state"


def _row(r: Any) -> Checkpoint:
    try:  # msgspec: the carried state of a large store is a few hundred kB
        state = msgspec.json.decode(str(r[8]))
    except (ValueError, msgspec.DecodeError):
        state = {"unreadable": str(r[8])[:80]}
    return Checkpoint(
        int(r[0]),
        int(r[1]),
        int(r[2]),
        str(r[3]),
        str(r[4]),
        str(r[5]),
        str(r[6]),
        str(r[7]),
        state if isinstance(state, dict) else {"unreadable": str(r[8])[:80]},
    )


def all_checkpoints(conn: Connection) -> list[Checkpoint]:
    return [
        _row(r)
        for r in conn.execute(text(f"SELECT {_COLUMNS} FROM reconcile_checkpoints ORDER BY id"))
    ]


def last(conn: Connection) -> Checkpoint | None:
    r = conn.execute(
        text(f"SELECT {_COLUMNS} FROM reconcile_checkpoints ORDER BY id DESC LIMIT 1")
    ).first()
    return None if r is None else _row(r)


def chain_problems(conn: Connection) -> list[str]:
    """Every checkpoint links to the one before and hashes to its recorded hash."""
    out: list[str] = []
    previous = GENESIS
    for cp in all_checkpoints(conn):
        if cp.previous_hash != previous:
            out.append(f"checkpoint {cp.id}: does not link to the checkpoint before it")
        if cp.expected_hash() != cp.checkpoint_hash:
            out.append(f"checkpoint {cp.id}: its hash does not match its content")
        previous = cp.checkpoint_hash
    return out


def link_problems(conn: Connection, cp: Checkpoint) -> list[str]:
    """`chain_problems` without re-hashing every checkpoint's (large) state: every
    checkpoint links to the one before it (hash columns only), and the last one, whose
    carried state the incremental run resumes from, hashes to its content."""
    out: list[str] = []
    previous = GENESIS
    for i, prev, own in conn.execute(
        text("SELECT id, previous_hash, checkpoint_hash FROM reconcile_checkpoints ORDER BY id")
    ):
        if str(prev) != previous:
            out.append(f"checkpoint {i}: does not link to the checkpoint before it")
        previous = str(own)
    if cp.expected_hash() != cp.checkpoint_hash:
        out.append(f"checkpoint {cp.id}: its hash does not match its content")
    return out


def _last_hash(conn: Connection) -> str:
    row = conn.execute(
        text("SELECT checkpoint_hash FROM reconcile_checkpoints ORDER BY id DESC LIMIT 1")
    ).first()
    return GENESIS if row is None else str(row[0])


def record(
    conn: Connection,
    seq: int,
    fact_count: int,
    root: str,
    mode: str,
    report_hash: str,
    state: dict[str, Any],
) -> Checkpoint:
    previous = _last_hash(conn)
    h = chain_hash(seq, fact_count, root, mode, report_hash, previous, state)
    conn.execute(
        text(
            "INSERT INTO reconcile_checkpoints (seq, fact_count, root, mode, report_hash, "
            "previous_hash, checkpoint_hash, state) VALUES (:q, :n, :r, :m, :rh, :p, :h, :s)"
        ),
        {
            "q": seq,
            "n": fact_count,
            "r": root,
            "m": mode,
            "rh": report_hash,
            "p": previous,
            "h": h,
            "s": json.dumps(state, sort_keys=True),
        },
    )
    row = conn.execute(
        text(
            "SELECT id FROM reconcile_checkpoints WHERE checkpoint_hash = :h "
            "ORDER BY id DESC LIMIT 1"
        ),
        {"h": h},
    ).first()
    assert row is not None
    return Checkpoint(int(row[0]), seq, fact_count, root, mode, report_hash, previous, h, state)
