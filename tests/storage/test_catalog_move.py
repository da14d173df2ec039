"""A copied or moved artifact folder answers SQL from its own files, not the original's.

The catalog's views are relative to its ``catalog_root()`` macro; ``query`` points a catalog
built for another folder at the one it is in. Real DuckDB files, real Parquet artifacts.
"""

import shutil

import duckdb
import pyarrow as pa
import pytest

from storage import ArtifactStore, CatalogError, View, query, refresh_catalog

KEY = "1" * 16
VIEWS = [View("items", "ingest", "items", current=True)]


def _store(root, titles: list[str]) -> ArtifactStore:
    st = ArtifactStore(root)
    items = pa.table({"item_id": list(range(1, len(titles) + 1)), "title": titles})
    st.write("ingest", KEY, tables={"items": items}, replace=True)  # one key, new content
    st.record("stages", "r1__ingest", {"run_id": "r1", "stage": "ingest", "key": KEY})
    st.record("runs", "r1", {"run_id": "r1", "status": "completed"})
    refresh_catalog(root, VIEWS)
    return st


def _answers(root) -> dict[str, list]:
    return {
        "items": query(root, "SELECT title FROM items ORDER BY item_id")[1],
        "items_all": query(root, "SELECT artifact_key, count(*) FROM items_all GROUP BY 1")[1],
        "runs": query(root, "SELECT run_id, status FROM runs")[1],
        "stages": query(root, "SELECT stage, key FROM stages")[1],
    }


def test_views_name_no_absolute_path(tmp_path):
    root = tmp_path / "A"
    _store(root, ["a", "b"])
    con = duckdb.connect(str(root / "catalog.duckdb"), read_only=True)
    try:
        sql = "SELECT sql FROM duckdb_views() WHERE NOT internal"
        sqls = [r[0] for r in con.execute(sql).fetchall()]
    finally:
        con.close()
    assert len(sqls) == 4  # items, items_all, runs, stages
    assert all(str(tmp_path) not in sql and "catalog_root()" in sql for sql in sqls), sqls


@pytest.mark.parametrize("how", ["move", "copy-then-delete"])
def test_moved_folder_answers_from_its_new_place(tmp_path, how):
    a, b = tmp_path / "A", tmp_path / "B"
    _store(a, ["a", "b", "c"])
    expected = _answers(a)
    assert expected["items"] == [("a",), ("b",), ("c",)]
    if how == "move":
        a.rename(b)
    else:
        shutil.copytree(a, b)
        shutil.rmtree(a)
    assert _answers(b) == expected
    # the rewritten catalog also works for a plain duckdb client, with A gone
    con = duckdb.connect(str(b / "catalog.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM items").fetchall() == [(3,)]
        assert con.execute("SELECT catalog_root()").fetchall() == [(str(b.resolve()),)]
    finally:
        con.close()


def test_copy_reads_its_own_files_while_the_original_exists(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    _store(a, ["a", "b"])
    shutil.copytree(a, b)
    _store(a, ["changed", "in", "A"])  # the original's artifact differs from the copy's now
    assert query(b, "SELECT title FROM items ORDER BY item_id")[1] == [("a",), ("b",)]
    assert query(a, "SELECT title FROM items ORDER BY item_id")[1] == [
        ("changed",),
        ("in",),
        ("A",),
    ]


def test_a_moved_folder_still_cannot_read_outside_itself(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    _store(a, ["a"])
    shutil.copytree(a, b)  # A stays: the old root must not become readable from B
    query(b, "SELECT 1")  # relocates B's catalog
    for sql in (
        f"SELECT * FROM read_parquet('{a}/ingest/{KEY}/items.parquet')",
        f"SELECT * FROM read_parquet('{b}/../A/ingest/{KEY}/items.parquet')",
    ):
        with pytest.raises(CatalogError, match="refused"):
            query(b, sql)


def test_catalog_from_before_the_macro_is_rebuilt_from_the_views(tmp_path):
    root = tmp_path / "A"
    _store(root, ["a", "b"])
    path = root / "catalog.duckdb"
    path.unlink()
    con = duckdb.connect(str(path))  # an old-style catalog: absolute paths, no macro
    con.execute("CREATE VIEW items AS SELECT 'stale' AS title FROM range(1)")
    con.close()
    assert query(root, "SELECT count(*) FROM items")[1] == [(1,)]  # no views given: kept as is
    assert query(root, "SELECT count(*) FROM items", VIEWS)[1] == [(2,)]  # rebuilt
