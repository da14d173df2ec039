import json
import threading
import time

import pyarrow as pa
import pytest

from storage import ArtifactStore, CatalogError, View, query, refresh_catalog, stage_key
from storage.atomic import atomic_dir

VIEWS = [View("items", "ingest", "items", current=True)]


def test_stage_key_is_deterministic_and_sensitive():
    a = stage_key("train", {"lr": 1e-3, "d": 64}, {"ingest": "abc"}, "1")
    assert a == stage_key(
        "train", {"d": 64, "lr": 1e-3}, {"ingest": "abc"}, "1"
    )  # key order irrelevant
    assert a != stage_key("train", {"lr": 3e-4, "d": 64}, {"ingest": "abc"}, "1")
    assert a != stage_key("train", {"lr": 1e-3, "d": 64}, {"ingest": "abd"}, "1")
    assert a != stage_key("train", {"lr": 1e-3, "d": 64}, {"ingest": "abc"}, "2")


def test_write_then_get_roundtrip(tmp_path):
    store = ArtifactStore(tmp_path)
    t = pa.table({"x": [1, 2, 3]})
    art = store.write("ingest", "k1", tables={"items": t}, meta={"dataset": "toy"})
    again = store.get("ingest", "k1")
    assert again is not None and again.table("items").equals(t)
    assert again.manifest["rows"] == {"items": 3}
    assert again.manifest["schema"]["items"] == {"x": "int64"}
    assert again.manifest["dataset"] == "toy"
    assert art.path == again.path


def test_failed_write_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)

    def boom(_tmp):
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        store.write("ingest", "k1", tables={"items": pa.table({"x": [1]})}, files=boom)
    assert store.get("ingest", "k1") is None
    assert list((tmp_path / "ingest").iterdir()) == []  # no temp dir left either


def test_atomic_dir_replaces_existing(tmp_path):
    final = tmp_path / "a"
    with atomic_dir(final) as tmp:
        (tmp / "f").write_text("1")
    with atomic_dir(final) as tmp:
        (tmp / "f").write_text("2")
    assert (final / "f").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def _store_with_runs(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write("ingest", "0" * 16, tables={"items": pa.table({"item_id": [1, 2]})})
    store.write("ingest", "1" * 16, tables={"items": pa.table({"item_id": [1, 2, 3]})})
    store.record(
        "stages",
        "r1__ingest",
        {"run_id": "r1", "stage": "ingest", "key": "1" * 16, "status": "computed", "ended_at": 1.0},
    )
    store.record(
        "stages",
        "r2__ingest",
        {"run_id": "r2", "stage": "ingest", "key": "0" * 16, "status": "skipped", "ended_at": 2.0},
    )
    refresh_catalog(tmp_path, VIEWS)
    return store


def test_catalog_builds_the_views_it_is_given(tmp_path):
    """Which views exist is the caller's data: any stage folder and table names work, and a
    table no view names stays out of the catalog."""
    store = ArtifactStore(tmp_path)
    store.write("alpha", "a" * 16, tables={"things": pa.table({"x": [1, 2]})})
    store.write("beta", "b" * 16, tables={"scores": pa.table({"s": [0.5]})})
    store.write("beta", "c" * 16, tables={"scores": pa.table({"s": [0.25, 0.75]})})
    store.write("gamma", "d" * 16, tables={"hidden": pa.table({"h": [1]})})
    views = [View("things", "alpha", "things", current=True), View("s", "beta", "scores", False)]
    refresh_catalog(tmp_path, views)
    _, rows = query(tmp_path, "select view_name from duckdb_views() where not internal order by 1")
    assert rows == [("s",), ("things",), ("things_all",)]
    assert query(tmp_path, "select count(*) from s")[1] == [(3,)]  # every stored version
    assert query(tmp_path, "select count(*) from things")[1] == [(2,)]


def test_catalog_views_follow_latest_run(tmp_path):
    _store_with_runs(tmp_path)
    _, rows = query(tmp_path, "select count(*) from items")
    assert rows == [(2,)]  # r2 (latest) used the 2-item artifact
    _, rows = query(tmp_path, "select artifact_key, count(*) from items_all group by 1 order by 1")
    assert rows == [("0" * 16, 2), ("1" * 16, 3)]
    cols, rows = query(tmp_path, "select run_id, status from stages order by run_id")
    assert cols == ["run_id", "status"] and rows == [("r1", "computed"), ("r2", "skipped")]


@pytest.mark.parametrize(
    "sql",
    [
        "insert into items values (9)",
        "create table t as select 1",
        "copy (select 1) to 'out.csv'",
        "drop view items",
        "attach 'other.duckdb'",
        "select 1; delete from items",
    ],
)
def test_writes_are_refused(tmp_path, sql):
    _store_with_runs(tmp_path)
    with pytest.raises(CatalogError, match="refused"):
        query(tmp_path, sql)
    assert not (tmp_path / "out.csv").exists()
    _, rows = query(tmp_path, "select count(*) from items")
    assert rows == [(2,)]


def test_unknown_view_lists_available(tmp_path):
    _store_with_runs(tmp_path)
    with pytest.raises(CatalogError, match="available views: .*items"):
        query(tmp_path, "select * from nope")


def test_records_replace_atomically(tmp_path):
    store = ArtifactStore(tmp_path)
    store.record("runs", "r1", {"run_id": "r1", "status": "running"})
    store.record("runs", "r1", {"run_id": "r1", "status": "completed"})
    assert store.records("runs") == [{"run_id": "r1", "status": "completed"}]
    records = store.records("runs")
    assert json.loads(json.dumps(records)) == records  # plain JSON types: a round trip is exact


def test_records_read_while_rewritten_are_whole(tmp_path):
    """A record replaced over and over while another thread reads: every read sees one whole
    version (reopening the path between footer and pages once mixed two versions)."""
    store = ArtifactStore(tmp_path)
    store.record("runs", "r1", {"run_id": "r1", "status": "", "pid": 0})
    stop = threading.Event()

    def rewrite() -> None:
        i = 0
        while not stop.is_set():  # versions of varying size, so stale offsets cannot fit
            store.record("runs", "r1", {"run_id": "r1", "status": "x" * (i % 97), "pid": i})
            i += 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    seen, deadline = set(), time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            (row,) = store.records("runs")
            assert row["status"] == "x" * (row["pid"] % 97)
            seen.add(row["pid"])
    finally:
        stop.set()
        writer.join()
    assert len(seen) > 10  # the reader really did overlap many rewrites


def test_a_finished_key_is_kept_unless_replaced(tmp_path):
    """Keys name content, so a second write of a key keeps the first version; a forced stage
    (``replace``) puts its own in place."""
    store = ArtifactStore(tmp_path)
    first = store.write("ingest", "k1", tables={"items": pa.table({"x": [1]})})
    again = store.write("ingest", "k1", tables={"items": pa.table({"x": [2]})})
    assert again.manifest["created_at"] == first.manifest["created_at"]
    assert store.get("ingest", "k1").table("items").to_pydict() == {"x": [1]}
    store.write("ingest", "k1", tables={"items": pa.table({"x": [3]})}, replace=True)
    assert store.get("ingest", "k1").table("items").to_pydict() == {"x": [3]}
    assert list(store.publish_dir.iterdir()) == []


def test_an_artifact_rewritten_by_other_runs_never_goes_missing(tmp_path):
    """Runs of one config publish the same keys at once while others read them: a reader must
    find the artifact, and its tables, on every try (displacing the old version once made the
    path vanish for a moment, and a run died on a missing manifest)."""
    store = ArtifactStore(tmp_path)
    store.write("ingest", "k1", tables={"items": pa.table({"x": [1]})})
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            store.write("ingest", "k1", tables={"items": pa.table({"x": [1]})})

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads, deadline = 0, time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            art = store.get("ingest", "k1")
            assert art is not None and art.table("items").to_pydict() == {"x": [1]}
            reads += 1
    finally:
        stop.set()
        writer.join()
    assert reads > 10


def test_vectors_roundtrip_through_parquet(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    from storage.vectors import from_column, to_column

    v = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    pq.write_table(pa.table({"vector": to_column(v)}), tmp_path / "v.parquet")
    back = from_column(pq.read_table(tmp_path / "v.parquet")["vector"])
    assert back.dtype == np.float32 and np.array_equal(back, v) and back.flags.writeable


def test_two_writers_of_one_key_both_succeed(tmp_path):
    """Both assemble the artifact, then publish at once (a barrier holds them inside the write):
    the second finds the key taken and keeps the first's version (content keys: equal)."""
    import threading

    store = ArtifactStore(tmp_path)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def write():
        try:
            store.write(
                "ingest",
                "0123456789abcdef",
                tables={"items": pa.table({"x": [1]})},
                files=lambda _tmp: barrier.wait(timeout=30),
            )
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get("ingest", "0123456789abcdef").table("items").to_pydict() == {"x": [1]}
    assert list(store.publish_dir.iterdir()) == []


def test_sweep_touches_only_what_dead_writers_left(tmp_path):
    import os

    from support import dead_pid

    from storage.atomic import work_name
    from storage.process import owner

    store = ArtifactStore(tmp_path)
    dead = dead_pid()
    final = store.path("train", "00000000000000aa")
    live_tmp = store.publish_dir / work_name(final)  # ours: this process runs
    dead_tmp = store.publish_dir / work_name(final).replace(f"-{os.getpid()}-", f"-{dead}-")
    displaced = store.publish_dir / work_name(final, ".old").replace(
        f"-{os.getpid()}-", f"-{dead}-"
    )
    for d in (live_tmp, dead_tmp, displaced):
        d.mkdir(parents=True)
    (displaced / "manifest.json").write_text("{}")
    legacy = tmp_path / "train" / ".tmp-00000000000000bb-x"
    legacy.mkdir(parents=True)
    me = owner()
    store.record("runs", "live", {"run_id": "live", "status": "running", **me})
    store.record(
        "runs",
        "dead",
        {"run_id": "dead", "status": "running", **me, "pid": dead, "pid_start": None},
    )
    store.record(
        "runs",
        "remote",
        {"run_id": "remote", "status": "running", **me, "host": "elsewhere", "pid": dead},
    )
    done = store.sweep(legacy_age=3600)
    assert done == {"removed": 1, "restored": 1, "killed_runs": 1}
    assert live_tmp.is_dir() and not dead_tmp.exists() and (final / "manifest.json").is_file()
    assert legacy.is_dir()  # young: an older version may still be writing it
    assert store.sweep(legacy_age=0)["removed"] == 1 and not legacy.exists()
    status = {r["run_id"]: r["status"] for r in store.records("runs")}
    assert status == {"live": "running", "dead": "killed", "remote": "running"}
