"""When to try a failed delivery again: exponential backoff with full jitter.

Attempt n (1-based) that failed waits a uniform random time in
[0, min(cap, base * 2**(n-1))] ("full jitter", which spreads a crowd of
retries after an outage instead of synchronising them). A delivery whose first
try is older than the retry window when an attempt fails is given up (failed).
The random source is injected so tests replay a schedule exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

US_PER_SECOND = 1_000_000


class Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    base_us: int = 5 * US_PER_SECOND
    cap_us: int = 6 * 3600 * US_PER_SECOND
    window_us: int = 3 * 86_400 * US_PER_SECOND

    def ceiling(self, attempt: int) -> int:
        """The largest wait after failed attempt `attempt` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        return min(self.cap_us, self.base_us << exponent)

    def delay_us(self, attempt: int, rng: Uniform) -> int:
        return round(rng.uniform(0.0, float(self.ceiling(attempt))))

    def gives_up(self, first_try_us: int, now_us: int) -> bool:
        return now_us - first_try_us >= self.window_us


def default_rng() -> random.Random:
    return random.Random()
