"""prepare() against a naive pure-Python reference: filtering, ties, dedup, ids and the split."""

import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import IngestError
from sources.readers import RawData
from sources.sequences import prepare


def _raw(rows):
    users, items, ts = zip(*rows, strict=True)
    n = len(rows)
    return RawData(
        pa.table(
            {
                "user": list(users),
                "item": list(items),
                "timestamp": [float(t) for t in ts],
                "rating": pa.nulls(n, pa.float64()),
                "ord": np.arange(n, dtype=np.int64),
            }
        ),
        source_files=[],
    )


def naive(rows, user_core, item_core, min_len, dedup):
    rows = [(u, i, t, o) for o, (u, i, t) in enumerate(rows)]
    if dedup != "none":
        best = {}
        for r in sorted(rows, key=lambda r: (r[2], r[3]), reverse=dedup == "last"):
            best.setdefault((r[0], r[1]), r)
        rows = [r for r in rows if best[(r[0], r[1])] is r]
    while True:
        uc, ic = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
        kept = [r for r in rows if uc[r[0]] >= max(user_core, min_len)]
        if item_core:
            ic = Counter(r[1] for r in kept)
            kept = [r for r in kept if ic[r[1]] >= item_core]
        if len(kept) == len(rows):
            break
        rows = kept
    users = sorted({r[0] for r in rows}, key=int)
    items = sorted({r[1] for r in rows}, key=int)
    umap = {u: k + 1 for k, u in enumerate(users)}
    imap = {i: k + 1 for k, i in enumerate(items)}
    seqs = {}
    for u in users:
        mine = sorted((r for r in rows if r[0] == u), key=lambda r: (r[2], r[3]))
        seq = [imap[r[1]] for r in mine]
        seqs[umap[u]] = (seq[:-2], seq[-2], seq[-1])
    return seqs, len(rows)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("user_core", "item_core", "dedup"),
    [(0, 0, "none"), (5, 5, "none"), (3, 4, "first"), (4, 3, "last")],
)
def test_prepare_matches_naive_reference(seed, user_core, item_core, dedup):
    rng = random.Random(seed)
    rows = [
        (str(rng.randint(1, 40)), str(rng.randint(1, 30)), rng.randint(0, 20)) for _ in range(600)
    ]
    expected, n = naive(rows, user_core, item_core, 3, dedup)
    out = prepare(_raw(rows), user_core=user_core, item_core=item_core, dedup=dedup)
    got = {
        r["user_id"]: (r["train_items"], r["valid_item"], r["test_item"])
        for r in out.sequences.to_pylist()
    }
    assert got == expected
    assert out.interactions.num_rows == n == out.stats["interactions"]
    assert out.stats["users"] == len(expected)


def test_equal_timestamps_keep_file_order():
    rows = [("1", "3", 5), ("1", "1", 5), ("1", "2", 5), ("1", "4", 1)]
    out = prepare(_raw(rows))
    # item 4 is earliest; the three ties keep their line order 3, 1, 2
    assert out.sequences.to_pylist()[0]["train_items"] == [4, 3]
    assert out.sequences.to_pylist()[0]["valid_item"] == 1
    assert out.sequences.to_pylist()[0]["test_item"] == 2


def test_short_users_dropped_and_counted():
    rows = [("1", "1", 0), ("1", "2", 1), ("1", "3", 2), ("2", "1", 0), ("2", "2", 1)]
    out = prepare(_raw(rows))
    assert out.stats["users"] == 1 and out.stats["dropped_users"] == 1


def test_empty_after_filtering_is_an_error():
    rows = [("1", "1", 0), ("1", "2", 1), ("2", "1", 0)]
    with pytest.raises(IngestError, match="no interactions left after filtering"):
        prepare(_raw(rows), user_core=5)


def test_consume_frees_the_raw_table_and_changes_nothing(monkeypatch):
    """The ingest stage's memory bound: DuckDB's copy replaces the Arrow table, under a small
    memory limit that makes the sort and aggregation spill, with the same tables as a plain call."""
    rng = random.Random(3)
    rows = [
        (f"u{rng.randrange(40)}", f"i{rng.randrange(30)}", rng.randrange(100)) for _ in range(900)
    ]
    plain = prepare(_raw(rows), min_seq_len=3)
    monkeypatch.setenv("FAME_INGEST_MEMORY", "64MB")
    raw = _raw(rows)
    consumed = prepare(raw, min_seq_len=3, consume=True)
    assert raw.interactions is None
    for name in ("items", "interactions", "sequences"):
        assert getattr(consumed, name).equals(getattr(plain, name))
    assert consumed.stats == plain.stats


@pytest.mark.parametrize(
    ("limit", "message"), [("lots", "is not a DuckDB size"), ("1MB", "raise it, e.g.")]
)
def test_the_ingest_memory_limit_errors_name_the_setting(monkeypatch, limit, message):
    """A bad FAME_INGEST_MEMORY, or one too small even with spilling, is an error that names
    the variable, not a bare DuckDB exception."""
    from pipeline.errors import PipelineError

    rng = random.Random(4)
    rows = [(f"u{rng.randrange(300)}", f"i{rng.randrange(200)}", i) for i in range(20000)]
    monkeypatch.setenv("FAME_INGEST_MEMORY", limit)
    with pytest.raises(
        PipelineError, match=rf"FAME_INGEST_MEMORY.*{message}|{message}.*FAME_INGEST_MEMORY"
    ):
        prepare(_raw(rows), min_seq_len=3)
