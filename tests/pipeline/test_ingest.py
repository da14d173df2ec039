"""The ingest stage on the real datasets, through the runner and the catalog."""

import pyarrow.parquet as pq
import pytest

from fame.config import BLOCK_USERS
from pipeline.errors import IngestError
from pipeline.runner import run_pipeline
from storage import query


def _counts(root):
    _, rows = query(
        root, "select count(distinct user_id), count(distinct item_id), count(*) from interactions"
    )
    return rows[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("beauty", (22363, 12101, 198502)),
        ("sports", (35598, 18357, 296337)),
    ],
)
def test_published_statistics(make_config, artifacts, name, expected):
    ctx = run_pipeline(make_config(name), ["ingest"], progress=False)
    assert _counts(artifacts) == expected
    _, rows = query(artifacts, "select count(*), sum(len(train_items) + 2) from sequences")
    assert rows[0] == (expected[0], expected[2])
    # one row group per block of users: what training and evaluation stream
    meta = pq.read_metadata(ctx.results["ingest"].artifact.file("sequences.parquet"))
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [BLOCK_USERS] * (len(sizes) - 1) and sum(sizes) == expected[0]


def test_ml100k_items_have_titles_years_genres(make_config, artifacts):
    run_pipeline(make_config("ml-100k"), ["ingest"], progress=False)
    assert _counts(artifacts) == (943, 1682, 100000)
    _, rows = query(artifacts, "select title, year, genres from items where source_id = '1'")
    assert rows == [("Toy Story", 1995, ["Animation", "Children's", "Comedy"])]
    _, rows = query(artifacts, "select count(*) from items where title is null or genres is null")
    assert rows == [(0,)]


def test_rerun_is_skipped_and_change_recomputes(make_config, artifacts):
    cfg = make_config("ml-100k")
    first = run_pipeline(cfg, ["ingest"], progress=False)
    second = run_pipeline(cfg, ["ingest"], progress=False)
    assert not first.results["ingest"].skipped and second.results["ingest"].skipped
    assert first.results["ingest"].key == second.results["ingest"].key
    changed = run_pipeline(
        make_config("ml-100k", {"data.user_core": 30}), ["ingest"], progress=False
    )
    assert not changed.results["ingest"].skipped
    _, rows = query(
        artifacts, "select status from stages where stage = 'ingest' order by started_at"
    )
    assert [r[0] for r in rows] == ["computed", "skipped", "computed"]
    _, rows = query(
        artifacts, "select min(n) from (select count(*) n from interactions group by user_id)"
    )
    assert rows[0][0] >= 30  # the catalog follows the latest run


def test_bad_input_leaves_no_artifact(make_config, artifacts, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "X.txt").write_text("1 2 3 4\n2 3 oops 5\n")
    cfg = make_config(
        "beauty",
        {
            "data.dir": str(bad),
            "data.interactions": "X.txt",
            "data.items": None,
            "data.item_text": "",
        },
    )
    with pytest.raises(
        IngestError, match=r"X\.txt, line 2, field 'item_id': non-integer id 'oops'"
    ):
        run_pipeline(cfg, ["ingest"], progress=False)
    ingest_dir = artifacts / "ingest"
    assert not ingest_dir.exists() or not any(ingest_dir.iterdir())  # not even a temp dir
    _, rows = query(artifacts, "select status, error from stages")
    assert rows[0][0] == "failed" and "oops" in rows[0][1]
    _, rows = query(artifacts, "select status from runs")
    assert rows == [("failed",)]
