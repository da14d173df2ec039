"""The Amazon Reviews 2023 reader (``data.format = "amazon2023"``) and ``fame data fetch
amazon2023``: a fixture in the 2023 schema, written here, ingests through the real pipeline to
what a brute-force reading of the same records says; JSONL and Parquet give the same rows; bad
lines are named errors; the fetch runs against a loopback HTTP server and leaves nothing
behind when it fails."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import Route, serve
from typer.testing import CliRunner

from app.cli import app
from pipeline.config import load_config
from pipeline.errors import IngestError, PipelineError
from pipeline.runner import run_pipeline
from pretrain.text import render_texts
from sources import amazon2023
from sources.amazon2023 import read_amazon2023, read_meta, read_reviews

REPO = Path(__file__).resolve().parents[2]
STORES = ["Glossier", "Nivea", "Olay", None]


def fixture_records(seed: int = 0, users: int = 40, items: int = 30, reviews: int = 400):
    """(reviews, metadata) in the 2023 schema, as the Hub's JSONL lines hold them."""
    rng = random.Random(seed)
    meta = []
    for i in range(items):
        details = {"Brand": f"brand{i % 5}"} if i % 3 else {"Manufacturer": f"maker{i % 2}"}
        if i == 7:
            details = {}
        meta.append(
            {
                "parent_asin": f"B{i:05d}",
                "main_category": "All Beauty",
                "title": f"item {i} cream" if i != 11 else None,
                "features": [f"feature {i}a", f"feature {i}b"] if i % 4 else [],
                "description": [f"Paragraph one of {i}.", f"Paragraph two of {i}."]
                if i % 2
                else [],
                "categories": ["Beauty", f"Skin {i % 3}"] if i % 5 else [],
                "store": STORES[i % 4],
                "details": details if i % 6 else json.dumps(details),  # object or JSON string
                "price": [12.5, "None", None, 7][i % 4],
                "images": [{"large": "https://example.invalid/x.jpg"}],  # ignored
            }
        )
    rows = []
    for _ in range(reviews):
        rows.append(
            {
                "rating": float(rng.randint(1, 5)),
                "title": "great",
                "text": "a review text that the reader ignores",
                "images": [],
                "asin": "X",
                "parent_asin": f"B{rng.randrange(items):05d}",
                "user_id": f"U{rng.randrange(users):03d}",
                "timestamp": 1_600_000_000_000 + rng.randrange(10**9),
                "helpful_vote": 0,
                "verified_purchase": True,
            }
        )
    return rows, meta


def write_jsonl(path: Path, records: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        path = path.with_suffix(path.suffix + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _config(root: Path, reviews: str, meta: str, **over):
    toml = root / "a23.toml"
    toml.write_text(
        f"""
[data]
name = "a23"
format = "amazon2023"
dir = "a23"
interactions = "{reviews}"
items = "{meta}"
dedup = "first"

[model]
d = 16
heads = 2
max_len = 8

[train]
epochs = 1

[encode]
template = "{{title}}[. Features: {{features}}][. {{description}}]"

[[facets]]
name = "store"
field = "store"

[[facets]]
name = "leaf"
field = "categories"
kind = "last"

[init]
method = "random"
"""
    )
    return load_config(toml, {"paths.artifacts": str(root / "art"), **over}, root)


def _brute(reviews: list[dict]) -> tuple[set, set, int]:
    """Users (>= 3 distinct items), their items and interaction count after dedup = first."""
    pairs: dict[tuple[str, str], int] = {}
    for r in sorted(reviews, key=lambda r: r["timestamp"]):
        pairs.setdefault((r["user_id"], r["parent_asin"]), r["timestamp"])
    by_user: dict[str, list[str]] = {}
    for u, i in pairs:
        by_user.setdefault(u, []).append(i)
    kept = {u: v for u, v in by_user.items() if len(v) >= 3}
    return set(kept), {i for v in kept.values() for i in v}, sum(map(len, kept.values()))


def _ingest(tmp_path: Path, reviews: str, meta: str, sub: str = "a"):
    cfg = _config(tmp_path, reviews, meta, **{"paths.artifacts": str(tmp_path / sub)})
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    return ctx.results["ingest"].artifact


@pytest.fixture
def dataset(tmp_path):
    reviews, meta = fixture_records()
    d = tmp_path / "a23"
    d.mkdir()
    write_jsonl(d / "reviews.jsonl", reviews)
    write_jsonl(d / "meta.jsonl", meta)
    return tmp_path, reviews, meta


def test_ingest_matches_a_brute_force_reading(dataset):
    root, reviews, meta = dataset
    art = _ingest(root, "reviews.jsonl", "meta.jsonl")
    items, seqs = art.table("items"), art.table("sequences")
    users, item_ids, n = _brute(reviews)
    assert set(seqs["source_user_id"].to_pylist()) == users
    assert set(items["source_id"].to_pylist()) == item_ids
    lengths = [len(t) + 2 for t in seqs["train_items"].to_pylist()]  # + valid + test
    assert sum(lengths) == n
    by_asin = {m["parent_asin"]: m for m in meta}
    for row in items.to_pylist():
        m = by_asin[row["source_id"]]
        assert row["title"] == m["title"]
        assert row["features"] == ("; ".join(m["features"]) or None)
        assert row["description"] == (" ".join(m["description"]) or None)
        assert row["categories"] == (m["categories"] or None)
        assert row["store"] == m["store"]
        details = m["details"] if isinstance(m["details"], dict) else json.loads(m["details"])
        assert row["brand"] == details.get("Brand", details.get("Manufacturer"))
        assert row["price"] == (float(m["price"]) if isinstance(m["price"], int | float) else None)


def test_jsonl_gzip_and_parquet_give_the_same_rows(dataset):
    root, reviews, meta = dataset
    d = root / "a23"
    write_jsonl(d / "r.jsonl", reviews, gz=True)
    pq.write_table(
        pa.Table.from_pylist(
            [{k: r[k] for k in ("user_id", "parent_asin", "rating", "timestamp")} for r in reviews]
        ),
        d / "r.parquet",
    )
    hub_meta = [
        {
            **m,
            "details": json.dumps(m["details"]) if isinstance(m["details"], dict) else m["details"],
            "price": str(m["price"]),
        }
        for m in meta
    ]
    pq.write_table(
        pa.Table.from_pylist([{k: v for k, v in m.items() if k != "images"} for m in hub_meta]),
        d / "m.parquet",
    )
    base = _ingest(root, "reviews.jsonl", "meta.jsonl", "a")
    for sub, (r, m) in {"b": ("r.jsonl.gz", "meta.jsonl"), "c": ("r.parquet", "m.parquet")}.items():
        other = _ingest(root, r, m, sub)
        for name in ("items", "sequences"):
            assert other.table(name).to_pylist() == base.table(name).to_pylist(), (sub, name)


def test_facets_and_template_render_the_description(dataset):
    """The template with features and description renders as written by hand; the store and
    leaf facets label the items that have them."""
    root, _, meta = dataset
    items = read_meta(root / "a23" / "meta.jsonl")
    row = items.filter(pa.compute.equal(items["item"], "B00005")).to_pylist()[0]
    template = "{title}[. Features: {features}][. {description}]"
    assert render_texts([row], template) == [
        "item 5 cream. Features: feature 5a; feature 5b. Paragraph one of 5. Paragraph two of 5."
    ]
    bare = items.filter(pa.compute.equal(items["item"], "B00004")).to_pylist()[0]
    assert render_texts([bare], template) == ["item 4 cream"]  # no features, no description


@pytest.mark.parametrize(
    ("which", "line", "want", "field", "message"),
    [
        (
            "reviews",
            '{"user_id": "U1", "parent_asin": "B1", "rating": 5, "timestamp": "soon"}',
            3,
            "timestamp",
            "not an integer",
        ),
        (
            "reviews",
            '{"user_id": "U1", "parent_asin": "B1", "rating": 5',
            3,
            None,
            "not a JSON object",
        ),
        (
            "reviews",
            '{"user_id": "U1", "rating": 5, "timestamp": 1}',
            3,
            "parent_asin",
            "missing field",
        ),
        ("meta", '{"title": "no id"}', 3, "parent_asin", "missing field"),
        (
            "meta",
            '{"parent_asin": "B9", "features": "x", "details": "{broken"}',
            3,
            "details",
            "not a JSON object",
        ),
        ("meta", '{"parent_asin": "B9", "features": [1, 2]}', 3, "features", "list of strings"),
        ("meta", '{"parent_asin": "B00001"}', 3, "parent_asin", "described twice"),
    ],
    ids=[
        "timestamp-text",
        "truncated-json",
        "no-item",
        "meta-no-id",
        "bad-details",
        "bad-features",
        "duplicate",
    ],
)
def test_bad_lines_are_named_and_nothing_is_published(dataset, which, line, want, field, message):
    root, reviews, meta = dataset
    d = root / "a23"
    good = reviews[:2] if which == "reviews" else meta[:2]
    path = d / f"bad-{which}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + line + "\n")
    with pytest.raises(IngestError, match=message) as exc:
        (read_reviews if which == "reviews" else read_meta)(path)
    assert (exc.value.line, exc.value.field) == (want, field)
    args = (
        ("bad-reviews.jsonl", "meta.jsonl")
        if which == "reviews"
        else ("reviews.jsonl", "bad-meta.jsonl")
    )
    with pytest.raises(IngestError, match=message):
        _ingest(root, *args, sub="bad")
    assert not list((root / "bad").glob("ingest/*/*.parquet"))


def test_parquet_timestamp_that_is_not_a_number(tmp_path):
    path = tmp_path / "r.parquet"
    pq.write_table(
        pa.table({"user_id": ["u"], "parent_asin": ["i"], "rating": [1.0], "timestamp": ["x"]}),
        path,
    )
    with pytest.raises(IngestError, match="not a number") as exc:
        read_reviews(path)
    assert exc.value.field == "timestamp"


def _routes(reviews: list[dict], meta: list[dict], category: str = "All_Beauty", **cut) -> dict:
    files = amazon2023.hub_urls(category, "")
    bodies = {
        amazon2023.REVIEWS: "".join(json.dumps(r) + "\n" for r in reviews).encode(),
        amazon2023.META: "".join(json.dumps(m) + "\n" for m in meta).encode(),
    }
    return {files[k]: Route(b, cut=cut.get(k)) for k, b in bodies.items()}


def test_fetch_writes_the_layout_the_config_reads(tmp_path):
    reviews, meta = fixture_records()
    dest = tmp_path / "data"
    with serve(_routes(reviews, meta)) as (base, _):
        res = CliRunner().invoke(
            app,
            [
                "data",
                "fetch",
                "amazon2023",
                "--category",
                "All_Beauty",
                "--dest",
                str(dest),
                "--url",
                base,
            ],
        )
    assert res.exit_code == 0, res.output
    out = dest / "amazon2023-All_Beauty"
    assert sorted(p.name for p in out.iterdir()) == ["meta.parquet", "reviews.parquet"]
    raw = read_amazon2023(out / "reviews.parquet", out / "meta.parquet")
    assert raw.interactions.num_rows == len(reviews)
    assert raw.items.num_rows == len(meta)
    # the shipped config reads it (5-core shrinks this small fixture, so lower the cores)
    cfg = load_config(
        REPO / "configs" / "amazon2023-all-beauty.toml",
        {
            "paths.artifacts": str(tmp_path / "art"),
            "paths.data_dir": str(dest),
            "data.user_core": 2,
            "data.item_core": 2,
        },
        dest,
    )
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    assert ctx.results["ingest"].rows["interactions"] > 0


@pytest.mark.parametrize(
    ("category", "routes", "message"),
    [
        ("Nope", "good", "category 'Nope' not found"),
        ("All_Beauty", "truncated", "failed"),
        ("All_Beauty", "bad-line", "not a JSON object"),
        ("../etc", "good", "expected a name"),
    ],
    ids=["unknown-category", "truncated", "bad-line", "unsafe-name"],
)
def test_failed_fetch_leaves_nothing(tmp_path, category, routes, message):
    reviews, meta = fixture_records()
    if routes == "truncated":
        table = _routes(reviews, meta, **{amazon2023.META: 50})
    elif routes == "bad-line":
        table = _routes(reviews, meta)
        path = amazon2023.hub_urls("All_Beauty", "")[amazon2023.META]
        table[path] = Route(table[path].body + b"{oops\n")
    else:
        table = _routes(reviews, meta)
    dest = tmp_path / "data"
    with serve(table) as (base, _), pytest.raises(PipelineError, match=message):
        amazon2023.fetch(category, dest, base, progress=False, timeout=10)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_cli_needs_a_category(tmp_path):
    res = CliRunner().invoke(app, ["data", "fetch", "amazon2023", "--dest", str(tmp_path)])
    assert res.exit_code != 0
    assert "--category" in res.output


def test_encode_says_how_many_texts_were_cut(dataset, caplog):
    """The real encoder over the fixture's title + features + description: at max_length 4
    every text is cut (each has more than 2 tokens besides [CLS] and [SEP]); at 256 none is,
    and nothing is logged."""
    import logging

    root, _, _ = dataset
    caplog.set_level(logging.INFO, logger="fame")
    for sub, length in (("e4", 4), ("e256", 256)):
        cfg = _config(
            root,
            "reviews.jsonl",
            "meta.jsonl",
            **{"paths.artifacts": str(root / sub), "encode.max_length": length},
        )
        caplog.clear()
        ctx = run_pipeline(cfg, ["ingest", "encode"], progress=False)
        art = ctx.results["encode"].artifact
        n = art.table("text_embeddings").num_rows
        assert art.manifest["truncated"] == (n if length == 4 else 0)
        cut = [
            r.getMessage()
            for r in caplog.records
            if "longer than the encoder's max length" in r.getMessage()
        ]
        if length == 4:
            assert cut == [
                f"encode: {n} of {n} texts are longer than the encoder's max length (4 tokens) and are cut there (encode.max_length; the template decides what comes first)"
            ]
        else:
            assert cut == []


def test_fetched_category_runs_end_to_end_with_either_template(tmp_path):
    """Fixture-scale stand-in for the title-vs-description experiment (no Hub here): fetched
    from a loopback server, the shipped config runs every stage for FAME + facet pre-training
    and for SASRec + text init, with the description template and with titles only."""
    import numpy as np

    reviews, meta = fixture_records(users=60, reviews=900)
    dest = tmp_path / "data"
    with serve(_routes(reviews, meta)) as (base, _):
        amazon2023.fetch("All_Beauty", dest, base, progress=False, timeout=10)
    small = {
        "paths.artifacts": str(tmp_path / "art"),
        "paths.data_dir": str(dest),
        "data.user_core": 2,
        "data.item_core": 2,
        "model.d": 16,
        "model.max_len": 8,
        "train.epochs": 1,
        "pretrain.steps": 10,
    }
    config = REPO / "configs" / "amazon2023-all-beauty.toml"
    title_only = {"encode.template": "{title}"}
    runs = {
        (model, template): run_pipeline(
            load_config(config, {**small, **extra, **tmpl}, dest), progress=False
        )
        for model, extra in (
            ("fame", {}),
            ("sasrec", {"model.name": "sasrec", "init.method": "text"}),
        )
        for template, tmpl in (("full", {}), ("title", title_only))
    }
    for ctx in runs.values():
        assert all(r.key for r in ctx.results.values()) and "evaluate" in ctx.results
    fame_full, fame_title = runs["fame", "full"], runs["fame", "title"]
    assert fame_full.results["encode"].key != fame_title.results["encode"].key
    assert runs["sasrec", "full"].results["encode"].key == fame_full.results["encode"].key
    facets = fame_full.results["pretrain"].artifact.table("facet_report")
    assert set(facets["facet"].to_pylist()) == {"store", "price"}

    def encoded(ctx):  # item_id -> (text, vector); one ingest, so the ids agree
        t = ctx.results["encode"].artifact.table("text_embeddings")
        return {
            i: (text, np.asarray(v))
            for i, text, v in zip(
                t["item_id"].to_pylist(),
                t["text"].to_pylist(),
                t["vector"].to_pylist(),
                strict=True,
            )
        }

    full, title = encoded(fame_full), encoded(fame_title)
    same = [i for i in title if full[i][0] == title[i][0]]
    longer = [i for i in title if full[i][0] != title[i][0]]
    assert same and longer  # items with neither features nor description, and with them
    for i in same:  # the same text is the same vector (the cache); a longer one moves it
        assert np.array_equal(full[i][1], title[i][1])
    for i in longer:
        assert full[i][0].startswith(title[i][0] + ". ")
        assert not np.allclose(full[i][1], title[i][1], atol=1e-3)
    assert set(full) - set(title)  # an item with no title has text from its features alone
