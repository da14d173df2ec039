"""Bad config values and bad raw files are refused, each error naming the field or file/line."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli import app
from fame.config import EvalConfig, ModelConfig, TrainConfig
from pipeline.config import ConfigError, load_config
from pipeline.errors import IngestError
from sources.readers import read_amazon, read_generic, read_movielens, read_recbole, read_s3rec

NAN, INF = float("nan"), float("inf")

# (overrides, the field the error must name); dicts as flows pass them, strings as --set does
BAD_OVERRIDES = [
    ({"train.lr": NAN}, "train.lr"),
    ({"train.lr": "nan"}, "train.lr"),
    ({"train.lr": INF}, "train.lr"),
    ({"train.lr": 0.0}, "train.lr"),
    ({"train.lr": -1e-3}, "train.lr"),
    (["train.lr=nan"], "train.lr"),
    (["train.lr=-inf"], "train.lr"),
    ({"train.weight_decay": -0.1}, "train.weight_decay"),
    ({"train.weight_decay": NAN}, "train.weight_decay"),
    ({"train.negatives": 0}, "train.negatives"),
    ({"train.negatives": -5, "train.loss": "sampled_softmax"}, "train.negatives"),
    ({"train.patience": 0}, "train.patience"),
    ({"train.patience": -1}, "train.patience"),
    ({"evaluate.ks": [5, 10, -5]}, "evaluate.ks.2"),
    ({"evaluate.ks": [0, 10]}, "evaluate.ks.0"),
    ({"evaluate.ks": [5, 20]}, "evaluate"),
    ({"evaluate.protocols": []}, "evaluate"),
    ({"evaluate.protocols": ["keep_history", "keep_history"]}, "evaluate"),
    ({"train.epochs": True}, "train.epochs"),
    ({"train.eval_every": 0}, "train.eval_every"),
    ({"model.init_std": 0.0}, "model.init_std"),
    ({"model.init_std": -0.02}, "model.init_std"),
    ({"model.init_std": INF}, "model.init_std"),
    ({"model.d": True, "model.heads": 1}, "model.d"),
    (["model.d=true", "model.heads=1"], "model.d"),
    ({"model.heads": False}, "model.heads"),
    ({"model.dropout": NAN}, "model.dropout"),
    ({"model.router_top_k": -1}, "model.router_top_k"),
    ({"data.min_rating": INF}, "data.min_rating"),
    ({"data.user_core": True}, "data.user_core"),
    ({"encode.batch_size": True}, "encode.batch_size"),
    ({"evaluate.topk": True}, "evaluate.topk"),
    ({"init.freeze_epochs": -1}, "init.freeze_epochs"),
    ({"init.gain": 0}, "init.gain"),
    ({"pretrain.lr": NAN}, "pretrain.lr"),
    ({"pretrain.lr": INF}, "pretrain.lr"),
    (["pretrain.temperature=inf"], "pretrain.temperature"),
    ({"pretrain.keep_text": NAN}, "pretrain.keep_text"),
    ({"pretrain.steps": True}, "pretrain.steps"),
    ({"facets": [{"name": "g", "field": "genres", "level": True}]}, "facets.0.level"),
    ({"pretrain.hidden": True}, "pretrain.hidden"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_OVERRIDES, ids=lambda v: str(v))
def test_bad_config_value_is_a_config_error_naming_the_field(overrides, field):
    with pytest.raises(ConfigError) as exc:
        load_config("ml-100k", overrides)
    message = str(exc.value)
    assert "ml-100k.toml: invalid config" in message
    assert field in message, message


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.weight_decay": 0.0, "model.router_top_k": 0, "evaluate.ks": [10]},
        {"train.negatives": 1, "train.patience": 1, "data.min_rating": 0.0},
        {"train.lr": "3e-4", "model.gate": False, "init.freeze": True},  # strings still parse
        {"pretrain.keep_text": 0.0, "pretrain.seed": -1, "train.seed": 0},
    ],
)
def test_boundary_values_still_load(overrides):
    load_config("ml-100k", overrides)


@pytest.mark.parametrize("name", ["ml-100k", "beauty", "sports", "lastfm"])
def test_shipped_configs_still_load(name):
    load_config(name)


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (ModelConfig, {"d": True}, "d"),
        (ModelConfig, {"init_std": NAN}, "init_std"),
        (TrainConfig, {"lr": INF}, "lr"),
        (TrainConfig, {"negatives": 0}, "negatives"),
        (EvalConfig, {"ks": (5, 10, -5)}, "ks"),
    ],
)
def test_fame_configs_check_themselves(cls, kwargs, field):
    with pytest.raises(ValidationError) as exc:
        cls(**kwargs)
    assert exc.value.errors()[0]["loc"][0] == field


# -- raw input files ------------------------------------------------------------------------
H = "user_id:token\titem_id:token\ttimestamp:float\n"
HR = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def _recbole(d: Path):
    item = d / "d.item"
    return read_recbole(d / "d.inter", item if item.exists() else None, *COLS)


COLS = ("user_id", "item_id", "timestamp")


def _table(name):
    return lambda d: read_generic(d / name, None, "uid", "iid", "ts")


def _s3rec(d: Path):
    attrs = d / "X_item2attributes.json"
    return read_s3rec(d / "X.txt", attrs if attrs.exists() else None)


def _s3rec_text(d: Path):
    return read_s3rec(d / "X.txt", None, d / "items.tsv")


def _amazon(d: Path):
    meta = d / "meta.json.gz"
    return read_amazon(d / "reviews.json", meta if meta.exists() else None)


def _movielens(name):
    return lambda d: read_movielens(d / name, None)


def _parquet(d: Path, **cols):
    pq.write_table(pa.table(cols), d / "i.parquet")


def _review(user, item, t):
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": t}) + "\n"


GOOD_REVIEWS = _review("A", "p1", 1) + _review("A", "p2", 2) + _review("A", "p3", 3)
LATIN1 = "Am\xe9lie".encode("latin-1")  # not UTF-8

# (id, reader, files {name: text or bytes}, file the error names, line, field, message part)
BAD_FILES = [
    ("recbole-nan-ts", _recbole, {"d.inter": H + "u1\ti1\t1\nu1\ti2\tnan\n"},
     "d.inter", 3, "timestamp", "finite number, got nan"),
    ("recbole-inf-ts", _recbole, {"d.inter": H + "u1\ti1\t1\nu1\ti2\t-inf\n"},
     "d.inter", 3, "timestamp", "finite number, got -inf"),
    ("recbole-empty-ts", _recbole, {"d.inter": H + "u1\ti1\t1\nu1\ti2\t\n"},
     "d.inter", 3, "timestamp", "missing timestamp"),
    ("recbole-nan-rating", _recbole, {"d.inter": HR + "u1\ti1\t4\t1\nu1\ti2\tnan\t2\n"},
     "d.inter", 3, "rating", "finite number, got nan"),
    ("recbole-empty-user", _recbole, {"d.inter": H + "u1\ti1\t1\n\ti2\t2\n"},
     "d.inter", 3, "user_id", "empty id"),
    ("recbole-blank-user", _recbole, {"d.inter": H + "u1\ti1\t1\nu1\ti3\t3\n   \ti2\t2\n"},
     "d.inter", 4, "user_id", "empty id"),
    ("recbole-nul-user", _recbole, {"d.inter": H + "u1\ti1\t1\nu\x001\ti2\t2\n"},
     "d.inter", 3, "user_id", "control character"),
    ("recbole-nul-item", _recbole, {"d.inter": H + "u1\ti1\t1\nu1\ti\x002\t2\n"},
     "d.inter", 3, "item_id", "control character"),
    ("recbole-inter-not-utf8", _recbole, {"d.inter": H.encode() + b"u1\ti1\t1\n" + LATIN1 + b"\ti2\t2\n"},
     "d.inter", 3, None, "not UTF-8"),
    ("recbole-header-not-utf8", _recbole, {"d.inter": b"user_\xff:token\titem_id:token\n"},
     "d.inter", 1, None, "not UTF-8"),
    ("recbole-item-not-utf8", _recbole,
     {"d.inter": H + "u1\ti1\t1\n", "d.item": b"item_id:token\ttitle:token_seq\ni1\t" + LATIN1 + b"\n"},
     "d.item", 2, None, "not UTF-8"),
    ("table-nan-ts", _table("i.csv"), {"i.csv": "uid,iid,ts\na,x,1\nb,y,2.5\nc,z,NaN\n"},
     "i.csv", 4, "ts", "missing timestamp"),
    ("table-empty-user", _table("i.csv"), {"i.csv": 'uid,iid,ts\na,x,1\n"",y,2\n'},
     "i.csv", 3, "uid", "empty id"),
    ("table-nul-item", _table("i.csv"), {"i.csv": "uid,iid,ts\na,x,1\nb,y\x00z,2\n"},
     "i.csv", 3, "iid", "control character"),
    ("table-newline-in-quoted-id", _table("i.csv"), {"i.csv": 'uid,iid,ts\na,x,1\n"b\nc",y,2\n'},
     "i.csv", 3, "uid", "control character"),
    ("table-not-utf8", _table("i.csv"), {"i.csv": b"uid,iid,ts\na,x,1\n" + LATIN1 + b",y,2\n"},
     "i.csv", 3, None, "not UTF-8"),
    ("parquet-nan-ts", _table("i.parquet"), {"i.parquet": dict(uid=["a", "b"], iid=["x", "y"], ts=[1.0, NAN])},
     "i.parquet", 2, "ts", "finite number, got nan"),
    ("parquet-empty-user", _table("i.parquet"), {"i.parquet": dict(uid=["a", ""], iid=["x", "y"], ts=[1, 2])},
     "i.parquet", 2, "uid", "empty id"),
    ("parquet-null-user", _table("i.parquet"), {"i.parquet": dict(uid=["a", None], iid=["x", "y"], ts=[1, 2])},
     "i.parquet", 2, "uid", "empty id"),
    ("amazon-empty-user", _amazon, {"reviews.json": GOOD_REVIEWS + _review("", "p1", 4)},
     "reviews.json", 4, "reviewerID", "empty id"),
    ("amazon-nul-item", _amazon, {"reviews.json": _review("A", "p\x001", 1)},
     "reviews.json", 1, "asin", "control character"),
    ("amazon-reviews-not-utf8", _amazon, {"reviews.json": GOOD_REVIEWS.encode() + b'{"reviewerID": "' + LATIN1 + b'", "asin": "p1", "unixReviewTime": 4}\n'},
     "reviews.json", 4, None, "not UTF-8"),
    ("amazon-meta-not-utf8", _amazon,
     {"reviews.json": GOOD_REVIEWS, "meta.json.gz": b"{'asin': 'p1'}\n{'asin': 'p2', 'title': '" + LATIN1 + b"'}\n"},
     "meta.json.gz", 2, None, "not UTF-8"),
    ("s3rec-seq-not-utf8", _s3rec, {"X.txt": b"1 2 3\n2 3 " + LATIN1 + b"\n"},
     "X.txt", 2, None, "not UTF-8"),
    ("s3rec-attributes-not-utf8", _s3rec,
     {"X.txt": "1 2 3\n", "X_item2attributes.json": b'{"2": [1],\n "3": [2]}\n' + LATIN1},
     "X_item2attributes.json", 3, None, "not UTF-8"),
    ("s3rec-item-text-not-utf8", _s3rec_text,
     {"X.txt": "1 2 3\n", "items.tsv": b"item_id\ttitle\n2\tok\n3\t" + LATIN1 + b"\n"},
     "items.tsv", 3, None, "not UTF-8"),
    ("movielens-dat-not-utf8", _movielens("ratings.dat"), {"ratings.dat": b"1::10::5::100\n1::" + LATIN1 + b"::3::90\n"},
     "ratings.dat", 2, None, "not UTF-8"),
    ("movielens-csv-not-utf8", _movielens("ratings.csv"),
     {"ratings.csv": b"userId,movieId,rating,timestamp\n1,10,5,100\n1," + LATIN1 + b",3,90\n"},
     "ratings.csv", 3, None, "not UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reader", "files", "file", "line", "field", "msg"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_input_file_is_an_ingest_error_naming_file_line_field(
    tmp_path, reader, files, file, line, field, msg
):
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, dict):
            _parquet(tmp_path, **content)
        elif name.endswith(".gz"):
            path.write_bytes(gzip.compress(content))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    with pytest.raises(IngestError) as exc:
        reader(tmp_path)
    err = exc.value
    assert (Path(err.file).name, err.line, err.field) == (file, line, field), str(err)
    assert f"{file}, line {line}" in str(err) and msg in str(err)


def _passwd_lines() -> list[str]:
    path = Path("/etc/passwd")
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


@pytest.mark.parametrize("what", ["interactions", "items"])
def test_path_outside_the_data_dir_is_refused_without_echoing_it(tmp_path, what):
    (tmp_path / "ml-100k").mkdir()
    res = CliRunner().invoke(
        app,
        ["ingest", "-c", "ml-100k", "--data-dir", str(tmp_path), "-q"]
        + ["--set", f"data.{what}=../../../../../../../../etc/passwd"]
        + ["--set", f"paths.artifacts={tmp_path / 'a'}"],
    )
    assert res.exit_code == 2, res.output
    assert f"data.{what} = " in res.stderr and "outside the dataset folder" in res.stderr
    assert not any(line in res.output for line in _passwd_lines())


def test_a_huge_line_is_read_and_a_too_huge_one_is_named(tmp_path, monkeypatch):
    """pyarrow fails a row longer than its block ("straddling object"); the readers grow the
    block to the longest line, and refuse (naming the line) past MAX_LINE_BYTES."""
    from sources import readers

    long_title = "x" * (20 << 20)  # 20 MiB: longer than every reader's block
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,ts\n1,10,5\n1,11,6\n1,12,7\n")
    items = tmp_path / "items.csv"
    items.write_text(f"item,title\n10,short\n11,{long_title}\n12,other\n")
    raw = readers.read_generic(inter, items, "user", "item", "ts")
    assert len(raw.items["title"][1].as_py()) == len(long_title)
    seq = tmp_path / "Beauty.txt"
    seq.write_text("1 " + " ".join(["7"] * (3 << 20)) + "\n2 8 9\n")  # a 12 MiB sequence line
    assert readers.read_s3rec(seq, None).interactions.num_rows == (3 << 20) + 2
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1 << 20)
    with pytest.raises(IngestError) as err:
        readers.read_generic(inter, items, "user", "item", "ts")
    assert err.value.line == 3 and "20 MiB" in str(err.value) and "items.csv" in str(err.value)


def test_evaluation_fields_moved_from_train_still_load(caplog):
    """Configs written before ``[evaluate]`` held the evaluation spec (and the configs that bench
    records hold) load as the same spec, with a warning, and keep their stage keys (synthetic:
    its keys need no data files)."""
    from pipeline.runner import plan_keys

    old = load_config(
        "synthetic",
        {"train.ks": [10, 20], "train.eval_batch_size": 64, "train.exclude_history": False},
    )
    new = load_config(
        "synthetic",
        {
            "evaluate.ks": [10, 20],
            "evaluate.batch_size": 64,
            "evaluate.protocols": ["keep_history", "exclude_history"],
        },
    )
    assert old.evaluate == new.evaluate and old.evaluate.primary == "keep_history"
    assert plan_keys(old) == plan_keys(new)
    assert "moved to [evaluate]" in caplog.text
    # the primary protocol decides early stopping, so it is in the train key; batch size is not
    base = plan_keys(load_config("synthetic"))
    assert plan_keys(new)["train"] != base["train"]
    fast = plan_keys(load_config("synthetic", {"evaluate.batch_size": 7}))
    assert fast == base
