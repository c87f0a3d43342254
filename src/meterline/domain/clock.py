"""The injected clock: nothing computed reads the wall clock directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall clock, for receiving time only (received_at, bounds checks)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    """A pinned clock: `--now` / METERLINE_NOW, and every test."""

    at: datetime

    def now(self) -> datetime:
        return self.at
