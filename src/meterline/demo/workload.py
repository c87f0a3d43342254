"""A deterministic synthetic usage month (seeded: same seed, same bytes).

Customers follow a heavy-tailed size distribution, as real SaaS usage does:
a few large accounts and a long tail. Arrival order is mostly by event time,
with a slice of events delayed (out of order), some re-sent (duplicates) and a
few malformed lines, so ingestion exercises every outcome.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from meterline.domain.timestamps import US_PER_HOUR, US_PER_SECOND, format_us, parse_rfc3339

MODELS = ("small", "large", "vision")
REGIONS = ("eu", "us", "ap")


@dataclass(frozen=True)
class Workload:
    customers: int = 300
    events: int = 1_000_000
    month_start: str = "2024-01-01T00:00:00Z"
    month_end: str = "2024-02-01T00:00:00Z"
    duplicate_ratio: float = 0.01  # of events re-sent later
    delayed_ratio: float = 0.03  # of events arriving out of order
    malformed: int = 12
    seed: int = 20240101
    first_id: int = 0  # event ids are numbered from here (so two files never collide)

    def customer_ids(self) -> list[str]:
        return [f"cust_{i:04d}" for i in range(self.customers)]


def _weights(rng: random.Random, n: int) -> list[float]:
    return [rng.paretovariate(1.2) for _ in range(n)]


def generate(w: Workload) -> Iterator[bytes]:
    """Yield NDJSON lines (without newline) in arrival order."""
    rng = random.Random(w.seed)
    enc = msgspec.json.Encoder()
    start, end = parse_rfc3339(w.month_start), parse_rfc3339(w.month_end)
    span = end - start
    customers = w.customer_ids()
    weights = _weights(rng, len(customers))
    picks = rng.choices(range(len(customers)), weights=weights, k=w.events)
    # Event times sorted: telemetry mostly arrives in order.
    offsets = sorted(
        rng.randrange(span // US_PER_SECOND) * US_PER_SECOND + rng.randrange(1000) * 1000
        for _ in range(w.events)
    )
    delayed: list[tuple[int, bytes]] = []
    resend: list[bytes] = []
    malformed_at = set(rng.sample(range(w.events), min(w.malformed, w.events)))
    for i, (pick, offset) in enumerate(zip(picks, offsets, strict=True)):
        t = start + offset
        kind = rng.random()
        customer = customers[pick]
        if kind < 0.70:
            event = {
                "event_id": f"evt_{w.first_id + i:08d}",
                "customer_id": customer,
                "event_type": "api_call",
                "event_time": format_us(t),
                "properties": {"region": REGIONS[pick % 3]},
                "source": "gateway",
            }
        elif kind < 0.95:
            tokens = int(rng.lognormvariate(6.5, 1.0))
            event = {
                "event_id": f"llm_{w.first_id + i:08d}",
                "customer_id": customer,
                "event_type": "llm_call",
                "event_time": format_us(t),
                "properties": {"tokens": tokens, "model": MODELS[rng.randrange(3)]},
                "source": "inference",
            }
        else:
            gb = f"{rng.uniform(0.1, 50):.3f}"
            event = {
                "event_id": f"sto_{w.first_id + i:08d}",
                "customer_id": customer,
                "event_type": "storage",
                "event_time": format_us(t),
                "properties": {"gb_hours": msgspec.Raw(gb.encode())},
                "source": "storage-agent",
            }
        line = enc.encode(event)
        if i in malformed_at:
            yield line[: len(line) // 2]  # a truncated write from a crashing producer
            continue
        if rng.random() < w.delayed_ratio:
            delayed.append((t + rng.randrange(1, 6) * US_PER_HOUR, line))
        else:
            yield line
        if rng.random() < w.duplicate_ratio:
            resend.append(line)
        # release delayed events whose delay has passed
        if delayed and i % 1000 == 0:
            ready = [d for d in delayed if d[0] <= t]
            delayed = [d for d in delayed if d[0] > t]
            for _, late in ready:
                yield late
        if resend and i % 5000 == 0:
            yield from resend
            resend.clear()
    for _, late in delayed:
        yield late
    yield from resend


def write(w: Workload, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("wb") as f:
        for line in generate(w):
            f.write(line)
            f.write(b"\n")
            n += 1
    return n
