"""The Python API on a real run (synthetic data, real encoder, real store): open by id in a
fresh process with the raw data gone, scores equal the evaluator's, explanations add up."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from app import api
from pipeline.errors import PipelineError

SYNTH = {"data.synth.users": 300, "data.synth.items": 150, "data.synth.interactions": 4000}
SMALL = {"train.epochs": 3, "pretrain.steps": 40, "model.d": 32, **SYNTH}


@pytest.fixture(scope="module")
def fame_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "artifacts"
    return api.run("synthetic", {**SMALL, "paths.artifacts": str(root)}, progress=False)


def test_open_by_id_in_a_fresh_process_without_the_raw_data(fame_run, tmp_path):
    """Done-when of the API: a new process opens the run by id, with no config and no data,
    and gets explained top-10 for a new sequence, heads named by their facets."""
    root = fame_run.store.root
    shutil.rmtree(root / "_cache" / "synth")  # the generated raw files are gone
    items = fame_run.items["source_id"].to_pylist()[:3]
    script = f"""
import json
from app import api
run = api.open_run({fame_run.run_id!r}, artifacts={str(root)!r})
top = run.recommend_sequence({items!r}, k=10, explain=True)
print(json.dumps({{"cols": list(top.columns), "items": top["item"].tolist(),
                  "scores": top["score"].tolist()}}))
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    names = [f.name for f in fame_run.config.facets]
    assert names == fame_run.head_names and all(n in got["cols"] for n in names)
    assert len(got["items"]) == 10 and not set(got["items"]) & set(items)
    want = fame_run.recommend_sequence(items, k=10)
    assert got["items"] == want["item"].tolist()
    np.testing.assert_allclose(got["scores"], want["score"], rtol=1e-6)


def test_scores_equal_the_evaluators(fame_run):
    """The test-split input of each user scored through the API ranks the test item exactly
    where the evaluate stage's ``rankings`` put it (exclude_history, pessimistic ties)."""
    seqs = fame_run.artifact("ingest").table("sequences").to_pylist()[:60]
    src = np.array(fame_run.items["source_id"].to_pylist(), dtype=object)
    inputs = [[str(src[i - 1]) for i in [*r["train_items"], r["valid_item"]]] for r in seqs]
    scores = fame_run.score_sequences(inputs)
    rankings = fame_run.artifact("evaluate").table("rankings").to_pandas()
    stored = rankings[(rankings.split == "test") & (rankings.protocol == "exclude_history")]
    stored = stored.set_index("user_id")["rank"]
    for r, s in zip(seqs, scores, strict=True):
        seen = [*r["train_items"], r["valid_item"]]
        t = r["test_item"]
        cand = s.copy()
        cand[0] = -np.inf
        cand[[i for i in seen if i != t]] = -np.inf
        assert 1 + int((np.delete(cand, t) >= cand[t]).sum()) == stored[r["user_id"]]


def test_recommend_users_excludes_history_and_explanations_add_up(fame_run):
    users = fame_run.artifact("ingest").table("sequences")["source_user_id"].to_pylist()[:5]
    top = fame_run.recommend(users, k=7, explain=True)
    assert list(top["user"].unique()) == users and len(top) == 35
    for user, hist in zip(users, fame_run.history_of(users), strict=True):
        rows = top[top.user == user]
        assert rows["rank"].tolist() == list(range(1, 8))
        assert not set(rows["item"]) & set(hist)
        assert rows["score"].is_monotonic_decreasing
        contributions = rows[fame_run.head_names].sum(axis=1)
        np.testing.assert_allclose(contributions, rows["score"], atol=1e-4)
        gates = rows.iloc[0][[f"gate {h}" for h in fame_run.head_names]]
        assert gates.sum() == pytest.approx(1.0, abs=1e-5)
    # the keep_history protocol may recommend seen items again: it scores the same candidates
    keep = fame_run.recommend(users[:1], k=150, protocol="keep_history")
    assert len(keep) == 150 and set(keep["item"]) == set(fame_run.items["source_id"].to_pylist())


def test_bad_input_names_what_is_wrong(fame_run):
    with pytest.raises(PipelineError, match="unknown item"):
        fame_run.recommend_sequence(["no-such-item"])
    with pytest.raises(PipelineError, match="unknown user"):
        fame_run.recommend(["no-such-user"])
    with pytest.raises(PipelineError, match="at least one item"):
        fame_run.recommend_sequence([])
    with pytest.raises(PipelineError, match="k = 0"):
        fame_run.recommend_sequence(fame_run.items["source_id"].to_pylist()[:2], k=0)
    with pytest.raises(PipelineError, match="no run 'nope'"):
        api.open_run("nope", artifacts=fame_run.store.root)


def test_latest_metrics_history_and_export(fame_run, tmp_path):
    latest = api.open_run("latest", artifacts=fame_run.store.root, config="synthetic")
    assert latest.run_id == fame_run.run_id
    assert api.runs(fame_run.store.root)["run_id"].tolist()[0] == fame_run.run_id
    metrics = latest.metrics()
    assert set(metrics["protocol"]) == {"exclude_history", "keep_history"}
    history = latest.history()
    assert history["epoch"].tolist() == [1, 2, 3] and "valid_ndcg@10" in history
    E = latest.item_embeddings()
    assert E.shape == (latest.model.num_items + 1, 32) and not E[0].any()
    out = latest.export(tmp_path / "recs.parquet", k=5, batch_users=70)  # chunks of users
    recs = pd.read_parquet(out)
    users = latest.artifact("ingest").table("sequences")["source_user_id"].to_pylist()
    assert len(recs) == 5 * len(users) and recs["user"].nunique() == len(users)
    pd.testing.assert_frame_equal(
        recs[recs.user.isin(users[100:103])].reset_index(drop=True),
        latest.recommend(users[100:103], k=5),
        check_dtype=False,
    )
    csv = pd.read_csv(latest.export(tmp_path / "recs.csv", k=5))
    assert len(csv) == len(recs)
    with pytest.raises(PipelineError, match=".parquet or .csv"):
        latest.export(tmp_path / "recs.json")


def test_sasrec_explain_says_why_not(tmp_path):
    run = api.run(
        "synthetic",
        {**SMALL, "model.name": "sasrec", "init.method": "random", "train.epochs": 1,
         "paths.artifacts": str(tmp_path / "a")},
        progress=False,
    )  # fmt: skip
    assert run.head_names == ["head 0", "head 1", "head 2", "head 3"]
    items = run.items["source_id"].to_pylist()[:2]
    assert len(run.recommend_sequence(items, k=3)) == 3
    with pytest.raises(PipelineError, match="SASRec"):
        run.recommend_sequence(items, k=3, explain=True)


def test_cli_recommend_and_export_by_run_id(fame_run, tmp_path):
    """`fame recommend --run ID` and `fame export` go through the API: same items, any format."""
    from typer.testing import CliRunner

    from app.cli import app

    cli = CliRunner()
    root = str(fame_run.store.root)
    items = ",".join(fame_run.items["source_id"].to_pylist()[:3])
    common = ["--run", fame_run.run_id, "--artifacts", root, "-c", "synthetic"]
    res = cli.invoke(app, ["recommend", "--items", items, "-k", "4", "--format", "json", *common])
    assert res.exit_code == 0, res.output
    got = [r["item"] for r in json.loads(res.stdout)]
    assert got == fame_run.recommend_sequence(items.split(","), k=4)["item"].tolist()
    user = fame_run.artifact("ingest").table("sequences")["source_user_id"][0].as_py()
    res = cli.invoke(app, ["recommend", "-u", user, "--explain", "--format", "json", *common])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {f"gate {h}" for h in fame_run.head_names} <= set(rows[0])
    res = cli.invoke(app, ["recommend", "-u", user, "--explain", *common])  # two tables
    assert res.exit_code == 0 and "gate and router per head" in res.stdout, res.output
    res = cli.invoke(app, ["recommend", "--user", "1", "--items", items, *common])
    assert res.exit_code == 2 and "not both" in res.output
    res = cli.invoke(app, ["recommend", "--items", "nope", *common])
    assert res.exit_code == 2 and "unknown item" in res.output
    res = cli.invoke(app, ["recommend", "--items", items, "--cold-scores", "tilted", *common])
    assert res.exit_code == 2 and "give 'raw' or 'matched'" in res.output
    out = tmp_path / "all.csv"
    res = cli.invoke(app, ["export", "--out", str(out), "-k", "2", *common])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out)) == 2 * fame_run.artifact("ingest").rows["sequences"]
