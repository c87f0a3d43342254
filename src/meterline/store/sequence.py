"""The knowledge sequence: one counter for every fact, no holes (DESIGN §2).

A writer locks the counter row, takes its seq values, and keeps the lock until
commit. The next writer can only read the counter after that commit, so seq
values become visible in order: a reader who sees seq K sees every seq < K.
On SQLite the database write lock (BEGIN IMMEDIATE) gives the same guarantee.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

# conn.info key: this transaction holds the counter lock (consumed by Store.write's seal).
LOCKED = "meterline_seq_locked"


def lock(conn: Connection) -> int:
    """Lock the counter for this transaction and return the last seq handed out.

    The transaction then ends by growing the Merkle log (store/merkle.py seal,
    run by Store.write while the lock is still held)."""
    conn.info[LOCKED] = True
    if conn.dialect.name == "postgresql":
        row = conn.execute(text("SELECT seq FROM knowledge WHERE id = 1 FOR UPDATE")).one()
    else:
        row = conn.execute(text("SELECT seq FROM knowledge WHERE id = 1")).one()
    return int(row[0])


def advance(conn: Connection, new_last: int) -> None:
    conn.execute(text("UPDATE knowledge SET seq = :s WHERE id = 1"), {"s": new_last})


def take(conn: Connection) -> int:
    """Lock the counter and take the next single seq (for one fact)."""
    seq = lock(conn) + 1
    advance(conn, seq)
    return seq


def current(conn: Connection) -> int:
    """The store as known now: the greatest committed seq visible to this reader."""
    return int(conn.execute(text("SELECT seq FROM knowledge WHERE id = 1")).scalar_one())
