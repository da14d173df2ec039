"""Artifact store: Parquet artifacts with manifests, run/stage records and the DuckDB catalog.

Knows nothing of models: it stores tables and files under content-derived keys.
"""

from storage.catalog import CatalogError, query, refresh_catalog
from storage.store import Artifact, ArtifactStore, stage_key

__all__ = [
    "Artifact",
    "ArtifactStore",
    "CatalogError",
    "query",
    "refresh_catalog",
    "stage_key",
]
