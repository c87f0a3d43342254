"""Renderings of documents: JSON (canonical), text and PDF."""
