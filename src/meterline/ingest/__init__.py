"""Ingestion: input formats in, validated batches into the event log."""
