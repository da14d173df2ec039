"""S3-Rec with an item-text table: the join on the S3-Rec id, its errors, the attribute-position
facets derived from the attribute lists, and the text actually reaching the trained model."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.artifacts import facet_labels, initial_vectors, text_vectors, trained_model
from pipeline.config import ConfigError, load_config
from pipeline.errors import IngestError
from pipeline.runner import plan_keys, run_pipeline
from pipeline.stages.encode import item_texts
from sources.readers import read_s3rec, split_attributes

# a hand-written attribute file: brand ids 10, 11, 12 only ever come first; 4 comes first in
# item 6 but later in items 3 and 4, so it is a category, not a brand
ATTRS = {
    "1": [10, 1, 2, 3],
    "2": [11, 1, 2],
    "3": [1, 4],
    "4": [10, 4, 5],
    "5": [1, 2, 6],
    "6": [4],
    "7": [12],
}
BRAND = {1: 10, 2: 11, 3: None, 4: 10, 5: None, 6: None, 7: 12}
CATEGORIES = {1: [1, 2, 3], 2: [1, 2], 3: [1, 4], 4: [4, 5], 5: [1, 2, 6], 6: [4], 7: []}
TITLES = {1: "red nail polish", 2: "blue nail polish", 3: "", 4: "face cream", 5: "eye shadow",
          6: "lip balm", 7: "hair brush"}  # fmt: skip


def _dataset(root, text_rows=None, suffix=".tsv"):
    """A data dir with ``x/X.txt`` (users walk items 1..7), attributes and a text table."""
    (root / "x").mkdir(parents=True, exist_ok=True)
    (root / "text").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = [" ".join(map(str, [u, *rng.integers(1, 8, size=6)])) for u in range(1, 41)]
    lines.append("41 1 2 3 4 5 6 7")  # every item named
    (root / "x" / "X.txt").write_text("\n".join(lines) + "\n")
    (root / "x" / "X_item2attributes.json").write_text(json.dumps(ATTRS))
    rows = text_rows if text_rows is not None else [(i, f"A{i}", t) for i, t in TITLES.items()]
    path = root / "text" / f"X_items{suffix}"
    if suffix == ".parquet":
        ids, asins, titles = zip(*rows, strict=True)
        pq.write_table(pa.table({"item_id": list(ids), "asin": asins, "title": titles}), path)
    else:
        sep = "\t" if suffix == ".tsv" else ","
        body = [sep.join(["item_id", "asin", "title"])] + [sep.join(map(str, r)) for r in rows]
        path.write_text("\n".join(body) + "\n")
    return root / "x" / "X.txt", root / "x" / "X_item2attributes.json", path


def _config(root, artifacts, **over):
    toml = root / "x.toml"
    toml.write_text(
        """
[data]
name = "x"
format = "s3rec"
dir = "x"
interactions = "X.txt"
items = "X_item2attributes.json"
item_text = "../text/X_items.tsv"

[model]
d = 24
heads = 3
max_len = 8

[train]
epochs = 1
batch_size = 16

[encode]
template = "{title}[. brand {brand}][. categories {categories}]"

[[facets]]
name = "brand"
field = "brand"

[[facets]]
name = "category"
field = "categories"
kind = "level"
level = 0

[[facets]]
name = "leaf"
field = "categories"
kind = "last"

[pretrain]
steps = 12
labels_per_batch = 2
items_per_label = 2

[init]
method = "facet_pretrain"
"""
    )
    return load_config(toml, {"paths.artifacts": str(artifacts), **over}, root)


def test_split_attributes_known_answer():
    table = pa.table(
        {
            "item": [str(i) for i in ATTRS],
            "attributes": pa.array(list(ATTRS.values()), pa.list_(pa.int64())),
        }
    )
    out = split_attributes(table)
    assert out["brand"].to_pylist() == list(BRAND.values())
    assert out["categories"].to_pylist() == list(CATEGORIES.values())


def test_facets_from_attribute_positions(tmp_path):
    """brand / coarse category / leaf labels of the hand-written file, through real ingest."""
    _dataset(tmp_path)
    cfg = _config(tmp_path, tmp_path / "artifacts")
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    items = ctx.results["ingest"].artifact.table("items")
    ids = items["source_id"].to_pylist()
    labels = facet_labels(cfg, items)  # (H, n); a label held by one item only is missing
    expect = {
        # brand 10 on items 1 and 4; 11 and 12 once each -> missing
        "brand": {1: "10", 4: "10"},
        # level 0 of categories: 1 on items 1, 2, 3, 5; 4 on items 4, 6
        "category": {1: "1", 2: "1", 3: "1", 5: "1", 4: "4", 6: "4"},
        # last category: 4 on items 3 and 6; 3, 2, 5, 6 once each
        "leaf": {3: "4", 6: "4"},
    }
    for h, name in enumerate(["brand", "category", "leaf"]):
        got = {int(i): int(c) for i, c in zip(ids, labels[h], strict=True) if c >= 0}
        want = expect[name]
        assert set(got) == set(want), name
        # items share a code exactly when they share the expected label
        for a in want:
            for b in want:
                assert (got[a] == got[b]) == (want[a] == want[b]), (name, a, b)


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".parquet"])
def test_text_table_join(tmp_path, suffix):
    seq, attrs, text = _dataset(tmp_path, suffix=suffix)
    raw = read_s3rec(seq, attrs, text)
    rows = {r["item"]: r for r in raw.items.to_pylist()}
    assert set(rows) == {str(i) for i in ATTRS}
    assert rows["1"]["title"] == "red nail polish" and rows["1"]["asin"] == "A1"
    assert rows["1"]["brand"] == 10 and rows["1"]["categories"] == [1, 2, 3]
    assert rows["3"]["title"] is None  # an empty title is a missing value, never ""
    texts = dict(zip(*item_texts(pa.Table.from_pylist(
        [{"item_id": int(k), **v} for k, v in rows.items()]), "{title}"), strict=True))  # fmt: skip
    assert 3 not in texts and texts[1] == "red nail polish"  # no text: not encoded as ""


def test_items_missing_from_the_text_table_have_no_title(tmp_path):
    rows = [(i, f"A{i}", t) for i, t in TITLES.items() if i != 5]
    seq, attrs, text = _dataset(tmp_path, rows)
    items = {r["item"]: r for r in read_s3rec(seq, attrs, text).items.to_pylist()}
    assert items["5"]["title"] is None and items["5"]["brand"] is None
    assert items["5"]["categories"] == [1, 2, 6]


@pytest.mark.parametrize(
    ("rows", "line", "msg"),
    [
        ([(1, "a", "x"), (2, "b", "y"), (99, "c", "z")], 4, r"1 item\(s\) the interactions never"),
        ([(1, "a", "x"), ("7b", "b", "y")], 3, "non-integer item id '7b'"),
        ([(1, "a", "x"), (2, "b", "y"), (1, "c", "z")], 4, "item 1 is described twice"),
    ],
)
def test_text_table_errors_name_file_and_line(tmp_path, rows, line, msg):
    seq, attrs, text = _dataset(tmp_path, rows)
    with pytest.raises(IngestError, match=msg) as exc:
        read_s3rec(seq, attrs, text)
    assert exc.value.file == str(text) and exc.value.line == line
    assert exc.value.field == "item_id"


def test_text_table_needs_item_id_and_may_not_shadow_derived_fields(tmp_path):
    seq, attrs, text = _dataset(tmp_path)
    text.write_text("id\ttitle\n1\tx\n")
    with pytest.raises(IngestError, match="missing column"):
        read_s3rec(seq, attrs, text)
    text.write_text("item_id\tbrand\n1\tnyx\n")
    with pytest.raises(IngestError, match=r"brand.*clash"):
        read_s3rec(seq, attrs, text)


def test_item_text_stays_inside_the_data_dir(tmp_path):
    _dataset(tmp_path)
    cfg = _config(tmp_path, tmp_path / "a", **{"data.item_text": "../../../etc/passwd"})
    with pytest.raises(ConfigError, match="outside the dataset folder"):
        plan_keys(cfg)


def test_item_text_key_only_when_set(tmp_path):
    """Switching the table off gives the key an ID-only config always had."""
    _dataset(tmp_path)
    with_text = _config(tmp_path, tmp_path / "a")
    without = _config(tmp_path, tmp_path / "a", **{"data.item_text": ""})
    assert without.data.item_text is None
    assert plan_keys(with_text)["ingest"] != plan_keys(without)["ingest"]
    from pipeline.stages.ingest import key_config

    assert "item_text" not in key_config(without)["data"]


@pytest.mark.parametrize("method", ["text", "facet_pretrain"])
def test_train_starts_from_the_text_vectors(tmp_path, method):
    """With E frozen, the trained checkpoint's item table is exactly the initial table built
    from the encoder's vectors: fails if train ignored them (or random init leaked in)."""
    from pretrain.train import plain_projection

    _dataset(tmp_path)
    over = {"init.method": method, "init.freeze": True}
    ctx = run_pipeline(_config(tmp_path, tmp_path / "a", **over), progress=False)
    cfg = ctx.config
    E = _trained_table(ctx)
    ids, want = initial_vectors(ctx.results["pretrain"].artifact)  # both come from pretrain
    if method == "text":  # ... which for init=text is the plain PCA of the encoder's vectors
        text_ids, text = text_vectors(ctx.results["encode"].artifact)
        pca = plain_projection(text, cfg.model.d, cfg.model.init_std, cfg.train.seed)
        np.testing.assert_array_equal(text_ids, ids)
        np.testing.assert_allclose(want, pca, rtol=0, atol=1e-7)
        assert "facet_report" not in ctx.results["pretrain"].artifact.rows
    assert len(ids) == 7  # item 3 has no title, but its brand/category text is encoded
    np.testing.assert_allclose(E[ids], want, rtol=0, atol=1e-6)
    assert E[ids].std() == pytest.approx(cfg.model.init_std, rel=0.05)
    random = run_pipeline(_config(tmp_path, tmp_path / "a", **{"init.method": "random"}),
                          progress=False)  # fmt: skip
    assert not np.allclose(_trained_table(random)[ids], want, atol=1e-3)


def _trained_table(ctx) -> np.ndarray:
    model = trained_model(ctx.results["train"].artifact)
    return model.item_emb.weight.detach().numpy()


def test_duplicate_reported_at_its_first_repeat(tmp_path):
    rows = [(5, "a", "x"), (2, "b", "y"), (2, "c", "z"), (5, "d", "w")]
    seq, attrs, text = _dataset(tmp_path, rows)
    with pytest.raises(IngestError, match="item 2 is described twice") as exc:
        read_s3rec(seq, attrs, text)
    assert exc.value.line == 4


def test_slice_scale_gives_every_head_slice_the_init_std(tmp_path):
    from fame.model import SeqRecModel
    from pipeline.stages.train import initial_table

    _dataset(tmp_path)
    cfg = _config(tmp_path, tmp_path / "a", **{"init.method": "text"})
    ctx = run_pipeline(cfg, ["ingest", "encode", "pretrain"], progress=False)
    inputs = {s: r.artifact for s, r in ctx.results.items()}
    ids = inputs["pretrain"].table("item_embeddings")["item_id"].to_numpy()
    model = SeqRecModel(cfg.model, 7)
    table = initial_table(cfg, inputs, model).numpy()[ids].reshape(len(ids), 3, -1)
    per_slice = table.std(axis=(0, 2))
    assert per_slice[0] > per_slice[-1]  # PCA: most variance in the first slice
    sliced = _config(tmp_path, tmp_path / "a", **{"init.method": "text", "init.scale": "slice"})
    table = initial_table(sliced, inputs, model).numpy()[ids].reshape(len(ids), 3, -1)
    np.testing.assert_allclose(table.std(axis=(0, 2)), cfg.model.init_std, rtol=1e-4)
    assert plan_keys(sliced)["train"] != plan_keys(cfg)["train"]


def test_gain_scales_the_random_table_too(tmp_path):
    """init.gain under random init: the model's own table times the gain (the control that
    tells a gain's effect from the text's); at gain 1 the model's table is left as it is."""
    import torch

    from fame.model import SeqRecModel
    from pipeline.stages.train import initial_table

    _dataset(tmp_path)
    cfg = _config(tmp_path, tmp_path / "a", **{"init.method": "random"})
    torch.manual_seed(0)
    model = SeqRecModel(cfg.model, 7)
    own = model.item_embeddings().detach().clone()
    assert initial_table(cfg, {}, model) is None
    gained = _config(tmp_path, tmp_path / "a", **{"init.method": "random", "init.gain": 3.0})
    table = initial_table(gained, {}, model)
    torch.testing.assert_close(table, 3.0 * own, rtol=0, atol=0)
    assert table[1:].std().item() == pytest.approx(3.0 * cfg.model.init_std, rel=0.2)
    assert plan_keys(gained)["train"] != plan_keys(cfg)["train"]


def test_gain_multiplies_the_text_table_once(tmp_path):
    """init.gain under text init: every row (text rows and the random rows of items without
    text) times the gain, directions kept; the pretrain stage's table is at gain 1."""
    import torch

    from fame.model import SeqRecModel
    from pipeline.stages.train import initial_table

    _dataset(tmp_path)
    cfg = _config(tmp_path, tmp_path / "a", **{"init.method": "text"})
    ctx = run_pipeline(cfg, ["ingest", "encode", "pretrain"], progress=False)
    inputs = {s: r.artifact for s, r in ctx.results.items()}
    model = SeqRecModel(cfg.model, 7)
    one = initial_table(cfg, inputs, model)
    gained = _config(tmp_path, tmp_path / "a", **{"init.method": "text", "init.gain": 5.0})
    five = initial_table(gained, inputs, model)
    torch.testing.assert_close(five, one * 5.0, rtol=0, atol=0)
    assert torch.count_nonzero(five[0]) == 0
    ids, vec = initial_vectors(inputs["pretrain"])
    np.testing.assert_allclose(five[ids].numpy(), vec * 5.0, rtol=1e-6)


def test_encode_cache_holding_none_of_the_texts(tmp_path):
    """A second dataset's first encode finds a cache (of another dataset's texts) with none of
    its texts: every text is encoded, nothing crashes (seen on Sports after Beauty)."""
    import numpy as np

    from pipeline.stages.encode import EmbeddingCache
    from storage.vectors import from_column, to_column

    cache = EmbeddingCache(tmp_path, "enc")
    cache.add(["a" * 64], np.ones((1, 4), dtype=np.float32))
    assert cache.lookup(["b" * 64]) == {}
    assert set(cache.lookup(["a" * 64, "b" * 64])) == {"a" * 64}
    assert from_column(to_column(np.zeros((0, 4)))).shape == (0, 4)
