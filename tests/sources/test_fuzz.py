"""Fuzzing (hypothesis): every reader, the ingest stage and the config loader on generated
malformed input end in a ``PipelineError``/``ConfigError`` that names the file or field — never
another exception type, never a partial artifact.

``FAME_FUZZ_EXAMPLES`` sets the examples per target (default 40; the slow variant runs 10×).
"""

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, load_config
from pipeline.errors import PipelineError
from sources.amazon2023 import read_amazon2023
from sources.readers import read_amazon, read_generic, read_movielens, read_recbole, read_s3rec

EXAMPLES = int(os.environ.get("FAME_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # reproducible from the seed, nothing written beside the repo
    derandomize=True,
)

# cells: plausible values, near misses and hostile characters
CELL = st.one_of(
    st.integers(-3, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet=string.printable + "\x00\x1fé€[]:", max_size=12),
    st.sampled_from(["", " ", "NaN", "inf", "-0", "1e309", "[/x]", ":x:", "\\", '"', "'"]),
)


def table_text(header: list[str], sep: str):
    """A header (sometimes damaged) and rows of random cells, some of the wrong width."""
    row = st.lists(CELL, min_size=len(header) - 1, max_size=len(header) + 1).map(sep.join)
    head = st.one_of(st.just(sep.join(header)), st.just(sep.join(header[:-1])), CELL)
    return st.tuples(head, st.lists(row, max_size=8)).map(lambda t: "\n".join([t[0], *t[1]]))


RAW = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))


def body(header: list[str], sep: str):
    return st.one_of(RAW, table_text(header, sep).map(lambda s: s.encode("utf8", "surrogatepass")))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_named_error(call, *files: Path) -> None:
    """``call()`` succeeds or raises a PipelineError whose message names one of ``files``."""
    try:
        call()
    except PipelineError as exc:
        assert any(f.name in str(exc) for f in files), str(exc)


RECBOLE_INTER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
S3REC_LINE = st.lists(st.integers(0, 30).map(str) | CELL, min_size=0, max_size=6).map(" ".join)
ATTRS = st.one_of(
    RAW,
    st.dictionaries(
        st.integers(0, 30).map(str) | CELL,
        st.lists(st.integers(0, 50) | CELL, max_size=4) | CELL,
        max_size=6,
    ).map(lambda d: repr(d).replace("'", '"').encode()),
)


@FUZZ
@given(seq=st.lists(S3REC_LINE, max_size=8).map("\n".join).map(str.encode) | RAW, attrs=ATTRS,
       text=body(["item_id", "title"], "\t"))  # fmt: skip
def test_s3rec_reader(tmp_path, seq, attrs, text):
    files = [write(tmp_path / "X.txt", seq), write(tmp_path / "X_item2attributes.json", attrs)]
    files.append(write(tmp_path / "X_items.tsv", text))
    assert_named_error(lambda: read_s3rec(*files), *files)


@FUZZ
@given(
    inter=body(RECBOLE_INTER, "\t"),
    items=body(["item_id:token", "title:token_seq", "year:token"], "\t"),
)
def test_recbole_reader(tmp_path, inter, items):
    files = [write(tmp_path / "d.inter", inter), write(tmp_path / "d.item", items)]
    assert_named_error(lambda: read_recbole(*files, "user_id", "item_id", "timestamp"), *files)


@FUZZ
@given(
    ratings=body(["userId", "movieId", "rating", "timestamp"], ","),
    movies=body(["movieId", "title", "genres"], ","),
    dat=st.booleans(),
)
def test_movielens_reader(tmp_path, ratings, movies, dat):
    suffix = ".dat" if dat else ".csv"
    if dat:
        ratings, movies = ratings.replace(b",", b"::"), movies.replace(b",", b"::")
    files = [
        write(tmp_path / f"ratings{suffix}", ratings),
        write(tmp_path / f"movies{suffix}", movies),
    ]
    assert_named_error(lambda: read_movielens(*files), *files)


JSON_LINE = st.fixed_dictionaries(
    {},
    optional={
        "reviewerID": CELL,
        "asin": CELL,
        "unixReviewTime": st.integers(-(2**70), 2**70) | CELL,
        "overall": st.floats() | CELL,
        "categories": st.lists(st.lists(CELL, max_size=3), max_size=2),
        "title": CELL,
    },
).map(repr)


@FUZZ
@given(
    reviews=st.lists(JSON_LINE.map(lambda s: s.replace("'", '"')), max_size=6)
    .map("\n".join)
    .map(str.encode)
    | RAW,
    meta=st.lists(JSON_LINE, max_size=6).map("\n".join).map(str.encode) | RAW,
)
def test_amazon_reader(tmp_path, reviews, meta):
    files = [write(tmp_path / "reviews.json", reviews), write(tmp_path / "meta.json", meta)]
    assert_named_error(lambda: read_amazon(*files), *files)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | CELL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CELL, inner, max_size=3),
    max_leaves=6,
)
REVIEW_2023 = st.fixed_dictionaries(
    {},
    optional={
        "user_id": CELL | JSON_VALUE,
        "parent_asin": CELL | JSON_VALUE,
        "timestamp": st.integers(-(2**70), 2**70) | JSON_VALUE,
        "rating": st.floats() | JSON_VALUE,
    },
)
META_2023 = st.fixed_dictionaries(
    {},
    optional={
        "parent_asin": CELL | JSON_VALUE,
        "title": CELL | JSON_VALUE,
        "features": st.lists(CELL, max_size=3) | JSON_VALUE,
        "description": st.lists(CELL, max_size=3) | JSON_VALUE,
        "categories": st.lists(CELL, max_size=3) | JSON_VALUE,
        "details": st.dictionaries(st.sampled_from(["Brand", "Manufacturer"]) | CELL, JSON_VALUE)
        | JSON_VALUE.map(str),
        "price": st.floats() | JSON_VALUE,
    },
)


def json_lines(record) -> st.SearchStrategy[bytes]:
    import json

    return st.lists(record.map(json.dumps), max_size=6).map("\n".join).map(str.encode) | RAW


@FUZZ
@given(reviews=json_lines(REVIEW_2023), meta=json_lines(META_2023))
def test_amazon2023_reader(tmp_path, reviews, meta):
    files = [write(tmp_path / "reviews.jsonl", reviews), write(tmp_path / "meta.jsonl", meta)]
    assert_named_error(lambda: read_amazon2023(*files), *files)


@FUZZ
@given(
    inter=body(["user", "item", "ts", "rating"], ","),
    items=body(["item", "title", "brand"], ","),
)
def test_table_reader(tmp_path, inter, items):
    files = [write(tmp_path / "inter.csv", inter), write(tmp_path / "items.csv", items)]
    assert_named_error(lambda: read_generic(*files, "user", "item", "ts"), *files)


@FUZZ
@given(
    inter=body(RECBOLE_INTER, "\t"),
    items=body(["item_id:token", "title:token_seq", "year:token", "genres:token_seq"], "\t"),
)
def test_ingest_stage_publishes_whole_or_nothing(tmp_path_factory, inter, items):
    """Through the real ingest stage and store: an error leaves no artifact, no temporary."""
    from pipeline.runner import run_pipeline

    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data" / "ml-100k"
    data.mkdir(parents=True)
    files = [write(data / "ml-100k.inter", inter), write(data / "ml-100k.item", items)]
    store = root / "artifacts"
    cfg = load_config("ml-100k", {"paths.artifacts": str(store)}, root / "data")
    try:
        ctx = run_pipeline(cfg, ["ingest"], progress=False)
    except PipelineError as exc:
        assert any(f.name in str(exc) for f in files), str(exc)
        assert not any((store / "ingest").glob("*")) if (store / "ingest").is_dir() else True
    else:
        assert ctx.results["ingest"].artifact.manifest["rows"]["interactions"] >= 0
    publish = store / "_work" / "publish"
    assert not publish.is_dir() or list(publish.iterdir()) == []


FIELDS = [
    "model.d", "model.heads", "model.dropout", "model.name", "train.lr", "train.epochs",
    "train.patience", "evaluate.ks", "train.negatives", "train.weight_decay", "data.name",
    "data.interactions", "data.min_seq_len", "pretrain.steps", "pretrain.temperature",
    "init.method", "encode.template", "paths.artifacts", "model.init_std", "train.seed",
]  # fmt: skip
VALUE = st.one_of(
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.lists(st.integers(-5, 50), max_size=4),
    st.sampled_from(["../../etc/passwd", "nan", "sasrec", "fame", "random", ""]),
)


@FUZZ
@given(over=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=15), VALUE, max_size=4))
def test_config_loader_on_generated_overrides(over):
    try:
        load_config("ml-100k", over)
    except ConfigError as exc:
        msg = str(exc)
        assert "ml-100k" in msg or any(k.split(".")[-1] in msg for k in over), msg


@FUZZ
@given(text=st.text(max_size=300))
def test_config_loader_on_generated_files(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf8", errors="surrogatepass")
    with pytest.raises(ConfigError) as err:
        load_config(path)  # random text is never a complete config
    assert "fuzz.toml" in str(err.value)
