"""From raw interactions to the catalog's ``interactions``, ``sequences`` and ``items`` tables.

One implementation for every format, in DuckDB SQL (vectorised, out of Python): rating filter,
duplicate handling, k-core filtering iterated to a fixed point (the minimum sequence length is
part of the user threshold, so dropping a short user can never break the item core), id remap
and the chronological leave-one-out split of FAME_SPEC §5. Equal timestamps keep file order.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from pipeline.errors import IngestError
from pipeline.readers import RawData


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
) -> Prepared:
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    try:
        return _prepare(con, raw, user_core, item_core, min_seq_len, dedup, min_rating)
    finally:
        con.close()


def _prepare(con, raw, user_core, item_core, min_seq_len, dedup, min_rating) -> Prepared:
    stats: dict[str, int] = {}
    con.register("raw_inter", raw.interactions)
    con.execute("CREATE TEMP TABLE inter AS SELECT * FROM raw_inter")
    stats["raw_interactions"] = _count(con, "SELECT count(*) FROM inter")
    stats["raw_users"] = _count(con, "SELECT count(DISTINCT user) FROM inter")
    stats["raw_items"] = _count(con, "SELECT count(DISTINCT item) FROM inter")
    first = raw.source_files[0] if raw.source_files else "interactions"

    if raw.items is not None:
        con.register("raw_items", raw.items)
        dup = con.execute(
            "SELECT item FROM raw_items GROUP BY item HAVING count(*) > 1 LIMIT 1"
        ).fetchall()
        meta_file = raw.items_file or (raw.source_files[-1] if len(raw.source_files) > 1 else first)
        if dup:
            raise IngestError(meta_file, f"item {dup[0][0]!r} is described twice", field="item")
        if raw.strict_items:
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

    if min_rating is not None:
        con.execute("DELETE FROM inter WHERE rating IS NULL OR rating < ?", [min_rating])
        stats["dropped_by_rating"] = stats["raw_interactions"] - _count(
            con, "SELECT count(*) FROM inter"
        )
    if dedup != "none":
        direction = "ASC" if dedup == "first" else "DESC"
        before = _count(con, "SELECT count(*) FROM inter")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE inter AS SELECT * FROM inter
            QUALIFY row_number() OVER (PARTITION BY user, item ORDER BY timestamp {direction}, ord {direction}) = 1
        """)
        stats["dropped_duplicates"] = before - _count(con, "SELECT count(*) FROM inter")

    # k-core to a fixed point; the sequence-length minimum is part of the user threshold.
    user_min = max(user_core, min_seq_len)
    iterations = 0
    while True:
        iterations += 1
        before = _count(con, "SELECT count(*) FROM inter")
        con.execute(f"""
            DELETE FROM inter WHERE user IN (
                SELECT user FROM inter GROUP BY user HAVING count(*) < {int(user_min)})
        """)
        if item_core > 0:
            con.execute(f"""
                DELETE FROM inter WHERE item IN (
                    SELECT item FROM inter GROUP BY item HAVING count(*) < {int(item_core)})
            """)
        if _count(con, "SELECT count(*) FROM inter") == before:
            break
    stats["filter_iterations"] = iterations
    stats["interactions"] = _count(con, "SELECT count(*) FROM inter")
    if stats["interactions"] == 0:
        raise IngestError(
            first,
            f"no interactions left after filtering (min_seq_len={min_seq_len}, "
            f"user_core={user_core}, item_core={item_core}, min_rating={min_rating})",
        )

    con.execute(f"""
        CREATE TEMP TABLE umap AS SELECT user, row_number() OVER (ORDER BY {_id_order("user")}) AS user_id
        FROM (SELECT DISTINCT user FROM inter)
    """)
    con.execute(f"""
        CREATE TEMP TABLE imap AS SELECT item, row_number() OVER (ORDER BY {_id_order("item")}) AS item_id
        FROM (SELECT DISTINCT item FROM inter)
    """)
    stats["users"] = _count(con, "SELECT count(*) FROM umap")
    stats["items"] = _count(con, "SELECT count(*) FROM imap")
    stats["dropped_users"] = stats["raw_users"] - stats["users"]
    stats["dropped_items"] = stats["raw_items"] - stats["items"]

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

    meta_cols = ""
    join = ""
    if raw.items is not None:
        cols = [c for c in raw.items.column_names if c != "item"]
        meta_cols = "".join(f', m."{c}"' for c in cols)
        join = "LEFT JOIN raw_items m USING (item)"
    items = con.sql(f"""
        SELECT i.item_id, i.item AS source_id{meta_cols}
        FROM imap i {join} ORDER BY i.item_id
    """).to_arrow_table()
    return Prepared(items=items, interactions=interactions, sequences=sequences, stats=stats)


def _count(con, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])
