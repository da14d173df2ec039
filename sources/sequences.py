"""From raw interactions to the catalog's ``interactions``, ``sequences`` and ``items`` tables.

One implementation for every format, in DuckDB SQL (vectorised, out of Python): rating filter,
duplicate handling, k-core filtering iterated to a fixed point (the minimum sequence length is
part of the user threshold, so dropping a short user can never break the item core), id remap
and the chronological leave-one-out split of FAME_SPEC §5. Equal timestamps keep file order.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from sources.errors import IngestError, PipelineError
from sources.readers import RawData

# DuckDB's memory limit during ingest (its default is 80% of RAM, which a 20M-interaction sort
# and list aggregation fill before spilling); any DuckDB size string, e.g. "4GB"
MEMORY_ENV, MEMORY_DEFAULT = "FAME_INGEST_MEMORY", "1GB"


@dataclass
class Prepared:
    items: pa.Table
    interactions: pa.Table
    sequences: pa.Table
    stats: dict[str, int]


def _id_order(col: str) -> str:
    """Order source ids numerically when they all are integers, else as strings."""
    return f"TRY_CAST({col} AS BIGINT) NULLS LAST, {col}"


def prepare(
    raw: RawData,
    *,
    user_core: int = 0,
    item_core: int = 0,
    min_seq_len: int = 3,
    dedup: str = "none",
    min_rating: float | None = None,
    consume: bool = False,
) -> Prepared:
    """``consume``: set ``raw.interactions`` to None once DuckDB holds its copy, so the Arrow
    table (650 MB at 20M interactions) is freed before the joins run (the ingest stage)."""
    limit = os.environ.get(MEMORY_ENV, MEMORY_DEFAULT)
    with tempfile.TemporaryDirectory(prefix="fame-ingest-") as spill:
        con = duckdb.connect()
        try:
            con.execute("SET preserve_insertion_order = true")
            # bounded memory at ML-20m scale: sorts, joins and aggregations past the limit spill
            try:
                con.execute("SET memory_limit = ?", [limit])
            except duckdb.Error as exc:
                raise PipelineError(f"{MEMORY_ENV}={limit!r} is not a DuckDB size: {exc}") from exc
            con.execute("SET temp_directory = ?", [spill])
            stats = _load(con, raw.interactions)
            if consume:
                raw.interactions = None
            return _prepare(con, raw, stats, user_core, item_core, min_seq_len, dedup, min_rating)
        except duckdb.OutOfMemoryException as exc:
            raise PipelineError(
                f"ingest ran out of its DuckDB memory limit {limit} even with spilling to disk "
                f"({exc}); raise it, e.g. {MEMORY_ENV}=4GB"
            ) from exc
        finally:
            con.close()


def _prepare(con, raw, stats, user_core, item_core, min_seq_len, dedup, min_rating) -> Prepared:
    """The steps after ``_load``; each reads and rewrites the temp table ``inter``, adding its
    stats."""
    first = raw.source_files[0] if raw.source_files else "interactions"
    if raw.items is not None:
        _check_items(con, raw, first)
    if min_rating is not None:
        con.execute("DELETE FROM inter WHERE rating IS NULL OR rating < ?", [min_rating])
        stats["dropped_by_rating"] = stats["raw_interactions"] - _rows(con)
    if dedup != "none":
        stats["dropped_duplicates"] = _dedup(con, dedup)
    stats["filter_iterations"] = _k_core(con, max(user_core, min_seq_len), item_core)
    stats["interactions"] = _rows(con)
    if stats["interactions"] == 0:
        raise IngestError(
            first,
            f"no interactions left after filtering (min_seq_len={min_seq_len}, "
            f"user_core={user_core}, item_core={item_core}, min_rating={min_rating})",
        )
    stats |= _remap(con, stats)
    interactions, sequences = _interactions_and_sequences(con)
    return Prepared(_items(con, raw), interactions, sequences, stats)


def _rows(con) -> int:
    return _count(con, "SELECT count(*) FROM inter")


def _load(con, interactions: pa.Table) -> dict[str, int]:
    con.register("raw_inter", interactions)
    con.execute("CREATE TEMP TABLE inter AS SELECT * FROM raw_inter")
    con.unregister("raw_inter")
    return {
        "raw_interactions": _rows(con),
        "raw_users": _count(con, "SELECT count(DISTINCT user) FROM inter"),
        "raw_items": _count(con, "SELECT count(DISTINCT item) FROM inter"),
    }


def _check_items(con, raw: RawData, first: str) -> None:
    """Each item described once; with ``strict_items``, only items the interactions name."""
    con.register("raw_items", raw.items)
    dup = con.execute(
        "SELECT item FROM raw_items GROUP BY item HAVING count(*) > 1 LIMIT 1"
    ).fetchall()
    meta_file = raw.items_file or (raw.source_files[-1] if len(raw.source_files) > 1 else first)
    if dup:
        raise IngestError(meta_file, f"item {dup[0][0]!r} is described twice", field="item")
    if not raw.strict_items:
        return
    unknown = con.execute(
        "SELECT item FROM raw_items WHERE item NOT IN (SELECT DISTINCT item FROM inter) ORDER BY 1"
    ).fetchall()
    if unknown:
        shown = ", ".join(u[0] for u in unknown[:5])
        raise IngestError(
            meta_file,
            f"names {len(unknown)} item(s) absent from the interactions, e.g. {shown}",
            field="item_id",
        )


def _dedup(con, dedup: str) -> int:
    """Keep one (user, item) interaction, the first or the last; returns how many were dropped."""
    direction = "ASC" if dedup == "first" else "DESC"
    before = _rows(con)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE inter AS SELECT * FROM inter
        QUALIFY row_number() OVER (PARTITION BY user, item ORDER BY timestamp {direction}, ord {direction}) = 1
    """)
    return before - _rows(con)


def _k_core(con, user_min: int, item_core: int) -> int:
    """Drop users below ``user_min`` and items below ``item_core`` interactions until nothing
    changes; returns the number of rounds."""
    iterations = 0
    while True:
        iterations += 1
        before = _rows(con)
        con.execute(f"""
            DELETE FROM inter WHERE user IN (
                SELECT user FROM inter GROUP BY user HAVING count(*) < {int(user_min)})
        """)
        if item_core > 0:
            con.execute(f"""
                DELETE FROM inter WHERE item IN (
                    SELECT item FROM inter GROUP BY item HAVING count(*) < {int(item_core)})
            """)
        if _rows(con) == before:
            return iterations


def _remap(con, stats: dict[str, int]) -> dict[str, int]:
    """Dense 1-based ids (``umap``, ``imap``) in source-id order."""
    for table, col, new in (("umap", "user", "user_id"), ("imap", "item", "item_id")):
        con.execute(f"""
            CREATE TEMP TABLE {table} AS
            SELECT {col}, row_number() OVER (ORDER BY {_id_order(col)}) AS {new}
            FROM (SELECT DISTINCT {col} FROM inter)
        """)
    users = _count(con, "SELECT count(*) FROM umap")
    items = _count(con, "SELECT count(*) FROM imap")
    return {
        "users": users,
        "items": items,
        "dropped_users": stats["raw_users"] - users,
        "dropped_items": stats["raw_items"] - items,
    }


def _interactions_and_sequences(con) -> tuple[pa.Table, pa.Table]:
    """The remapped interactions in time order, and each user's leave-one-out split (§5)."""
    interactions = con.sql("""
        SELECT u.user_id, i.item_id, t.timestamp, t.rating, u.user AS source_user_id
        FROM inter t JOIN umap u USING (user) JOIN imap i USING (item)
        ORDER BY u.user_id, t.timestamp, t.ord
    """).to_arrow_table()
    if interactions["rating"].null_count == interactions.num_rows:
        interactions = interactions.drop_columns(["rating"])
    sequences = con.sql("""
        WITH s AS (
            SELECT u.user_id, u.user AS source_user_id,
                   list(i.item_id ORDER BY t.timestamp, t.ord) AS seq
            FROM inter t JOIN umap u USING (user) JOIN imap i USING (item)
            GROUP BY u.user_id, u.user
        )
        SELECT user_id, source_user_id,
               seq[1:len(seq) - 2] AS train_items,
               seq[len(seq) - 1] AS valid_item,
               seq[len(seq)] AS test_item
        FROM s ORDER BY user_id
    """).to_arrow_table()
    return interactions, sequences


def _items(con, raw: RawData) -> pa.Table:
    """Every kept item with its source id and the metadata columns the reader gave."""
    meta_cols, join = "", ""
    if raw.items is not None:
        cols = [c for c in raw.items.column_names if c != "item"]
        meta_cols = "".join(f', m."{c}"' for c in cols)
        join = "LEFT JOIN raw_items m USING (item)"
    return con.sql(f"""
        SELECT i.item_id, i.item AS source_id{meta_cols}
        FROM imap i {join} ORDER BY i.item_id
    """).to_arrow_table()


def _count(con, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


def hold_out_items(
    items: pa.Table, sequences: pa.Table, share: float, seed: int
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """The item cold-start protocol: a seeded ``share`` of the items leaves training entirely.

    Returns ``items`` with a boolean ``held_out`` column, ``sequences`` whose train parts no
    longer name a held-out item (their valid and test targets stay, so those are cold targets)
    and the counts. Users left with an empty train part are dropped: they have no history to
    recommend from. The choice depends on the seed and the item ids only.
    """
    import numpy as np
    import pyarrow.compute as pc

    ids = items["item_id"].to_numpy()
    n_out = int(round(share * len(ids)))
    if n_out < 1:
        raise PipelineError(
            f"data.cold_items = {share} of {len(ids)} items holds out none: raise the share"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(ids, size=n_out, replace=False))
    held = np.zeros(int(ids.max()) + 1, dtype=bool)
    held[chosen] = True
    train = sequences["train_items"].combine_chunks()
    flat = train.flatten().to_numpy()
    keep = ~held[flat]
    rows = pc.list_parent_indices(train).to_numpy()
    new_len = np.bincount(rows[keep], minlength=len(train))
    offsets = np.zeros(len(train) + 1, dtype=np.int32)
    np.cumsum(new_len, out=offsets[1:])
    kept_train = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat[keep], pa.int64()))
    out = sequences.set_column(
        sequences.schema.get_field_index("train_items"), "train_items", kept_train
    )
    nonempty = new_len > 0
    out = out.filter(pa.array(nonempty))
    stats = {
        "held_out_items": n_out,
        "held_out_train_interactions": int((~keep).sum()),
        "users_dropped_empty_history": int((~nonempty).sum()),
        "cold_valid_targets": int(held[out["valid_item"].to_numpy()].sum()),
        "cold_test_targets": int(held[out["test_item"].to_numpy()].sum()),
    }
    return items.append_column("held_out", pa.array(held[ids])), out, stats
