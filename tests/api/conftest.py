"""Fixtures: a live server on each backend's fresh, migrated store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api.server import Server, start_server

from meterline.store.database import Store


@pytest.fixture
def server(store: Store, tmp_path: Path) -> Iterator[Server]:
    """`meterline serve` with an ingest key and an admin key, on `store`."""
    s = start_server(store.url, tmp_path)
    try:
        yield s
    finally:
        s.stop()
