"""Scraping a store in tests: the exposition exactly as ``/metrics`` serves it."""

from __future__ import annotations

from exporter.collector import ResultStore
from exporter.exposition import Exposition


def scrape(store: ResultStore) -> str:
    """The store's exposition now (never a reused rendering)."""
    return Exposition(store, reuse_seconds=0).render().decode()
