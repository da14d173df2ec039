"""The synthetic dataset: reproducible bytes, sizes, text, planted structure, pipeline use.

Needs no data folder: everything is generated under tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli import app
from pipeline.config import ConfigError, SynthConfig, load_config
from pipeline.runner import plan_keys, run_pipeline
from sources import synth
from sources.synth_items import vocabulary
from storage import query

SMALL = {"users": 300, "items": 200, "interactions": 4000}
FACETS = ("category", "subcategory", "brand", "price_band", "colour")


def _files(out: Path) -> tuple[Path, Path]:
    return out / synth.INTERACTIONS_FILE, out / synth.ITEMS_FILE


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.generate(SynthConfig(**SMALL), out)
    return out


def _synthetic_config(root: Path, **synth_params):
    over = {"paths.artifacts": str(root)}
    over.update({f"data.synth.{k}": v for k, v in synth_params.items()})
    return load_config("synthetic", over)


# -- the files ----------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    synth.generate(SynthConfig(**SMALL), tmp_path / "again")
    synth.generate(SynthConfig(**SMALL, seed=1), tmp_path / "other")
    for ours, again, other in zip(
        _files(small), _files(tmp_path / "again"), _files(tmp_path / "other"), strict=True
    ):
        assert ours.read_bytes() == again.read_bytes()
        assert ours.read_bytes() != other.read_bytes()


def test_sizes_lengths_and_timestamps(small):
    inter, items = (pq.read_table(f) for f in _files(small))
    assert items.num_rows == SMALL["items"]
    assert items["item_id"].to_pylist() == list(range(1, SMALL["items"] + 1))
    user, item, ts = (inter[c].to_numpy() for c in ("user_id", "item_id", "timestamp"))
    assert inter.schema.types == [inter.schema.field("user_id").type] * 3  # all int64
    assert abs(len(user) - SMALL["interactions"]) <= 0.01 * SMALL["interactions"]
    assert np.unique(user).tolist() == list(range(1, SMALL["users"] + 1))
    assert item.min() >= 1 and item.max() <= SMALL["items"]
    lengths = np.bincount(user)[1:]
    assert lengths.min() >= SynthConfig().min_len and lengths.max() <= SynthConfig().max_len
    assert (np.diff(user) >= 0).all()  # grouped by user
    same_user = np.diff(user) == 0
    assert (np.diff(ts)[same_user] > 0).all()  # strictly increasing within a user


def test_descriptions_mention_the_facets(small):
    items = pq.read_table(_files(small)[1]).to_pylist()
    vocab = vocabulary(SynthConfig(**SMALL))
    assert all(row["description"] and row["title"] for row in items)
    for facet in FACETS:
        said = np.mean(
            [any(word in row["description"] for word in vocab[facet][row[facet]]) for row in items]
        )
        assert said > 0.8, (facet, said)  # each clause is left out with probability 0.1


def test_bad_parameters_name_the_field():
    with pytest.raises(ValidationError, match="interactions = 10 must lie in"):
        SynthConfig(users=10, interactions=10)
    with pytest.raises(ValidationError, match="users"):
        SynthConfig(users=0)
    with pytest.raises(ConfigError, match="data.synth: only allowed with data.format"):
        load_config("ml-100k", {"data.synth.users": 500})
    with pytest.raises(ConfigError, match="data.interactions: not used by data.format"):
        load_config("synthetic", {"data.interactions": "x.csv"})
    with pytest.raises(ConfigError, match=r"data\.synth\.items"):
        load_config("synthetic", {"data.synth.items": "many"})


def test_a_failed_generation_leaves_no_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(synth, "user_chunk", boom)
    with pytest.raises(RuntimeError, match="killed"):
        synth.generate(SynthConfig(**SMALL), tmp_path)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary folder


# -- planted structure ----------------------------------------------------------------------------
def _hr_ndcg(scores: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    rank = (scores > scores[np.arange(len(target)), target][:, None]).sum(axis=1)
    hit = rank < 10
    return float(hit.mean()), float(np.where(hit, 1 / np.log2(rank + 2), 0).mean())


def test_subcategory_markov_beats_most_popular(tmp_path):
    """Next-item HR@10 and NDCG@10 on each user's last item: a first-order subcategory Markov
    chain (transition counts x popularity within the subcategory) against MostPop."""
    synth.generate(SynthConfig(), tmp_path)  # demo size
    inter, items = (pq.read_table(f) for f in _files(tmp_path))
    user, item = inter["user_id"].to_numpy(), inter["item_id"].to_numpy()
    _, sub = np.unique(items["subcategory"].to_numpy(zero_copy_only=False), return_inverse=True)
    sub = np.concatenate([[0], sub])  # indexed by item id
    last = np.concatenate([user[1:] != user[:-1], [True]])
    pairs = np.flatnonzero(~last[:-1] & ~last[1:])  # (i, i+1) inside a training prefix
    n_sub, n = sub.max() + 1, items.num_rows + 1
    counts = np.bincount(item[~last], minlength=n).astype(float)
    counts[0] = -1
    chain = np.zeros((n_sub, n_sub))
    np.add.at(chain, (sub[item[pairs]], sub[item[pairs + 1]]), 1)
    chain = (chain + 1e-3) / (chain + 1e-3).sum(axis=1, keepdims=True)
    within = counts / np.maximum(np.bincount(sub, weights=counts.clip(0), minlength=n_sub)[sub], 1)
    target, before = item[last], item[np.flatnonzero(last) - 1]
    markov = chain[sub[before]][:, sub] * within[None, :]
    markov[:, 0] = -1
    pop_hr, pop_ndcg = _hr_ndcg(np.broadcast_to(counts, markov.shape), target)
    markov_hr, markov_ndcg = _hr_ndcg(markov, target)
    assert markov_hr > 1.5 * pop_hr and markov_ndcg > 1.5 * pop_ndcg, (
        (markov_hr, pop_hr),
        (markov_ndcg, pop_ndcg),
    )


# -- through the pipeline ---------------------------------------------------------------------------
def test_ingest_generates_once_and_keys_follow_the_parameters(tmp_path):
    cfg = _synthetic_config(tmp_path, **SMALL)
    first = run_pipeline(cfg, ["ingest"], progress=False)
    _, rows = query(
        tmp_path,
        "select count(*), count(distinct category), count(distinct subcategory) from items",
    )
    n_items, n_categories, n_subcategories = rows[0]
    assert 0.9 * SMALL["items"] <= n_items <= SMALL["items"]  # those the interactions name
    assert (n_categories, n_subcategories) == (8, 32)
    _, rows = query(
        tmp_path,
        "select count(*) from items where description is null or brand is null or "
        "price_band is null or colour is null",
    )
    assert rows == [(0,)]
    _, rows = query(tmp_path, "select count(*) from interactions")
    assert rows == [(SMALL["interactions"],)]
    (cache,) = (tmp_path / "_cache" / "synth").iterdir()
    assert cache.name == synth.fingerprint(cfg.data.synth)
    # a regenerated cache (new mtimes) keeps the key; the artifact is reused
    for f in cache.iterdir():
        f.unlink()
    again = run_pipeline(cfg, ["ingest"], progress=False)
    assert again.results["ingest"].skipped
    assert again.results["ingest"].key == first.results["ingest"].key
    changed = _synthetic_config(tmp_path, **{**SMALL, "seed": 1})
    assert plan_keys(changed)["ingest"] != plan_keys(cfg)["ingest"]
    assert plan_keys(changed)["encode"] != plan_keys(cfg)["encode"]


def test_generated_files_read_as_a_table_dataset(small, tmp_path):
    """The files are a plain dataset too; a file format's key never gains a ``synth`` field."""
    from pipeline.stages.ingest import key_config

    over = {
        "paths.artifacts": str(tmp_path),
        "data.format": "table",
        "data.dir": str(small),
        "data.interactions": synth.INTERACTIONS_FILE,
        "data.items": synth.ITEMS_FILE,
        "data.synth": None,
    }
    cfg = load_config("synthetic", over)
    assert "synth" not in key_config(cfg)["data"]
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    assert ctx.results["ingest"].rows["items"] <= SMALL["items"]


@pytest.mark.slow
def test_facet_report_each_slice_holds_its_facet(tmp_path):
    """Real encoder, short pre-training: per facet, its own slice beats the raw text, the
    random projection and every other slice at kNN-predicting that facet's labels."""
    cfg = load_config(
        "synthetic",
        {
            "paths.artifacts": str(tmp_path),
            "data.synth.users": 300,
            "data.synth.items": 400,
            "data.synth.interactions": 3000,
            "pretrain.steps": 300,
        },
    )
    ctx = run_pipeline(cfg, ["ingest", "encode", "pretrain"], progress=False)
    _, rows = query(
        tmp_path,
        f"select facet, representation, accuracy from facet_report where run_id = '{ctx.run_id}'",
    )
    acc = {(f, r): a for f, r, a in rows}
    for facet in [f.name for f in cfg.facets]:
        own = acc[(facet, f"slice:{facet}")]
        rivals = {r: a for (f, r), a in acc.items() if f == facet and r != f"slice:{facet}"}
        assert all(own > a + 0.1 for a in rivals.values()), (facet, own, rivals)


# -- the command ----------------------------------------------------------------------------------
def test_cli_writes_the_files_and_names_bad_options(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app, ["data", "synth", "--out", str(tmp_path), "--users", "50", "--interactions", "400"]
    )
    assert res.exit_code == 0, res.output
    assert all(f.is_file() for f in _files(tmp_path)) and "50 users" in res.output
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--users", "0"])
    assert res.exit_code == 2 and "--users" in res.output
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "-p", "taste=-1"])
    assert res.exit_code == 2 and "--param taste" in res.output
