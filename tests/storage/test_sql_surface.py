"""The `fame sql` surface (`storage.query`): read-only, confined to the artifact root, one query.

A real small store (Parquet artifacts, stage records, a catalog) is built under tmp_path; hostile
statements must fail with a one-line CatalogError and leave every file under tmp_path (and the
duckdb extension directory) exactly as it was, while ordinary analytic queries keep working.
"""

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import ArtifactStore, CatalogError, View, query, refresh_catalog

OLD, CUR, EVAL = "0" * 16, "1" * 16, "a" * 16
VIEWS = [
    View("items", "ingest", "items", current=True),
    View("interactions", "ingest", "interactions", current=True),
    View("metrics", "evaluate", "metrics", current=False),
]


def _lit(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    st = ArtifactStore(root)
    st.write("ingest", OLD, tables={"items": pa.table({"item_id": [1, 2], "title": ["a", "b"]})})
    st.write(
        "ingest",
        CUR,
        tables={
            "items": pa.table({"item_id": [1, 2, 3], "title": ["a", "b", "c"]}),
            "interactions": pa.table(
                {
                    "user_id": [1, 1, 1, 2, 2],
                    "item_id": [1, 2, 3, 1, 3],
                    "ts": [10, 20, 30, 15, 25],
                }
            ),
        },
    )
    st.write(
        "evaluate",
        EVAL,
        tables={
            "metrics": pa.table(
                {
                    "split": ["valid", "valid", "test", "test"],
                    "protocol": ["full"] * 4,
                    "metric": ["hr", "ndcg", "hr", "ndcg"],
                    "k": [10, 10, 10, 10],
                    "value": [0.5, 0.25, 0.4, 0.2],
                }
            )
        },
    )
    st.record(
        "stages",
        "r1__ingest",
        {"run_id": "r1", "stage": "ingest", "key": CUR, "status": "computed", "ended_at": 1.0},
    )
    refresh_catalog(root, VIEWS)
    # Parquet files outside the root: elsewhere, and in a sibling whose name extends the root's
    outside = tmp_path / "outside"
    outside.mkdir()
    pq.write_table(pa.table({"secret": [42]}), outside / "evil.parquet")
    sibling = tmp_path / "store-evil"
    sibling.mkdir()
    pq.write_table(pa.table({"secret": [43]}), sibling / "evil.parquet")
    return st


def _snapshot(*dirs: Path) -> dict[str, str]:
    """Every file under ``dirs`` -> sha256 of its bytes."""
    out = {}
    for d in dirs:
        if d.exists():
            for p in sorted(d.rglob("*")):
                if p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                else:
                    out[str(p)] = "<dir>"
    return out


def _hostile(tmp: Path, root: Path) -> dict[str, str]:
    items = root / "ingest" / CUR / "items.parquet"
    return {
        "explain-analyze-copy": f"EXPLAIN ANALYZE COPY (SELECT 1) TO {_lit(tmp / 'x.csv')}",
        "explain-analyze-copy-comments": (
            f"/* a */ EXPLAIN /* b */ ANALYZE /* c */ COPY (SELECT 1) TO {_lit(tmp / 'x.csv')}"
        ),
        "explain-copy": f"EXPLAIN COPY (SELECT 1) TO {_lit(tmp / 'x.csv')}",
        "explain-analyze-overwrite-items": (
            f"EXPLAIN ANALYZE COPY (SELECT 9 AS item_id) TO {_lit(items)} (FORMAT parquet)"
        ),
        "copy-to-tmp": f"COPY (SELECT 1) TO {_lit(tmp / 'x.csv')}",
        "copy-into-root": f"COPY (SELECT 1) TO {_lit(root / 'x.csv')}",
        "copy-overwrite-items": f"COPY (SELECT 9 AS item_id) TO {_lit(items)} (FORMAT parquet)",
        "export-database": f"EXPORT DATABASE {_lit(tmp / 'exported')}",
        "explain-analyze-install": "EXPLAIN ANALYZE INSTALL httpfs",
        "install": "INSTALL httpfs",
        "force-install": "FORCE INSTALL httpfs",
        "load": "LOAD httpfs",
        "attach-tmp": f"ATTACH {_lit(tmp / 'evil.duckdb')}",
        "attach-in-root": f"ATTACH {_lit(root / 'evil.duckdb')}",
        "explain-analyze-attach": f"EXPLAIN ANALYZE ATTACH {_lit(tmp / 'evil.duckdb')}",
        "detach": "DETACH catalog",
        "set-external-access": "SET enable_external_access = true",
        "set-allowed-directories": "SET allowed_directories = ['/']",
        "set-variable": "SET VARIABLE x = 1",
        "reset-external-access": "RESET enable_external_access",
        "reset-lock": "RESET lock_configuration",
        "pragma": "PRAGMA database_list",
        "pragma-profiling": f"PRAGMA profiling_output = {_lit(tmp / 'profile.json')}",
        "read-csv-passwd": "SELECT * FROM read_csv('/etc/passwd')",
        "read-text-passwd": "SELECT * FROM read_text('/etc/passwd')",
        "read-blob-passwd": "SELECT * FROM read_blob('/etc/passwd')",
        "glob-etc": "SELECT * FROM glob('/etc/*')",
        "read-parquet-outside": (
            f"SELECT * FROM read_parquet({_lit(tmp / 'outside' / 'evil.parquet')})"
        ),
        "read-parquet-traversal": (
            f"SELECT * FROM read_parquet({_lit(root / '..' / 'outside' / 'evil.parquet')})"
        ),
        "read-parquet-sibling-prefix": (
            f"SELECT * FROM read_parquet({_lit(tmp / 'store-evil' / 'evil.parquet')})"
        ),
        "replacement-scan-outside": f"SELECT * FROM {_lit(tmp / 'outside' / 'evil.parquet')}",
        "remote-url": "SELECT * FROM 'https://example.com/x.parquet'",
        "create-table": "CREATE TABLE t AS SELECT 1",
        "create-temp-view": "CREATE TEMP VIEW v AS SELECT 1",
        "insert": "INSERT INTO items VALUES (9, 'z')",
        "delete": "DELETE FROM items",
        "drop-view": "DROP VIEW items",
        "two-selects": "SELECT 1; SELECT 2",
        "select-then-copy": f"SELECT 1; COPY (SELECT 1) TO {_lit(tmp / 'x.csv')}",
        "call": "CALL pragma_version()",
        "checkpoint": "CHECKPOINT",
        "use": "USE memory",
        "begin": "BEGIN TRANSACTION",
        "prepare": "PREPARE p AS SELECT 1",
    }


HOSTILE_IDS = list(_hostile(Path("/t"), Path("/t/store")))


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_hostile_statement_is_refused_without_side_effects(tmp_path, store, name):
    sql = _hostile(tmp_path, store.root)[name]
    items = store.root / "ingest" / CUR / "items.parquet"
    items_bytes = items.read_bytes()
    ext_dir = Path.home() / ".duckdb"
    before, ext_before = _snapshot(tmp_path), _snapshot(ext_dir)

    with pytest.raises(CatalogError) as err:
        query(store.root, sql)
    msg = str(err.value)
    assert msg and "\n" not in msg, msg  # one line, fit for the CLI

    assert _snapshot(tmp_path) == before  # nothing created, nothing changed (byte for byte)
    assert items.read_bytes() == items_bytes
    assert _snapshot(ext_dir) == ext_before  # no extension downloaded or installed
    for leftover in ("x.csv", "evil.duckdb", "exported", "profile.json"):
        assert not (tmp_path / leftover).exists()
        assert not (store.root / leftover).exists()
    # and the store still answers, the stored items intact
    assert query(store.root, "SELECT sum(item_id) FROM items") == (["sum(item_id)"], [(6,)])


def test_hostile_list_is_long_enough():
    assert len(HOSTILE_IDS) >= 15


def test_sandbox_settings_are_in_force(store):
    _, rows = query(
        store.root,
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'),"
        " current_setting('autoinstall_known_extensions'),"
        " current_setting('autoload_known_extensions')",
    )
    assert rows == [(False, True, False, False)]


def _legit(root: Path) -> list[tuple[str, str, object]]:
    """(name, sql, expected rows) -- expected None: checked by the test itself."""
    items = root / "ingest" / CUR / "items.parquet"
    return [
        (
            "join-two-views",
            "SELECT i.title, count(*) AS n FROM interactions x JOIN items i USING (item_id) "
            "GROUP BY i.title ORDER BY i.title",
            [("a", 2), ("b", 1), ("c", 2)],
        ),
        (
            "join-all-view-with-records",
            "SELECT a.artifact_key, count(*) FROM items_all a JOIN stages s "
            "ON s.key = a.artifact_key GROUP BY 1",
            [(CUR, 3)],
        ),
        (
            "window",
            "SELECT user_id, item_id, row_number() OVER (PARTITION BY user_id ORDER BY ts) AS pos "
            "FROM interactions ORDER BY user_id, ts",
            [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 1), (2, 3, 2)],
        ),
        (
            "group-by-aggregate",
            "SELECT split, round(avg(value), 4) FROM metrics GROUP BY split ORDER BY split",
            [("test", 0.3), ("valid", 0.375)],
        ),
        (
            "all-view-versions",
            "SELECT artifact_key, count(*) FROM items_all GROUP BY 1 ORDER BY 1",
            [(OLD, 2), (CUR, 3)],
        ),
        (
            "cte-like-the-report",
            f"WITH m AS (SELECT split, metric || coalesce('@' || k, '') AS name, value "
            f"FROM metrics WHERE artifact_key = '{EVAL}') "
            "SELECT name, value FROM m WHERE split = 'test' ORDER BY name",
            [("hr@10", 0.4), ("ndcg@10", 0.2)],
        ),
        (
            "read-parquet-inside-root",
            f"SELECT sum(item_id), count(*) FROM read_parquet({_lit(items)})",
            [(6, 3)],
        ),
        (
            "read-parquet-glob-inside-root",
            f"SELECT count(*) FROM read_parquet({_lit(root / 'ingest' / '*' / 'items.parquet')})",
            [(5,)],
        ),
        ("comment-and-trailing-semicolon", "-- items\nSELECT count(*) FROM items;", [(3,)]),
        ("describe", "DESCRIBE items", None),
        ("explain-select", "EXPLAIN SELECT * FROM items JOIN interactions USING (item_id)", None),
        ("explain-analyze-select", "EXPLAIN ANALYZE SELECT count(*) FROM metrics", None),
        ("explain-after-comment", "/* é */ EXPLAIN SELECT 'é' AS e", None),
    ]


LEGIT_IDS = [name for name, _, _ in _legit(Path("/t"))]


@pytest.mark.parametrize("name", LEGIT_IDS)
def test_legitimate_query_works(store, name):
    _, sql, expected = next(q for q in _legit(store.root) if q[0] == name)
    cols, rows = query(store.root, sql)
    if expected is not None:
        assert rows == expected
    elif name == "describe":
        assert [r[:2] for r in rows] == [("item_id", "BIGINT"), ("title", "VARCHAR")]
    else:  # EXPLAIN [ANALYZE]: a plan comes back
        assert cols == ["explain_key", "explain_value"]
        assert len(rows) == 1 and rows[0][0] in ("physical_plan", "analyzed_plan")
        assert ("analyzed_plan" if "analyze" in name else "physical_plan") == rows[0][0]


def test_lock_held_by_another_process(store):
    catalog = store.root / "catalog.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, duckdb
                con = duckdb.connect({str(catalog)!r})  # read-write: an exclusive file lock
                print("held", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CatalogError, match="another process holds the catalog") as err:
            query(store.root, "SELECT count(*) FROM items")
        assert "retry" in str(err.value) and "\n" not in str(err.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert query(store.root, "SELECT count(*) FROM items")[1] == [(3,)]  # fine once released


def test_write_connection_in_this_process(store):
    import duckdb

    con = duckdb.connect(str(store.root / "catalog.duckdb"))
    try:
        with pytest.raises(CatalogError, match="retry"):
            query(store.root, "SELECT count(*) FROM items")
    finally:
        con.close()
    assert query(store.root, "SELECT count(*) FROM items")[1] == [(3,)]


def test_connection_sandbox_holds_without_the_statement_check(tmp_path, store):
    """Defence in depth: the connection itself refuses, even for SQL that skipped the filter."""
    import duckdb

    from storage.catalog import _connect

    con = _connect(store.root / "catalog.duckdb", store.root)
    try:
        for sql in (
            "SET enable_external_access = true",
            "RESET allowed_directories",
            "SET lock_configuration = false",
            f"COPY (SELECT 1) TO {_lit(tmp_path / 'x.csv')}",
            f"ATTACH {_lit(tmp_path / 'evil.duckdb')}",
            "SELECT * FROM read_text('/etc/passwd')",
            "LOAD httpfs",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        assert con.execute("SELECT count(*) FROM items").fetchall() == [(3,)]
    finally:
        con.close()
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "evil.duckdb").exists()
