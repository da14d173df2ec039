"""Adding items unseen in training to an opened text-pathway run (synthetic data, the real
encoder, a real store), through the Python API and the real ``fame serve-model`` over HTTP:
the new items are recommended with facet-named explanations, the stored run does not change,
the addition is recorded, and bad input is a named error that adds nothing."""

import hashlib
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from support import serve_model

from app import api
from pipeline.errors import PipelineError

SYNTH = {"data.synth.users": 300, "data.synth.items": 150, "data.synth.interactions": 4000}
SMALL = {"train.epochs": 2, "pretrain.steps": 40, "model.d": 32, **SYNTH}
PATHWAY = {"model.item_repr": "text", "init.method": "facet_pretrain"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("add") / "artifacts"


@pytest.fixture(scope="module")
def run_id(root) -> str:
    over = {**SMALL, **PATHWAY, "paths.artifacts": str(root)}
    return api.run("synthetic", over, progress=False).run_id


def _snapshot(root: Path) -> dict[str, str]:
    """Every stored file (records aside) and its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_records" not in p.parts and p.name != "catalog.duckdb"
    }


def _new_items(run: api.Run, n: int = 2) -> pd.DataFrame:
    src = run.items.slice(0, n).to_pandas()
    fields = [c for c in src.columns if c not in ("item_id", "source_id", "held_out")]
    out = src[fields].copy()
    out.insert(0, "item_id", [f"new-{i}" for i in range(n)])
    return out


def test_added_items_are_recommended_with_explanations_and_the_run_is_unchanged(run_id, root):
    before = _snapshot(root)
    run = api.open_run(run_id, artifacts=root)
    n = run.model.num_items
    new = _new_items(run)
    added = run.add_items(new)
    assert added["source_id"].to_pylist() == ["new-0", "new-1"]
    assert added["item_id"].to_pylist() == [n + 1, n + 2] and run.model.num_items == n + 2
    # same text as items 1 and 2: the same semantic part, and no ID part of their own
    t = run.model.text_items
    torch.testing.assert_close(t.semantic[n + 1], t.semantic[1])
    E = run.model.item_embeddings().detach()
    torch.testing.assert_close(E[n + 1], t.semantic[1])
    seq = run.items["source_id"].to_pylist()[10:15]
    top = run.recommend_sequence(seq, k=n + 2 - 5, explain=True)
    assert {"new-0", "new-1"} <= set(top["item"])
    heads = run.head_names
    assert heads == [f.name for f in run.config.facets]
    row = top[top["item"] == "new-0"].iloc[0]
    assert row[heads].sum() == pytest.approx(row["score"], rel=1e-4, abs=1e-5)
    # the score is <u, s·φ(t)> by hand
    u_scores = run.score_sequences([seq])[0]
    assert u_scores[n + 1] == pytest.approx(row["score"], rel=1e-5)
    # nothing stored changed; the addition is recorded; a fresh open has the trained catalogue
    assert _snapshot(root) == before
    recs = run.store.records("added_items")
    assert [r["items"] for r in recs] == [2] and recs[0]["run_id"] == run_id
    assert api.open_run(run_id, artifacts=root).model.num_items == n


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.assign(item_id=["dup", "dup"]), "given twice"),
        (lambda f: f.assign(item_id=["new-a", "1"]), "already in the run"),
        (lambda f: f.assign(colour_code=["x", "y"]), r"unknown item field\(s\) \['colour_code'\]"),
        (lambda f: f.drop(columns=["item_id"]), "item_id column"),
        (lambda f: f.assign(**{c: None for c in f.columns if c != "item_id"}), "no text"),
    ],
)
def test_bad_new_items_are_named_errors_that_add_nothing(run_id, root, change, match):
    run = api.open_run(run_id, artifacts=root)
    n, items = run.model.num_items, run.items.num_rows
    with pytest.raises(PipelineError, match=match):
        run.add_items(change(_new_items(run)))
    assert run.model.num_items == n and run.items.num_rows == items


def test_a_free_table_run_cannot_add_items(root, run_id):
    over = {**SMALL, "init.method": "random", "paths.artifacts": str(root)}
    run = api.run("synthetic", over, progress=False)
    with pytest.raises(PipelineError, match="free item table"):
        run.add_items(_new_items(run))


def test_serve_model_adds_items_over_http(run_id, root, tmp_path):
    with serve_model(run_id, root, tmp_path / "server.log") as (url, _port):
        n = httpx.get(f"{url}/health").json()["items"]
        run = api.open_run(run_id, artifacts=root)
        body = {"items": _new_items(run).to_dict(orient="records")}
        bad = {"items": [{**body["items"][0], "item_id": "1"}]}
        r = httpx.post(f"{url}/items", json=bad, timeout=60)
        assert r.status_code == 422 and "already in the run" in r.json()["detail"][0]["msg"]
        r = httpx.post(f"{url}/items", json=body, timeout=60)
        assert r.status_code == 201, r.text
        assert r.json()["added"] == ["new-0", "new-1"] and r.json()["items"] == n + 2
        assert httpx.get(f"{url}/health").json()["items"] == n + 2
        seq = {"items": ["new-0", *run.items["source_id"].to_pylist()[10:14]], "k": n - 3}
        r = httpx.post(f"{url}/recommendations", json={**seq, "explain": True}, timeout=30)
        assert r.status_code == 200, r.text
        got = {i["item"]: i for i in r.json()["items"]}
        assert "new-1" in got and "new-0" not in got  # a new item in the history is excluded
        parts = got["new-1"]["contributions"]
        assert set(parts) == {f.name for f in run.config.facets}
        assert sum(parts.values()) == pytest.approx(got["new-1"]["score"], rel=1e-4, abs=1e-5)


def _matched_reference(raw: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """Per sequence, in float64: cold scores moved to the warm items' mean and spread."""
    out = raw.astype(np.float64)
    warm = np.setdiff1d(np.arange(1, raw.shape[1]), cold)
    for row in out:
        c, w = row[cold], row[warm]
        row[cold] = w.mean() + (c - c.mean()) * w.std() / c.std()
    return out


@pytest.fixture(scope="module")
def matched_run_id(root, run_id) -> str:  # after run_id: the same trained model, evaluated matched
    over = {**SMALL, **PATHWAY, "evaluate.cold_scores": "matched", "paths.artifacts": str(root)}
    return api.run("synthetic", over, progress=False).run_id


def test_matched_cold_scores_rank_added_items_as_a_per_user_reference(run_id, root):
    run = api.open_run(run_id, artifacts=root)
    n = run.model.num_items
    run.add_items(_new_items(run, 5))
    np.testing.assert_array_equal(run.cold_items, np.arange(n + 1, n + 6))
    ids = run.items["source_id"].to_pylist()
    seqs = [ids[10:15], ids[40:52]]
    ref = _matched_reference(run.score_sequences(seqs), run.cold_items)
    raw = run.recommend_sequence(seqs, k=30)  # the run's evaluate.cold_scores: raw
    got = run.recommend_sequence(seqs, k=30, cold_scores="matched")
    for i, seq in enumerate(seqs):
        scores = ref[i].copy()
        scores[0] = -np.inf
        scores[run.item_ids(seq)] = -np.inf  # exclude_history
        want = np.argsort(-scores, kind="stable")[:30]
        mine = got[got["sequence"] == i]
        assert mine["item"].tolist() == run.source_ids[want - 1].tolist()
        np.testing.assert_allclose(mine["score"], scores[want], rtol=1e-4, atol=1e-4)
    assert got["item"].tolist() != raw["item"].tolist()  # matching did move the new items


def test_a_matched_run_serves_matched_scores_for_added_items(matched_run_id, root):
    from fastapi.testclient import TestClient

    from app.service import create_app

    run = api.open_run(matched_run_id, artifacts=root)
    assert run.config.evaluate.cold_scores == "matched"
    client = TestClient(create_app(run), raise_server_exceptions=False)
    n = run.model.num_items
    r = client.post("/items", json={"items": _new_items(run, 5).to_dict(orient="records")})
    assert r.status_code == 201, r.text
    seq = run.items["source_id"].to_pylist()[40:52]
    got = client.post("/recommendations", json={"items": seq, "k": n - 12}).json()["items"]
    want = run.recommend_sequence(seq, k=n - 12)  # the run's own setting: matched
    assert [g["item"] for g in got] == want["item"].tolist()
    np.testing.assert_allclose([g["score"] for g in got], want["score"], rtol=1e-5, atol=1e-5)
    raw = run.recommend_sequence(seq, k=n - 12, cold_scores="raw")
    assert want["item"].tolist() != raw["item"].tolist()
