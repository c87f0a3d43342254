"""The HTTP API (`meterline serve`): ingestion endpoints, probes and metrics."""

from meterline.api.app import create_app

__all__ = ["create_app"]
