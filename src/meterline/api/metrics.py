"""Prometheus metrics on a registry owned by the app (no process-global state,
so two apps in one process, as in tests, never share counters).

Counters are labelled by `endpoint` (native | cloudevents), not by the events'
`source`: sources are chosen by producers, and an unbounded label set would
let any client blow up the metrics store. Rejections also carry their `code`
(a fixed set). Watermark lag and late arrivals are read from the store at
scrape time, so they are true for the whole store, whoever ingested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meterline.ingest.service import IngestReport

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class StoreReadings:
    watermark_lag_seconds: float | None
    late_arrivals: int


def _lag(value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "meterline_watermark_lag_seconds",
        "Receiving clock minus the global event-time watermark.",
        value=value,
    )


def _late(value: int | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "meterline_late_arrivals",
        "Late arrivals recorded in the store (one per late event and meter).",
        value=value,
    )


class StoreGauges(Collector):
    """Gauges read from the store on each scrape; absent while it is unreachable."""

    def __init__(self, read: Callable[[], StoreReadings | None]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:  # lets registration skip a store query
        return [_lag(), _late()]

    def collect(self) -> Iterable[Metric]:
        readings = self._read()
        if readings is None:
            return []
        gauges = [_late(readings.late_arrivals)]
        if readings.watermark_lag_seconds is not None:
            gauges.append(_lag(readings.watermark_lag_seconds))
        return gauges


class Metrics:
    def __init__(self, store_readings: Callable[[], StoreReadings | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if store_readings is not None:
            self.registry.register(StoreGauges(store_readings))
        self.accepted = Counter(
            "meterline_events_accepted",
            "Events stored (given a seq).",
            ["endpoint"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "meterline_events_duplicate",
            "Events already stored with identical content (success, nothing stored).",
            ["endpoint"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "meterline_events_rejected",
            "Events rejected and quarantined, by error code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meterline_ingest_request_seconds",
            "Time to read, validate and durably store one ingest request.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def record(self, endpoint: str, report: IngestReport, seconds: float) -> None:
        self.accepted.labels(endpoint).inc(report.accepted)
        self.duplicates.labels(endpoint).inc(report.duplicates)
        by_code: dict[str, int] = {}
        for reject in report.rejects:
            by_code[reject.code] = by_code.get(reject.code, 0) + 1
        for code, count in by_code.items():
            self.rejected.labels(endpoint, code).inc(count)
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def router(metrics: Metrics) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics (no auth)",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def get_metrics(request: Request) -> Response:
        body = await anyio.to_thread.run_sync(metrics.render)  # the store gauges query the db
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return api
