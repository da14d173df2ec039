"""The full chain ingest → encode → pretrain → train → evaluate on a real ml-100k slice,
with the real MiniLM encoder, a real store and catalog."""

import numpy as np
import pytest
from support import SMALL, popularity_ndcg10

from fame.metrics import metrics_from_ranks
from pipeline.artifacts import facet_labels, split_data, trained_model
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.runner import run_pipeline
from pretrain.facets import FacetError
from storage import query


def _check_alignment(ctx, rows) -> None:
    model = trained_model(ctx.results["train"].artifact)
    items = ctx.results["ingest"].artifact.table("items")
    labels = facet_labels(ctx.config, items)
    sub = model.item_sub_embeddings().detach().numpy()[:, items["item_id"].to_numpy()]
    names = [f.name for f in ctx.config.facets]
    k = ctx.config.pretrain.knn_k
    for head, facet, acc, _best in rows:
        f = names.index(facet)
        idx = np.flatnonzero(labels[f] >= 0)
        x = sub[head, idx] / np.linalg.norm(sub[head, idx], axis=1, keepdims=True)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        y = labels[f, idx]
        hits = 0
        for i, nb in enumerate(nearest):  # majority vote, ties to the nearest neighbour's label
            votes = np.bincount(y[nb], minlength=y.max() + 1)
            tied = np.flatnonzero(votes == votes.max())
            pred = next(lab for lab in y[nb] if lab in tied)
            hits += pred == y[i]
        assert acc == pytest.approx(hits / len(idx), abs=2 / len(idx))


@pytest.fixture
def slice_cfg(ml100k_slice, artifacts):
    def make(**over):
        return load_config(
            "ml-100k", {"paths.artifacts": str(artifacts), **SMALL, **over}, ml100k_slice
        )

    return make


def test_full_chain_then_cached(slice_cfg, artifacts):
    ctx = run_pipeline(slice_cfg(), progress=False)
    assert [r.skipped for r in ctx.results.values()] == [False] * 5
    users = ctx.results["ingest"].rows["sequences"]
    items = ctx.results["ingest"].rows["items"]
    _, rows = query(artifacts, "select count(*), count(distinct item_id) from text_embeddings")
    assert rows == [(items, items)]  # every ml-100k item has a title
    _, rows = query(
        artifacts, "select count(*), min(len(vector)), min(len(facet_decade)) from item_embeddings"
    )
    assert rows == [(items, 32, 8)]
    _, rows = query(artifacts, "select count(*) from facet_report")
    assert rows == [(4 * 6,)]  # 4 facets x (4 slices + text + random)
    _, rows = query(
        artifacts,
        f"""select split, protocol, count(*) from metrics
                                   where run_id = '{ctx.run_id}' group by all order by all""",
    )
    assert rows == [
        ("test", "exclude_history", 7),
        ("test", "keep_history", 7),
        ("valid", "exclude_history", 7),
        ("valid", "keep_history", 7),
    ]
    _, rows = query(
        artifacts, "select count(*), count(distinct user_id), min(rank) >= 1 from rankings"
    )
    assert rows == [(users * 4, users, True)]
    # metrics in the catalog are those of the stored ranks
    _, rows = query(
        artifacts,
        "select rank from rankings where split='test' and protocol='exclude_history' order by user_id",
    )
    ranks = np.array([r[0] for r in rows])
    _, rows = query(
        artifacts,
        "select value from metrics where split='test' and protocol='exclude_history' and metric='ndcg' and k=10",
    )
    assert rows[0][0] == pytest.approx(metrics_from_ranks(ranks)["ndcg@10"])

    # head_alignment: every head x facet once, one best per head, accuracies recomputed by a
    # brute-force n x n cosine kNN over e_v W_f^h of the stored checkpoint
    _, rows = query(
        artifacts,
        f"select head, facet, accuracy, best from head_alignment where run_id = '{ctx.run_id}' "
        "order by head, facet",
    )
    assert len(rows) == 4 * 4 and sum(r[3] for r in rows) == 4
    _check_alignment(ctx, rows)

    from app import api

    run, how = api.open_config(slice_cfg(), "ml-100k")  # the config's own run, by its train key
    assert run.run_id == ctx.run_id and "this config" in how
    rec = run.recommend(["1"], k=10, explain=True)
    assert len(rec) == 10 and not set(rec["item"]) & set(run.history_of(["1"])[0])
    assert rec["score"].is_monotonic_decreasing
    fused = rec[run.head_names].sum(axis=1)
    assert np.allclose(fused, rec["score"], atol=1e-4)  # explanation adds up to the score
    with pytest.raises(PipelineError, match="unknown user"):
        run.recommend(["999999"])

    again = run_pipeline(slice_cfg(), progress=False)
    assert [r.skipped for r in again.results.values()] == [True] * 5
    forced = run_pipeline(slice_cfg(), force=["train"], progress=False)
    assert {s: r.skipped for s, r in forced.results.items()} == {
        "ingest": True,
        "encode": True,
        "pretrain": True,
        "train": False,
        "evaluate": False,
    }
    # re-encoding the same texts is served from the cache
    enc = run_pipeline(slice_cfg(), ["encode"], force=["encode"], progress=False).results["encode"]
    first_encoded = ctx.results["encode"].artifact.manifest["encoded"]  # distinct texts
    assert (
        enc.artifact.manifest["encoded"] == 0
        and enc.artifact.manifest["cache_hits"] == first_encoded
    )


def test_new_items_only_are_encoded(slice_cfg, ml100k_slice, artifacts, tmp_path):
    item_file = ml100k_slice / "ml-100k" / "ml-100k.item"
    lines = item_file.read_text().splitlines()
    small = tmp_path / "data" / "ml-100k"
    small.mkdir(parents=True)
    (small / "ml-100k.inter").write_text((ml100k_slice / "ml-100k" / "ml-100k.inter").read_text())
    (small / "ml-100k.item").write_text(
        "\n".join(lines[:1001]) + "\n"
    )  # first 1000 items described
    cfg = load_config("ml-100k", {"paths.artifacts": str(artifacts), **SMALL}, tmp_path / "data")
    first = run_pipeline(cfg, ["ingest", "encode"], progress=False).results["encode"].artifact
    second = (
        run_pipeline(slice_cfg(), ["ingest", "encode"], progress=False).results["encode"].artifact
    )
    assert (
        first.manifest["items_without_text"] > 0
    )  # undescribed items are reported, not encoded as ""
    old = set(first.table("text_embeddings")["text_hash"].to_pylist())
    new = set(second.table("text_embeddings")["text_hash"].to_pylist()) - old
    assert second.manifest["cache_hits"] == len(old) == first.manifest["encoded"]
    assert second.manifest["encoded"] == len(new) > 0


def test_text_init_ablation_trains_from_the_pca_table(slice_cfg):
    """init=text goes through the pretrain stage (its own key, no facet supervision) and train
    starts from that table: with E frozen, the checkpoint's rows are the PCA of the text."""
    from pipeline.artifacts import initial_vectors, text_vectors
    from pretrain.train import plain_projection

    ctx = run_pipeline(slice_cfg(**{"init.method": "text", "init.freeze": True}), progress=False)
    assert list(ctx.results) == ["ingest", "encode", "pretrain", "train", "evaluate"]
    pretrain = ctx.results["pretrain"].artifact
    assert set(pretrain.rows) == {"item_embeddings"}  # no facet_report: nothing was supervised
    facet = run_pipeline(
        slice_cfg(**{"init.method": "facet_pretrain"}), ["pretrain"], progress=False
    )
    assert facet.results["pretrain"].key != ctx.results["pretrain"].key
    cfg = ctx.config
    ids, text = text_vectors(ctx.results["encode"].artifact)
    want = plain_projection(text, cfg.model.d, cfg.model.init_std, cfg.train.seed)
    np.testing.assert_allclose(initial_vectors(pretrain)[1], want, rtol=0, atol=1e-7)
    E = trained_model(ctx.results["train"].artifact).item_emb.weight.detach().numpy()
    np.testing.assert_allclose(E[ids], want, rtol=0, atol=1e-6)


def test_bad_facet_config_fails_before_heavy_work(slice_cfg, artifacts):
    with pytest.raises(FacetError, match="facet 'decade': field 'released' does not exist"):
        run_pipeline(
            slice_cfg(
                **{
                    "facets": [
                        {"name": "first_genre", "field": "genres", "kind": "first"},
                        {"name": "genre_set", "field": "genres", "kind": "set"},
                        {"name": "decade", "field": "released", "kind": "decade"},
                        {"name": "year", "field": "year"},
                    ]
                }
            ),
            progress=False,
        )
    assert not (artifacts / "encode").exists()
    one_label = [{"name": n, "field": "year", "kind": "decade"} for n in ("a", "b", "c")]
    with pytest.raises(FacetError, match="facet 'title' .* no label is held by at least 2 items"):
        run_pipeline(
            slice_cfg(**{"facets": [*one_label, {"name": "title", "field": "source_id"}]}),
            progress=False,
        )
    assert not (artifacts / "encode").exists()
    with pytest.raises(PipelineError, match="3 facets declared .* model.heads = 4"):
        run_pipeline(
            slice_cfg(
                **{
                    "facets": [
                        {"name": "a", "field": "genres", "kind": "first"},
                        {"name": "b", "field": "year", "kind": "decade"},
                        {"name": "c", "field": "year"},
                    ]
                }
            ),
            progress=False,
        )


def test_training_on_real_data_beats_popularity(make_config, artifacts):
    cfg = make_config(
        "ml-100k",
        {
            "init.method": "random",
            "model.name": "sasrec",
            "train.epochs": 10,
            "model.d": 32,
            "train.lr": 3e-3,
        },
    )
    ctx = run_pipeline(cfg, progress=False)
    history = ctx.results["train"].artifact.table("history").to_pylist()
    assert history[-1]["loss"] < history[0]["loss"]
    data = split_data(ctx.results["ingest"].artifact)
    pop = popularity_ndcg10(data)
    best = max(h["valid_ndcg@10"] for h in history)
    assert best > pop * 1.2, (best, pop)
