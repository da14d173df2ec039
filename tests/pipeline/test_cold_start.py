"""The item cold-start protocol and grouped metrics on real runs (synthetic data, the real
encoder, a real store and catalog): held-out items never reach training, the choice is the
seed's, cold + warm (and every grouping) recombine to the overall metric, and a text-pathway
model embeds the cold items from their text."""

import numpy as np
import pyarrow.compute as pc
import pytest

from pipeline.artifacts import PROJECTOR, held_out_items, trained_model
from pipeline.config import load_config
from pipeline.runner import run_pipeline
from sources.sequences import hold_out_items
from storage import query

SYNTH = {"data.synth.users": 300, "data.synth.items": 150, "data.synth.interactions": 4000}
SMALL = {"train.epochs": 2, "pretrain.steps": 40, "model.d": 32, **SYNTH}
COLD = {"data.cold_items": 0.2, "model.item_repr": "text", "init.method": "facet_pretrain"}


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold") / "artifacts"
    cfg = load_config("synthetic", {**SMALL, **COLD, "paths.artifacts": str(root)})
    return run_pipeline(cfg, progress=False)


def test_no_held_out_item_reaches_training(cold_run):
    ingest = cold_run.results["ingest"].artifact
    held = held_out_items(ingest)
    items = ingest.table("items")
    assert len(held) == round(0.2 * items.num_rows)
    seqs = ingest.table("sequences")
    train = pc.list_flatten(seqs["train_items"]).to_numpy()
    assert not np.isin(train, held).any()
    targets = np.concatenate([seqs["valid_item"].to_numpy(), seqs["test_item"].to_numpy()])
    assert np.isin(targets, held).any()  # their valid/test interactions stay, as cold targets
    stats = ingest.manifest["stats"]
    assert stats["held_out_items"] == len(held)
    assert stats["cold_test_targets"] == int(np.isin(seqs["test_item"].to_numpy(), held).sum())
    # the pretrain artifact keeps its projector for the pathway
    assert cold_run.results["pretrain"].artifact.file(PROJECTOR).is_file()


def test_the_held_out_set_is_the_seeds(cold_run):
    ingest = cold_run.results["ingest"].artifact
    items, seqs = ingest.table("items").drop_columns(["held_out"]), ingest.table("sequences")
    a = hold_out_items(items, seqs, 0.2, 0)[0]["held_out"].to_numpy(zero_copy_only=False)
    b = hold_out_items(items, seqs, 0.2, 0)[0]["held_out"].to_numpy(zero_copy_only=False)
    c = hold_out_items(items, seqs, 0.2, 1)[0]["held_out"].to_numpy(zero_copy_only=False)
    stored = ingest.table("items")["held_out"].to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, stored)
    assert not np.array_equal(a, c)


def test_groups_recombine_to_the_overall_metric(cold_run):
    root = cold_run.config.artifacts_dir()
    _, rows = query(
        root,
        """
        select g.split, g.protocol, g.grouping, g.metric, g.k,
               sum(g.users * g.value) / sum(g.users), sum(g.users), any_value(m.value)
        from group_metrics g join metrics m
          on m.run_id = g.run_id and m.split = g.split and m.protocol = g.protocol
         and m.metric = g.metric and m.k is not distinct from g.k
        group by all""",
    )
    groupings = {r[2] for r in rows}
    assert groupings == {"target", "target_popularity", "history_length"}
    users = cold_run.results["ingest"].artifact.rows["sequences"]
    for *_, recombined, n, overall in rows:
        assert n == users
        assert recombined == pytest.approx(overall, abs=1e-9)
    _, cold = query(
        root,
        """select "group", max(users) from group_metrics
           where grouping = 'target' and split = 'test' group by 1 order by 1""",
    )
    stats = cold_run.results["ingest"].artifact.manifest["stats"]
    assert dict(cold) == {"cold": stats["cold_test_targets"], "warm": users - cold[0][1]}


def test_cold_items_are_embedded_from_their_text(cold_run):
    """A held-out item never trained: its ID part is still its zero start, and its embedding
    is the text's s·φ(t_v) alone."""
    model = trained_model(cold_run.results["train"].artifact)
    held = held_out_items(cold_run.results["ingest"].artifact)
    t = model.text_items
    ids = t.id_emb.weight.detach()[held]
    assert ids.abs().max() == 0
    E = model.item_embeddings().detach()[held]
    np.testing.assert_allclose(E, t.semantic[held], rtol=0, atol=0)
    assert t.has_text[held].all() and E.abs().sum() > 0


def test_sasrec_text_pathway_over_the_pca_projection(tmp_path):
    over = {
        **SMALL,
        "model.name": "sasrec",
        "model.item_repr": "text",
        "init.method": "text",
        "paths.artifacts": str(tmp_path / "a"),
    }
    ctx = run_pipeline(load_config("synthetic", over), progress=False)
    model = trained_model(ctx.results["train"].artifact)
    assert model.text_spec.facets == 1 and not model.text_spec.normalize
    assert ctx.results["evaluate"].artifact.rows["group_metrics"] > 0


def test_a_pathway_without_a_projector_source_is_a_config_error():
    with pytest.raises(ValueError, match="init.method = 'text' or 'facet_pretrain'"):
        load_config("synthetic", {"model.item_repr": "text", "init.method": "random"})


def test_the_run_report_plots_the_groups(cold_run, tmp_path):
    import json
    import re

    from app import api
    from app.run_report import write_report

    run = api.open_run(cold_run.run_id, artifacts=cold_run.config.artifacts_dir())
    html = write_report([run], tmp_path / "r.html").read_text()
    m = re.search(rf'id="groups-{run.run_id}-data" data-target="[^"]+">(.*?)</script>', html)
    assert m, "no groups figure in the report"
    fig = json.loads(m.group(1).replace("<\\/", "</"))
    by = {t["meta"]["grouping"]: t for t in fig["data"]}
    assert set(by) == {"target", "target_popularity", "history_length"}
    assert by["target"]["x"] == ["warm", "cold"]
    _, rows = query(
        cold_run.config.artifacts_dir(),
        """select value from group_metrics where grouping = 'target' and split = 'test'
           and protocol = 'exclude_history' and metric = 'ndcg' and k = 10 order by group_order""",
    )
    assert by["target"]["y"] == pytest.approx([r[0] for r in rows])
