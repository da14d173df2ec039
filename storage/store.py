"""The artifact store: one directory per (stage, key) holding Parquet tables, files and a manifest.

A key is derived from the stage's config, its upstream keys and a code version, so an unchanged
stage finds its artifact and is skipped, and any change upstream recomputes everything below it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage import process
from storage.atomic import atomic_dir, atomic_write_parquet, crash_point, parse_work_name

MANIFEST = "manifest.json"
RECORDS = "_records"
WORK = "_work"  # per-key scratch (training state) and publication temporaries


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

    @property
    def publish_dir(self) -> Path:
        """Where artifacts are assembled before their rename: outside every stage folder, so
        no listing or catalog glob ever sees a half-written one."""
        return self.root / WORK / "publish"

    def sweep(self, legacy_age: float = 3600.0) -> dict[str, int]:
        """Clean up after killed writers: remove their temporary artifacts, put back an old
        version a kill left displaced, and mark their ``running`` run records ``killed``.

        Only what a dead process on this host owned is touched, so a sweep is safe while other
        runs are writing. Dot-folders of older versions inside stage folders (no owner pid) go
        once they are ``legacy_age`` seconds old. Returns counts of what was done.
        """
        done = {"removed": 0, "restored": 0, "killed_runs": 0}
        if self.publish_dir.is_dir():
            for entry in self.publish_dir.iterdir():
                parsed = parse_work_name(entry.name)
                if parsed is not None and process.alive(parsed[2]):
                    continue
                done[_sweep_entry(self.root, entry, parsed)] += 1
        for stage_dir in self.root.iterdir():
            if not stage_dir.is_dir() or stage_dir.name.startswith(("_", ".")):
                continue
            for entry in stage_dir.glob(".*"):
                if entry.is_dir() and time.time() - entry.stat().st_mtime > legacy_age:
                    shutil.rmtree(entry, ignore_errors=True)
                    done["removed"] += 1
        for rec in self.records("runs"):
            if rec.get("status") == "running" and process.owner_gone(rec):
                gone = f"process {rec['pid']} on {rec['host']} ended before the run finished"
                self.record("runs", rec["run_id"], {**rec, "status": "killed", "error": gone})
                done["killed_runs"] += 1
        return done

    def get(self, stage: str, key: str) -> Artifact | None:
        """The finished artifact for (stage, key), or None (a half-written one never counts)."""
        path = self.path(stage, key)
        manifest = path / MANIFEST
        try:
            text = manifest.read_text()
        except FileNotFoundError:  # absent, or a forced rewrite is swapping it right now
            return None
        return Artifact(stage, key, path, json.loads(text))

    def write(
        self,
        stage: str,
        key: str,
        *,
        tables: Mapping[str, pa.Table] | None = None,
        files: Callable[[Path], None] | None = None,
        meta: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> Artifact:
        """Write an artifact atomically: tables as Parquet, ``files(tmpdir)`` for anything else.

        The manifest records row counts, schemas and write time next to ``meta`` (config,
        upstream keys, timings...). Nothing is visible at the final path until all is written.
        A finished artifact of the same key is kept unless ``replace`` (a forced stage): keys
        name content, and moving it aside would pull it from under the runs reading it.
        """
        tables = dict(tables or {})
        start = time.perf_counter()
        final = self.path(stage, key)
        keep = None if replace else lambda f: (f / MANIFEST).is_file()
        with atomic_dir(final, self.publish_dir, keep=keep) as tmp:
            for name, table in tables.items():
                pq.write_table(table, tmp / f"{name}.parquet")
            if files is not None:
                files(tmp)
            crash_point(f"{stage}:publish:tables")
            # tables a stage streamed into Parquet itself (``files``) are counted from their footer
            shapes = {name: (t.num_rows, t.schema) for name, t in tables.items()}
            for part in sorted(tmp.glob("*.parquet")):
                if part.stem not in shapes:
                    footer = pq.read_metadata(part)
                    shapes[part.stem] = (footer.num_rows, footer.schema.to_arrow_schema())
            manifest = {
                "stage": stage,
                "key": key,
                "created_at": time.time(),
                "rows": {name: n for name, (n, _) in shapes.items()},
                "schema": {
                    name: {f.name: str(f.type) for f in schema}
                    for name, (_, schema) in shapes.items()
                },
                "files": sorted(p.name for p in tmp.iterdir()),
                **dict(meta or {}),
            }
            manifest["write_seconds"] = round(time.perf_counter() - start, 4)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            crash_point(f"{stage}:publish:manifest")
        crash_point(f"{stage}:publish:done")
        return self.get(stage, key) or Artifact(stage, key, final, manifest)

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
        """Every record of a kind. Each file is read through one open handle: a record may be
        replaced while it is read, and reopening its path could pair the old footer with the
        new file's pages."""
        base = self.root / RECORDS / kind
        if not base.is_dir():
            return []
        rows: list[dict[str, Any]] = []
        for path in sorted(base.glob("*.parquet")):
            with open(path, "rb") as fh:
                rows.extend(pq.read_table(fh).to_pylist())
        return rows


def _sweep_entry(root: Path, entry: Path, parsed: tuple[str, str, int] | None) -> str:
    """A dead writer's temporary is removed; its displaced old version (``….old``) goes back to
    ``root/<stage>/<key>`` if nothing took that place, else is removed."""
    if parsed is not None and entry.name.endswith(".old"):
        final = root / parsed[0] / parsed[1]
        if not final.exists():
            os.replace(entry, final)
            return "restored"
    shutil.rmtree(entry, ignore_errors=True)
    return "removed"
