"""The DuckDB catalog: SQL views over the store's Parquet artifacts and records.

``catalog.duckdb`` holds views only (no data), so it is cheap to rebuild after every stage and
always agrees with the files. Data views (``items``, ``interactions``, ``sequences``,
``text_embeddings``, ``item_embeddings``) show the artifact the latest run used; ``<view>_all``
shows every stored version with its ``artifact_key``. Result views (``metrics``, ``rankings``,
``facet_report``) and records (``runs``, ``stages``) span all runs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from storage.store import RECORDS, ArtifactStore

CATALOG = "catalog.duckdb"

# view name -> (stage, parquet file name)
DATA_VIEWS: dict[str, tuple[str, str]] = {
    "items": ("ingest", "items"),
    "interactions": ("ingest", "interactions"),
    "sequences": ("ingest", "sequences"),
    "text_embeddings": ("encode", "text_embeddings"),
    "item_embeddings": ("pretrain", "item_embeddings"),
}
RESULT_VIEWS: dict[str, tuple[str, str]] = {
    "metrics": ("evaluate", "metrics"),
    "rankings": ("evaluate", "rankings"),
    "facet_report": ("pretrain", "facet_report"),
}
RECORD_VIEWS = ("runs", "stages")
READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}


class CatalogError(RuntimeError):
    """A catalog query that cannot run (write statement, unknown view, SQL error)."""


def _sql_str(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _current_keys(store: ArtifactStore) -> dict[str, str]:
    """Stage -> key of the artifact the most recent stage execution used (or the newest)."""
    current: dict[str, tuple[float, str]] = {}
    for rec in store.records("stages"):
        if rec.get("status") in ("computed", "skipped") and store.get(rec["stage"], rec["key"]):
            when = float(rec.get("ended_at") or 0)
            if rec["stage"] not in current or when >= current[rec["stage"]][0]:
                current[rec["stage"]] = (when, rec["key"])
    keys = {stage: key for stage, (_, key) in current.items()}
    for stage, _ in DATA_VIEWS.values():
        if stage not in keys and (arts := store.artifacts(stage)):
            keys[stage] = arts[-1].key
    return keys


def _glob_view(name: str, pattern: Path) -> str:
    key = "regexp_extract(filename, '([0-9a-f]{16})/[^/]+$', 1)"
    return (
        f"CREATE VIEW {name} AS SELECT * EXCLUDE (filename), {key} AS artifact_key "
        f"FROM read_parquet({_sql_str(pattern)}, filename=true, union_by_name=true)"
    )


def view_statements(store: ArtifactStore) -> list[str]:
    """The CREATE VIEW statements for everything currently in the store."""
    stmts: list[str] = []
    current = _current_keys(store)
    for view, (stage, table) in DATA_VIEWS.items():
        if stage in current and (store.path(stage, current[stage]) / f"{table}.parquet").is_file():
            path = store.path(stage, current[stage]) / f"{table}.parquet"
            stmts.append(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_sql_str(path)})")
        if any((store.root / stage).glob(f"*/{table}.parquet")):
            stmts.append(_glob_view(f"{view}_all", store.root / stage / "*" / f"{table}.parquet"))
    for view, (stage, table) in RESULT_VIEWS.items():
        if any((store.root / stage).glob(f"*/{table}.parquet")):
            stmts.append(_glob_view(view, store.root / stage / "*" / f"{table}.parquet"))
    for view in RECORD_VIEWS:
        base = store.root / RECORDS / view
        if any(base.glob("*.parquet")):
            pattern = _sql_str(base / "*.parquet")
            stmts.append(
                f"CREATE VIEW {view} AS SELECT * FROM read_parquet({pattern}, union_by_name=true)"
            )
    return stmts


def refresh_catalog(root: str | Path) -> Path:
    """Rebuild ``catalog.duckdb`` (views only) atomically: build a temp file, then rename."""
    store = ArtifactStore(root)
    final = store.root / CATALOG
    fd, tmp = tempfile.mkstemp(prefix=".tmp-catalog-", suffix=".duckdb", dir=store.root)
    os.close(fd)
    os.unlink(tmp)  # duckdb refuses to open an empty non-database file
    try:
        con = duckdb.connect(tmp)
        try:
            for stmt in view_statements(store):
                con.execute(stmt)
        finally:
            con.close()
        os.replace(tmp, final)
    finally:
        for leftover in (Path(tmp), Path(tmp + ".wal")):
            leftover.unlink(missing_ok=True)
    return final


def query(root: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run read-only SQL against the catalog; any statement that could write is refused."""
    path = Path(root).resolve() / CATALOG
    if not path.is_file():
        refresh_catalog(root)
    con = duckdb.connect(str(path), read_only=True)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise CatalogError(f"SQL parse error: {exc}") from exc
        if not statements:
            raise CatalogError("empty query")
        for stmt in statements:
            kind = stmt.type.name
            if kind not in READ_ONLY_TYPES:
                raise CatalogError(
                    f"refused: {kind} statement; the catalog is read-only "
                    "(only SELECT/SHOW/DESCRIBE/EXPLAIN queries are allowed)"
                )
        try:
            cur = con.execute(sql)
            columns = [d[0] for d in cur.description] if cur.description else []
            rows = cur.fetchall() if cur.description else []
        except duckdb.CatalogException as exc:
            views = [
                r[0]
                for r in con.execute(
                    "SELECT view_name FROM duckdb_views() WHERE NOT internal"
                ).fetchall()
            ]
            raise CatalogError(
                f"{exc}\navailable views: {', '.join(sorted(views)) or '(none yet)'}"
            ) from exc
        except duckdb.Error as exc:
            raise CatalogError(str(exc)) from exc
        return columns, rows
    finally:
        con.close()
