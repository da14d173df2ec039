"""Each raw format parses to the same normalised interactions; bad input names file/line/field."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import IngestError
from sources.readers import read_amazon, read_generic, read_movielens, read_recbole, read_s3rec
from sources.sequences import prepare


def _rows(raw):
    t = raw.interactions
    return list(
        zip(t["user"].to_pylist(), t["item"].to_pylist(), t["timestamp"].to_pylist(), strict=True)
    )


def test_s3rec_positions_are_time(tmp_path):
    (tmp_path / "X.txt").write_text("1 5 6 7\n2 6 5\n")
    (tmp_path / "X_item2attributes.json").write_text(json.dumps({"5": [1], "6": [1, 2], "7": []}))
    raw = read_s3rec(tmp_path / "X.txt", tmp_path / "X_item2attributes.json")
    assert _rows(raw) == [("1", "5", 0), ("1", "6", 1), ("1", "7", 2), ("2", "6", 0), ("2", "5", 1)]
    # 1 only ever comes first: a brand id (split_attributes); 2 is a category
    assert raw.items.to_pylist()[1] == {
        "item": "6",
        "attributes": [1, 2],
        "brand": 1,
        "categories": [2],
    }


@pytest.mark.parametrize(
    ("text", "line", "field", "msg"),
    [
        ("1 2 3\n2 x 4\n", 2, "item_id", "non-integer id 'x'"),
        ("1 2 3\nu7 2 4\n", 2, "user_id", "non-integer id 'u7'"),
        ("1 2 3\n\n5\n", 3, None, "expected 'user_id item_id"),
    ],
)
def test_s3rec_errors_name_line_and_field(tmp_path, text, line, field, msg):
    (tmp_path / "X.txt").write_text(text)
    with pytest.raises(IngestError, match=msg) as exc:
        read_s3rec(tmp_path / "X.txt", None)
    assert exc.value.line == line and exc.value.field == field
    assert str(tmp_path / "X.txt") in str(exc.value)


def test_s3rec_attributes_naming_unknown_items(tmp_path):
    (tmp_path / "X.txt").write_text("1 5 6 7\n")
    (tmp_path / "a.json").write_text(json.dumps({"5": [1], "99": [2]}))
    raw = read_s3rec(tmp_path / "X.txt", tmp_path / "a.json")
    with pytest.raises(IngestError, match=r"a\.json.*1 item\(s\) absent.*99"):
        prepare(raw)


def test_recbole_typed_header(tmp_path):
    (tmp_path / "d.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t4\t10\nu1\ti2\t5\t5\n"
    )
    (tmp_path / "d.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "i1\tToy Story\t1995\tAnimation Comedy\ni2\tHeat\t\tAction\n"
    )
    raw = read_recbole(tmp_path / "d.inter", tmp_path / "d.item", "user_id", "item_id", "timestamp")
    assert _rows(raw) == [("u1", "i1", 10.0), ("u1", "i2", 5.0)]
    assert raw.interactions["rating"].to_pylist() == [4.0, 5.0]
    items = raw.items.to_pylist()
    assert items[0] == {
        "item": "i1",
        "title": "Toy Story",
        "year": 1995,
        "genres": ["Animation", "Comedy"],
    }
    assert items[1]["year"] is None


def test_recbole_errors(tmp_path):
    f = tmp_path / "d.inter"
    f.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t10\nu1\ti2\tsoon\n")
    with pytest.raises(IngestError, match="got 'soon'") as exc:
        read_recbole(f, None, "user_id", "item_id", "timestamp")
    assert exc.value.line == 3 and exc.value.field == "timestamp"
    f.write_text("user_id:token\titem_id:token\nu1\ti1\n")
    with pytest.raises(IngestError, match="missing column") as exc:
        read_recbole(f, None, "user_id", "item_id", "timestamp")
    assert exc.value.field == "timestamp"
    f.write_text("user_id\titem_id:token\ttimestamp:float\nu1\ti1\t1\n")
    with pytest.raises(IngestError, match="needs a type") as exc:
        read_recbole(f, None, "user_id", "item_id", "timestamp")
    assert exc.value.line == 1
    f.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti2\n")
    with pytest.raises(IngestError, match="malformed row") as exc:
        read_recbole(f, None, "user_id", "item_id", "timestamp")
    assert exc.value.line == 3


def test_amazon_raw_with_python_literal_meta(tmp_path):
    reviews = tmp_path / "reviews_X_5.json.gz"
    with gzip.open(reviews, "wt") as fh:
        for u, i, t in [("A", "p1", 3), ("A", "p2", 1), ("B", "p1", 2)]:
            fh.write(
                json.dumps(
                    {
                        "reviewerID": u,
                        "asin": i,
                        "unixReviewTime": t,
                        "overall": 5.0,
                        "reviewText": "nice",
                    }
                )
                + "\n"
            )
    meta = tmp_path / "meta_X.json.gz"
    with gzip.open(meta, "wt") as fh:
        fh.write(
            repr(
                {
                    "asin": "p1",
                    "title": "Lip 'Gloss'",
                    "brand": "B1",
                    "price": 3.5,
                    "categories": [["Beauty", "Makeup", "Lips"]],
                }
            )
            + "\n"
        )
        fh.write(
            repr({"asin": "p2", "categories": [["Beauty", "Skin"]], "description": "x"}) + "\n"
        )
        fh.write(
            repr({"asin": "p3", "title": "__import__('os')"}) + "\n"
        )  # a string, never evaluated
    raw = read_amazon(reviews, meta)
    assert _rows(raw) == [("A", "p1", 3.0), ("A", "p2", 1.0), ("B", "p1", 2.0)]
    items = {r["item"]: r for r in raw.items.to_pylist()}
    assert items["p1"]["categories"] == ["Beauty", "Makeup", "Lips"] and items["p1"]["price"] == 3.5
    assert items["p2"]["brand"] is None and items["p3"]["title"] == "__import__('os')"


def test_amazon_meta_rejects_code(tmp_path):
    reviews = tmp_path / "r.json"
    reviews.write_text(json.dumps({"reviewerID": "A", "asin": "p1", "unixReviewTime": 1}) + "\n")
    meta = tmp_path / "m.json"
    meta.write_text("{'asin': 'p1'}\n__import__('os').system('echo pwned')\n")
    with pytest.raises(IngestError, match="not a Python/JSON literal") as exc:
        read_amazon(reviews, meta)
    assert exc.value.line == 2


def test_amazon_missing_field(tmp_path):
    reviews = tmp_path / "r.json"
    reviews.write_text(
        json.dumps({"reviewerID": "A", "asin": "p1", "unixReviewTime": 1})
        + "\n"
        + json.dumps({"reviewerID": "A", "unixReviewTime": 2})
        + "\n"
    )
    with pytest.raises(IngestError, match="missing field") as exc:
        read_amazon(reviews, None)
    assert exc.value.line == 2 and exc.value.field == "asin"


def test_movielens_dat_and_csv_agree(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n1::20::3::90\n2::10::4::50\n")
    (tmp_path / "movies.dat").write_bytes(
        "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n".encode("latin-1")
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,5,100\n1,20,3,90\n2,10,4,50\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"Amélie (2001)",Comedy|Romance\n20,Heat (1995),Action\n'
    )
    dat = read_movielens(tmp_path / "ratings.dat", tmp_path / "movies.dat")
    csv = read_movielens(tmp_path / "ratings.csv", tmp_path / "movies.csv")
    assert _rows(dat) == _rows(csv) == [("1", "10", 100.0), ("1", "20", 90.0), ("2", "10", 50.0)]
    assert dat.items.to_pylist()[0] == {
        "item": "10",
        "title": "Amélie",
        "year": 2001,
        "genres": ["Comedy", "Romance"],
    }
    assert dat.items.to_pylist() == csv.items.to_pylist()


def test_movielens_bad_line(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n1::20::3\n")
    with pytest.raises(IngestError, match="4 '::'-separated fields") as exc:
        read_movielens(tmp_path / "ratings.dat", None)
    assert exc.value.line == 2
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n1::2x::3::4\n")
    with pytest.raises(IngestError, match="got '2x'") as exc:
        read_movielens(tmp_path / "ratings.dat", None)
    assert exc.value.line == 2 and exc.value.field == "item"


def test_generic_csv_and_parquet(tmp_path):
    (tmp_path / "i.csv").write_text("uid,iid,ts\na,x,2024-01-02\na,y,2024-01-01\n")
    pq.write_table(pa.table({"iid": ["x", "y"], "name": ["X", "Y"]}), tmp_path / "items.parquet")
    raw = read_generic(tmp_path / "i.csv", tmp_path / "items.parquet", "uid", "iid", "ts")
    (u1, i1, t1), (u2, i2, t2) = _rows(raw)
    assert (u1, i1, u2, i2) == ("a", "x", "a", "y") and t2 < t1
    assert raw.items.column_names == ["item", "name"]
    with pytest.raises(IngestError, match="missing column") as exc:
        read_generic(tmp_path / "i.csv", None, "user", "iid", "ts")
    assert exc.value.field == "user"
    with pytest.raises(IngestError, match="file not found"):
        read_generic(tmp_path / "nope.csv", None, "uid", "iid", "ts")


# one tiny file per format: (data.format, file name, contents, extra data section fields)
FORMAT_FILES = [
    ("s3rec", "X.txt", "1 5 6\n", {}),
    ("recbole", "d.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\t2\n", {}),
    ("amazon", "r.json", "".join(
        json.dumps({"reviewerID": "u", "asin": a, "unixReviewTime": t}) + "\n"
        for a, t in (("a", 1), ("b", 2))), {}),
    ("amazon2023", "r.jsonl", "".join(
        json.dumps({"user_id": "u", "parent_asin": a, "timestamp": t, "rating": 5.0}) + "\n"
        for a, t in (("a", 1000), ("b", 2000))), {}),
    ("movielens", "ratings.dat", "1::10::5::100\n1::20::3::90\n", {}),
    ("table", "i.csv", "uid,iid,ts\nu,a,1\nu,b,2\n",
     {"user_col": "uid", "item_col": "iid", "time_col": "ts"}),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "name", "text", "extra"), FORMAT_FILES)
def test_ingest_dispatches_each_format_to_its_reader(tmp_path, fmt, name, text, extra):
    from pipeline.config import load_config
    from pipeline.stages.ingest import READERS, read_raw

    assert set(READERS) == {f[0] for f in FORMAT_FILES}  # every file format has a reader
    (tmp_path / name).write_text(text)
    data = {"data.format": fmt, "data.dir": str(tmp_path), "data.interactions": name}
    data.update({f"data.{k}": v for k, v in extra.items()})
    cfg = load_config("ml-100k", {**data, "data.items": ""}, tmp_path)
    assert len(read_raw(cfg).interactions) == 2
