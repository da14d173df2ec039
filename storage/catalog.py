"""The DuckDB catalog: SQL views over the store's Parquet artifacts and records.

``catalog.duckdb`` holds views only (no data), so it is cheap to rebuild after every stage and
always agrees with the files. Which views exist is the caller's data (a list of ``View``; the
pipeline's stage registry declares them), so nothing here names a stage. A *current* view shows
the artifact the latest run used, and ``<view>_all`` every stored version with its
``artifact_key``; any other view spans every stored artifact, as do the records (``runs``,
``stages``).

Paths in the views are relative to the macro ``catalog_root()``, the one place the catalog
names its folder, so a copied or moved artifact folder needs only that macro rewritten
(``relocate_catalog``); ``query`` does it when the catalog was built for another folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from storage.store import RECORDS, ArtifactStore

CATALOG = "catalog.duckdb"

KEY_GLOB = "[0-9a-f]*"  # artifact folders only: never a dot-folder another version left behind

RECORD_VIEWS = ("runs", "stages", "sweeps")  # sweeps: one row per trial (studies.sweep)


@dataclass(frozen=True)
class View:
    """A catalog view over one Parquet table of a stage's artifacts (``<stage>/<key>/<table>``).

    ``current``: the artifact the latest stage execution used (or the newest), plus
    ``<name>_all`` over every version; otherwise one view over every stored version.
    """

    name: str
    stage: str
    table: str
    current: bool


class CatalogError(RuntimeError):
    """A catalog query that cannot run (write statement, unknown view, SQL error)."""


ROOT_MACRO = "catalog_root"


def _sql_str(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _under_root(path: Path, root: Path) -> str:
    """``path`` as SQL relative to the catalog's root (``catalog_root() || '/stage/…'``), so
    the view reads wherever the folder now is."""
    return f"({ROOT_MACRO}() || {_sql_str('/' + path.relative_to(root).as_posix())})"


def _root_macro(root: Path) -> str:
    return f"CREATE OR REPLACE MACRO {ROOT_MACRO}() AS {_sql_str(root)}"


def _current_keys(store: ArtifactStore, stages: Iterable[str]) -> dict[str, str]:
    """Stage -> key of the artifact the most recent stage execution used (or the newest of
    ``stages`` that no execution record names)."""
    current: dict[str, tuple[float, str]] = {}
    for rec in store.records("stages"):
        if rec.get("status") in ("computed", "skipped") and store.get(rec["stage"], rec["key"]):
            when = float(rec.get("ended_at") or 0)
            if rec["stage"] not in current or when >= current[rec["stage"]][0]:
                current[rec["stage"]] = (when, rec["key"])
    keys = {stage: key for stage, (_, key) in current.items()}
    for stage in stages:
        if stage not in keys and (arts := store.artifacts(stage)):
            keys[stage] = arts[-1].key
    return keys


def _glob_view(name: str, pattern: Path, root: Path) -> str:
    key = "regexp_extract(filename, '([0-9a-f]{16})/[^/]+$', 1)"
    return (
        f"CREATE VIEW {name} AS SELECT * EXCLUDE (filename), {key} AS artifact_key "
        f"FROM read_parquet({_under_root(pattern, root)}, filename=true, union_by_name=true)"
    )


def view_statements(store: ArtifactStore, views: Sequence[View]) -> list[str]:
    """The root macro, then the CREATE VIEW statements for ``views`` (those with a table in the
    store) and the records."""
    root = store.root
    stmts: list[str] = [_root_macro(root)]
    current = _current_keys(store, dict.fromkeys(v.stage for v in views if v.current))
    for view in views:
        stage, file = view.stage, f"{view.table}.parquet"
        if view.current and stage in current:
            path = store.path(stage, current[stage]) / file
            if path.is_file():
                stmts.append(
                    f"CREATE VIEW {view.name} AS SELECT * "
                    f"FROM read_parquet({_under_root(path, root)})"
                )
        if any((root / stage).glob(f"{KEY_GLOB}/{file}")):
            name = f"{view.name}_all" if view.current else view.name
            stmts.append(_glob_view(name, root / stage / KEY_GLOB / file, root))
    for view in RECORD_VIEWS:
        base = root / RECORDS / view
        if any(base.glob("*.parquet")):
            pattern = _under_root(base / "*.parquet", root)
            stmts.append(
                f"CREATE VIEW {view} AS SELECT * FROM read_parquet({pattern}, union_by_name=true)"
            )
    return stmts


def _replace_catalog(root: Path, statements: Sequence[str], start: Path | None = None) -> Path:
    """Run ``statements`` on a temporary database (a copy of ``start``, or empty) beside the
    catalog, then rename it over ``catalog.duckdb``: readers see the old catalog or the new."""
    final = root / CATALOG
    fd, tmp = tempfile.mkstemp(prefix=".tmp-catalog-", suffix=".duckdb", dir=root)
    os.close(fd)
    try:
        if start is None:
            os.unlink(tmp)  # duckdb refuses to open an empty non-database file
        else:
            shutil.copyfile(start, tmp)
        con = duckdb.connect(tmp)
        try:
            for stmt in statements:
                con.execute(stmt)
        finally:
            con.close()
        os.replace(tmp, final)
    finally:
        for leftover in (Path(tmp), Path(tmp + ".wal")):
            leftover.unlink(missing_ok=True)
    return final


def refresh_catalog(root: str | Path, views: Sequence[View]) -> Path:
    """Rebuild ``catalog.duckdb`` (``views`` and the records) from the store, atomically."""
    store = ArtifactStore(root)
    return _replace_catalog(store.root, view_statements(store, views))


def relocate_catalog(root: str | Path) -> Path:
    """Point a copied or moved catalog at the folder it is now in (its views are relative to
    ``catalog_root()``, so only that macro changes); atomic like ``refresh_catalog``."""
    root = Path(root).resolve()
    return _replace_catalog(root, [_root_macro(root)], start=root / CATALOG)


def catalog_root(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The folder the open catalog was built for (None: a catalog from before the macro)."""
    try:
        (value,) = con.execute(f"SELECT {ROOT_MACRO}()").fetchone()
    except duckdb.Error:
        return None
    return Path(value)


def _one_line(exc: BaseException) -> str:
    """The first line of a duckdb message, minus its ``Xxx Error:`` prefix."""
    lines = str(exc).strip().splitlines()
    return re.sub(r"^[A-Z][A-Za-z ]* Error: ", "", lines[0]) if lines else type(exc).__name__


def _connect(path: Path, root: Path) -> duckdb.DuckDBPyConnection:
    """Open the catalog read-only, sandboxed to ``root``, with the configuration locked.

    ``allowed_directories`` cannot be passed at connect time in DuckDB 2.0 ("cannot change
    allowed_directories before the database is started"), and cannot be changed once external
    access is off, so the order is: connect, allow the root, disable external access, lock. No
    user SQL has run on the connection before the lock, so a later SET/RESET cannot undo it.
    """
    config = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "python_enable_replacements": False,  # no scans of Python variables by name
    }
    try:
        con = duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise CatalogError(
                f"another process holds the catalog {path} (lock conflict); retry when it is done"
            ) from exc
        raise CatalogError(f"cannot open the catalog {path}: {_one_line(exc)}") from exc
    except duckdb.ConnectionException as exc:
        raise CatalogError(
            f"the catalog {path} is already open in this process with other settings; "
            "close that connection and retry"
        ) from exc
    except duckdb.Error as exc:
        raise CatalogError(f"cannot open the catalog {path}: {_one_line(exc)}") from exc
    try:
        if not con.execute("SELECT current_setting('lock_configuration')").fetchone()[0]:
            con.execute(f"SET allowed_directories = [{_sql_str(str(root) + os.sep)}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        # Settings are per database instance (shared by connections to the same file in this
        # process), so check what is in force rather than trusting the SETs above.
        (external, locked, autoload, autoinstall, allowed) = con.execute(
            "SELECT current_setting('enable_external_access'), "
            "current_setting('lock_configuration'), "
            "current_setting('autoload_known_extensions'), "
            "current_setting('autoinstall_known_extensions'), "
            "current_setting('allowed_directories')"
        ).fetchone()
        root_dir = str(root) + os.sep
        # duckdb adds its own temp directory (``catalog.duckdb.tmp/``, inside the root)
        if external or not locked or autoload or autoinstall:
            raise CatalogError("could not lock down the catalog connection; refusing to query")
        if any(not str(d).startswith(root_dir) for d in allowed):
            raise CatalogError(
                f"the catalog connection allows directories outside {root}: {list(allowed)}"
            )
    except BaseException:
        con.close()
        raise
    return con


def _read_only_sql(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The one read-only statement in ``sql``, rebuilt from what was checked; else CatalogError.

    Allowed: a single SELECT-type statement (SELECT/WITH/FROM/VALUES/SHOW/DESCRIBE/SUMMARIZE),
    or ``EXPLAIN [ANALYZE]`` of one. ``EXPLAIN`` parses as its own statement type whatever it
    wraps (``EXPLAIN ANALYZE COPY ... TO``), so the explained statement is parsed again and must
    itself be a SELECT.
    """
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise CatalogError(f"SQL parse error: {_one_line(exc)}") from exc
    if not statements:
        raise CatalogError("empty query")
    if len(statements) > 1:
        raise CatalogError(
            f"refused: {len(statements)} statements; send exactly one read-only query"
        )
    stmt = statements[0]
    kind = stmt.type.name
    if kind == "SELECT":
        return stmt.query
    if kind != "EXPLAIN":
        raise CatalogError(
            f"refused: {kind} statement; the catalog is read-only "
            "(only SELECT/SHOW/DESCRIBE/SUMMARIZE queries and EXPLAIN of them are allowed)"
        )
    raw = stmt.query.encode()  # tokenize() offsets are byte offsets
    tokens = duckdb.tokenize(stmt.query)
    ends = [off for off, _ in tokens[1:]] + [len(raw)]
    # (start, text) of each token that is not a comment
    words = [
        (off, raw[off:end].decode(errors="replace").strip().upper())
        for (off, typ), end in zip(tokens, ends, strict=True)
        if typ != duckdb.token_type.comment
    ]
    if not words or words[0][1] != "EXPLAIN":
        raise CatalogError("refused: could not read the EXPLAIN statement; write EXPLAIN SELECT …")
    i, analyze = 1, False
    if len(words) > 1 and words[1][1] in ("ANALYZE", "ANALYSE"):
        i, analyze = 2, True
    inner_sql = raw[words[i][0] :].decode() if i < len(words) else ""
    try:
        inner = con.extract_statements(inner_sql)
    except duckdb.Error as exc:
        raise CatalogError(
            "refused: EXPLAIN is only allowed for a SELECT (EXPLAIN options are not supported)"
        ) from exc
    if len(inner) != 1 or inner[0].type.name != "SELECT":
        what = inner[0].type.name if len(inner) == 1 else f"{len(inner)} statements"
        raise CatalogError(f"refused: EXPLAIN of {what}; only EXPLAIN [ANALYZE] SELECT is allowed")
    return ("EXPLAIN ANALYZE " if analyze else "EXPLAIN ") + inner[0].query


def _open(root: Path, views: Sequence[View]) -> duckdb.DuckDBPyConnection:
    """The sandboxed connection to ``root``'s catalog, built from ``views`` when missing and
    pointed at ``root`` first when it was built for another folder (a copy or a move)."""
    path = root / CATALOG
    if not path.is_file():
        refresh_catalog(root, views)
    con = _connect(path, root)
    built_for = catalog_root(con)
    if built_for == root or (built_for is None and not views):
        return con  # current, or an old catalog with nothing to rebuild it from
    con.close()
    try:
        if built_for is None:
            refresh_catalog(root, views)
        else:
            relocate_catalog(root)
    except (OSError, duckdb.Error) as exc:
        raise CatalogError(
            f"the catalog {path} was built for {built_for or 'another folder'} and cannot be "
            f"rewritten here ({_one_line(exc)}); copy the folder somewhere writable"
        ) from exc
    return _connect(path, root)


def query(
    root: str | Path, sql: str, views: Sequence[View] = ()
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query against the catalog (built from ``views`` if there is none yet).

    The connection is read-only and sandboxed: only files under the artifact root can be read
    (``enable_external_access=false`` + ``allowed_directories``), no extension is installed or
    loaded, and the configuration is locked. On top of that, only a single SELECT-type statement
    (or EXPLAIN of one) is accepted, since COPY … TO a path under the root would otherwise write.
    """
    root = Path(root).resolve()
    con = _open(root, views)
    try:
        checked = _read_only_sql(con, sql)
        try:
            cur = con.execute(checked)
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
        except duckdb.PermissionException as exc:
            raise CatalogError(
                f"refused: {_one_line(exc)} (only files under the artifact root {root} can be read)"
            ) from exc
        except duckdb.Error as exc:
            raise CatalogError(str(exc)) from exc
        return columns, rows
    finally:
        con.close()
