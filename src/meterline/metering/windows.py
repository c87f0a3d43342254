"""UTC-aligned tumbling windows over event time (DESIGN §4).

Instants are integer microseconds since the Unix epoch. The epoch is a UTC
midnight, so flooring to a multiple of the window size aligns 1m, 1h and 1d
windows on UTC minute, hour and day boundaries. Windows are half-open
``[start, end)``: an event exactly at ``end`` belongs to the next window.
"""

from __future__ import annotations

from typing import NamedTuple


class Window(NamedTuple):
    """A half-open window ``[start, end)`` in microseconds."""

    start: int
    end: int


def _check_size(size_us: int) -> None:
    if size_us <= 0:
        raise ValueError(f"window size must be positive, got {size_us}")


def window_start(t_us: int, size_us: int) -> int:
    """Start of the window containing ``t_us`` (floor, so pre-1970 instants work too)."""
    _check_size(size_us)
    return t_us - t_us % size_us


def window_of(t_us: int, size_us: int) -> Window:
    """The window ``[start, start + size)`` containing ``t_us``."""
    start = window_start(t_us, size_us)
    return Window(start, start + size_us)


def is_aligned(t_us: int, size_us: int) -> bool:
    """True if ``t_us`` is a window boundary.

    Window aggregates can only answer a range exactly when both its ends are
    boundaries; otherwise the edge windows must be recomputed from raw events.
    """
    _check_size(size_us)
    return t_us % size_us == 0


def windows_between(from_us: int, to_us: int, size_us: int) -> list[Window]:
    """Every window that intersects ``[from_us, to_us)``, in time order.

    An unaligned ``from_us`` / ``to_us`` makes the first / last window stick
    out of the range (check with ``is_aligned``). Empty when ``from_us >= to_us``.
    """
    _check_size(size_us)
    if from_us >= to_us:
        return []
    first = window_start(from_us, size_us)
    return [Window(s, s + size_us) for s in range(first, to_us, size_us)]
