"""Artifact store: Parquet artifacts with manifests, run/stage records and the DuckDB catalog.

Knows nothing of models: it stores tables and files under content-derived keys. Names load on
first use, so ``storage.atomic`` (which the trainer needs) does not import duckdb.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    "Artifact": "storage.store",
    "ArtifactStore": "storage.store",
    "stage_key": "storage.store",
    "CatalogError": "storage.catalog",
    "query": "storage.catalog",
    "refresh_catalog": "storage.catalog",
    "View": "storage.catalog",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    return getattr(import_module(_HOME[name]), name)
