"""Composition root: which hooks and services a store gets.

Kept in one place so the CLI, the HTTP API and the tests assemble the same
pipeline.
"""

from __future__ import annotations

from meterline.domain.clock import Clock
from meterline.ingest.service import Ingestor
from meterline.store.database import Store


def ingestor_for(store: Store, clock: Clock) -> Ingestor:
    return Ingestor(store, clock)
