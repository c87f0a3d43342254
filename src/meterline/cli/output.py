"""Terminal output: rich tables on a terminal, plain aligned text when piped.

A table wrapped at 80 columns or drawn with box characters is noise in a pipe
or a log file, so when stdout is not a terminal every table is printed as
plain columns, one row per line, never wrapped, never coloured.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def is_terminal() -> bool:
    return sys.stdout.isatty()


def console() -> Console:
    """A console for stdout: colour on a terminal, plain and unwrapped otherwise."""
    if is_terminal():
        return Console()
    return Console(no_color=True, width=100_000, soft_wrap=True, highlight=False)


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """`1 event`, `2 events`, `1,000 windows` (thousands separated)."""
    word = singular if n == 1 else (plural_form or singular + "s")
    return f"{n:,} {word}"


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
) -> None:
    """Print rows under column headers (rich on a terminal, plain text otherwise)."""
    if is_terminal():
        t = Table(*columns, title=title)
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    widths = [len(c) for c in columns]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    out = sys.stdout
    if title:
        out.write(f"{title}\n")
    out.write(_line(columns, widths))
    for r in rows:
        out.write(_line(r, widths))
    out.flush()


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    parts = [cell.ljust(widths[i]) for i, cell in enumerate(cells)]
    return "  ".join(parts).rstrip() + "\n"
