"""Optuna pruning on tiny synthetic data: a study whose search space holds one good learning
rate and hopeless ones, the good one enqueued as the warm-up trial. Every hopeless trial is
pruned at the first epoch after the warm-up steps (its run stops early, is recorded `pruned`,
and the stored study shows PRUNED), a rerun skips them, the unpruned trial equals the same run
outside any study, and a pruned trial's resume state is an unfinished one that a plain run of
its config resumes to the same end as a fresh run."""

import json

import pytest
from optuna.trial import TrialState

from pipeline.config import load_config
from pipeline.runner import run_pipeline
from storage import ArtifactStore
from studies.sweep import DONE, METRICS, SweepSpec, open_study, run_sweep, trial_metrics

EPOCHS, WARMUP = 4, 2  # Optuna's n_warmup_steps: no pruning before epoch 2
TINY = {
    "data.synth.users": 300,
    "data.synth.items": 150,
    "data.synth.interactions": 4000,
    "train.epochs": EPOCHS,
    "train.patience": 10,
    "model.d": 16,
    "init.method": "random",
}
GOOD, HOPELESS = 1e-2, [1e-5, 2e-5, 3e-5]  # valid NDCG@10 after 2 epochs: ~0.17 vs ~0.04


def spec(root, n_trials: int) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "prune",
            "config": "synthetic",
            "overrides": {**TINY, "paths.artifacts": str(root)},
            "optuna": {
                "n_trials": n_trials,
                "space": {"train.lr": {"type": "categorical", "choices": [GOOD, *HOPELESS]}},
                "pruner": "median",
                "n_startup_trials": 1,  # one complete trial, then the median of one
                "n_warmup_steps": WARMUP,
            },
        }
    )


def plain(root, lr: float):
    """The trial's config as an ordinary run, outside any sweep."""
    return run_pipeline(
        load_config("synthetic", {**TINY, "train.lr": lr, "paths.artifacts": str(root)}),
        progress=False,
    )


@pytest.mark.timeout(900)
def test_hopeless_trials_are_pruned_early_recorded_and_not_rerun(tmp_path):
    root = tmp_path / "store"
    open_study(spec(root, 5), root).enqueue_trial({"train.lr": GOOD})  # the warm-up trial
    result = run_sweep(spec(root, 5))
    rows = {r["trial"]: r for r in result.rows}
    assert sorted(rows) == ["o000", "o001", "o002", "o003", "o004"]
    lr = {name: json.loads(r["params"])["train.lr"] for name, r in rows.items()}
    first = rows["o000"]
    assert lr["o000"] == GOOD and first["status"] == "completed" and first["epochs"] == EPOCHS

    pruned = [n for n in rows if lr[n] != GOOD]
    assert pruned, "the seeded sampler drew no hopeless rate"
    store = ArtifactStore(root)
    runs = {r["run_id"]: r for r in store.records("runs")}
    stages = {(s["run_id"], s["stage"]): s["status"] for s in store.records("stages")}
    for name in pruned:
        r = rows[name]
        assert r["status"] == "pruned" and r["epochs"] == WARMUP < EPOCHS, name
        assert r["valid_ndcg10"] < first["valid_ndcg10"] and r["test_ndcg10"] is None
        assert runs[r["run_id"]]["status"] == "pruned"
        assert stages[(r["run_id"], "train")] == "pruned"
        assert store.get("train", r["train_key"]) is None  # no model published
    for name in set(rows) - set(pruned):
        assert rows[name]["status"] in DONE

    study = open_study(spec(root, 5), root)
    trials = {f"o{t.number:03d}": t for t in study.trials}
    assert list(trials["o000"].intermediate_values) == list(range(1, EPOCHS + 1))
    for name in pruned:
        assert trials[name].state == TrialState.PRUNED
        assert max(trials[name].intermediate_values) == WARMUP  # reported until pruned
        assert trials[name].value == rows[name]["valid_ndcg10"]  # its last reported epoch

    # a rerun counts the pruned trials in the budget: nothing runs, they stay pruned
    again = run_sweep(spec(root, 5))
    assert again.submitted == 0
    assert {r["trial"]: r["status"] for r in again.rows} == {
        n: "pruned" if n in pruned else "cached" for n in rows
    }

    # the unpruned trial (reported every epoch) equals the same config run outside a study
    ref = plain(tmp_path / "plain", GOOD)
    got = trial_metrics(ref.store, ref.keys["evaluate"], first["protocol"])
    assert {m: first[m] for m in METRICS} == got

    # a pruned trial left a resumable epoch-2 state, not a finished one: a plain run of its
    # config resumes it and ends as a fresh run of that config
    bad = rows[pruned[0]]
    resumed = plain(root, lr[pruned[0]])
    assert resumed.keys["train"] == bad["train_key"]
    manifest = resumed.results["train"].artifact.manifest
    assert manifest["resumed_from"] == WARMUP and manifest["epochs_run"] == EPOCHS
    fresh = plain(tmp_path / "plain", lr[pruned[0]])
    assert trial_metrics(resumed.store, resumed.keys["evaluate"], bad["protocol"]) == (
        trial_metrics(fresh.store, fresh.keys["evaluate"], bad["protocol"])
    )
