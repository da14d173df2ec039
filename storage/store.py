"""The artifact store: one directory per (stage, key) holding Parquet tables, files and a manifest.

A key is derived from the stage's config, its upstream keys and a code version, so an unchanged
stage finds its artifact and is skipped, and any change upstream recomputes everything below it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import atomic_dir, atomic_write_parquet

MANIFEST = "manifest.json"
RECORDS = "_records"


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) so equal configs hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(
    stage: str, config: Mapping[str, Any], upstream: Mapping[str, str], version: str
) -> str:
    """Content key of a stage execution: its config section, upstream keys and code version."""
    payload = canonical_json({"stage": stage, "config": config, "upstream": upstream, "v": version})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    """A finished artifact on disk; its manifest says what produced it."""

    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]

    def table(self, name: str) -> pa.Table:
        return pq.read_table(self.path / f"{name}.parquet")

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def rows(self) -> dict[str, int]:
        return self.manifest.get("rows", {})


class ArtifactStore:
    """Parquet artifacts under ``root/<stage>/<key>/`` plus run and stage records."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, key: str) -> Artifact | None:
        """The finished artifact for (stage, key), or None (a half-written one never counts)."""
        path = self.path(stage, key)
        manifest = path / MANIFEST
        if not manifest.is_file():
            return None
        return Artifact(stage, key, path, json.loads(manifest.read_text()))

    def write(
        self,
        stage: str,
        key: str,
        *,
        tables: Mapping[str, pa.Table] | None = None,
        files: Callable[[Path], None] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Write an artifact atomically: tables as Parquet, ``files(tmpdir)`` for anything else.

        The manifest records row counts, schemas and write time next to ``meta`` (config,
        upstream keys, timings...). Nothing is visible at the final path until all is written.
        """
        tables = dict(tables or {})
        start = time.perf_counter()
        with atomic_dir(self.path(stage, key)) as tmp:
            for name, table in tables.items():
                pq.write_table(table, tmp / f"{name}.parquet")
            if files is not None:
                files(tmp)
            manifest = {
                "stage": stage,
                "key": key,
                "created_at": time.time(),
                "rows": {name: t.num_rows for name, t in tables.items()},
                "schema": {
                    name: {f.name: str(f.type) for f in t.schema} for name, t in tables.items()
                },
                "files": sorted(p.name for p in tmp.iterdir()),
                **dict(meta or {}),
            }
            manifest["write_seconds"] = round(time.perf_counter() - start, 4)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        return Artifact(stage, key, self.path(stage, key), manifest)

    def artifacts(self, stage: str) -> list[Artifact]:
        """All finished artifacts of a stage, oldest first."""
        out = []
        base = self.root / stage
        if base.is_dir():
            for child in base.iterdir():
                if not child.name.startswith(".") and (art := self.get(stage, child.name)):
                    out.append(art)
        return sorted(out, key=lambda a: a.manifest.get("created_at", 0))

    # -- run and stage records (append-only, one small Parquet file per record) -------------
    def record(self, kind: str, name: str, row: Mapping[str, Any]) -> None:
        """Write (or atomically replace) one record row under ``_records/<kind>/<name>.parquet``."""
        atomic_write_parquet(
            pa.Table.from_pylist([dict(row)]), self.root / RECORDS / kind / f"{name}.parquet"
        )

    def records(self, kind: str) -> list[dict[str, Any]]:
        base = self.root / RECORDS / kind
        if not base.is_dir():
            return []
        rows: list[dict[str, Any]] = []
        for path in sorted(base.glob("*.parquet")):
            rows.extend(pq.read_table(path).to_pylist())
        return rows
