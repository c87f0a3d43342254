"""Composition root: which indexes and services a store gets.

Kept in one place so the CLI, the HTTP API and the tests assemble the same
pipeline.
"""

from __future__ import annotations

from meterline.domain.clock import Clock
from meterline.ingest.service import Ingestor
from meterline.store.database import Store
from meterline.store.meter_catalog import MeterCatalog
from meterline.store.window_index import WindowIndex


def window_index() -> WindowIndex:
    return WindowIndex(MeterCatalog())


def ingestor_for(store: Store, clock: Clock) -> Ingestor:
    return Ingestor(store, clock, window_index())
