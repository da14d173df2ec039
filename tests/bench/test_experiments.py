"""The bench suites as sweep definitions (``bench/sweeps/*.toml``): each expands to exactly the
runs the hand-written Python suites had (names, configs, overrides, labels: so the same train
and evaluate keys, and the existing ``bench/results/runs/*.json`` stay theirs), the report
regenerates RESULTS.md unchanged from those files, and a suite run through the sweep writes a
record of the old shape under its old name.

``suites_before_sweeps.json`` is the old ``SUITES`` dict, dumped before it was deleted."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.runner import plan_keys
from studies.sweep import grid_trials, trial_config

REPO = Path(__file__).resolve().parents[2]
BEFORE = json.loads((Path(__file__).parent / "suites_before_sweeps.json").read_text())


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("experiments", REPO / "bench" / "experiments.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiments"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def seed_major(runs: list) -> list:
    """The old queue's order: ``main`` sorted it by seed (stable)."""
    return sorted(runs, key=lambda r: r[2].get("train.seed", 0))


def test_the_suites_are_the_sweep_files(bench):
    files = sorted(p.stem for p in (REPO / "bench" / "sweeps").glob("*.toml"))
    assert sorted(bench.SUITES) == files
    assert set(BEFORE) <= set(bench.SUITES)  # suites added since are new sweep files only


@pytest.mark.parametrize("suite", sorted(BEFORE))
def test_a_suite_expands_to_the_runs_of_the_python_suite(bench, suite):
    spec = bench.load_suite(suite)
    assert spec.name == suite and spec.kind == "grid" and spec.description
    got = [[r.name, r.config, r.overrides, r.label] for r in bench.suite_runs(spec)]
    assert got == seed_major(BEFORE[suite])
    assert len({r.trial for r in bench.suite_runs(spec)}) == len(got)


@pytest.mark.parametrize("suite", sorted(BEFORE))
def test_every_trial_has_the_train_and_evaluate_keys_of_its_old_run(
    bench, suite, data_dir, monkeypatch
):
    """Keys hash the datasets' files: skipped (or failed under FAME_REQUIRE_DATA) without them."""
    monkeypatch.setenv("FAME_DATA_DIR", str(data_dir))
    spec = bench.load_suite(suite)
    trials = grid_trials(spec)
    for trial, (name, config, overrides, _) in zip(trials, seed_major(BEFORE[suite]), strict=True):
        new, old = (
            plan_keys(trial_config(spec, trial.overrides)),
            plan_keys(load_config(config, overrides)),
        )
        assert (new["train"], new["evaluate"]) == (old["train"], old["evaluate"]), name


def test_paired_comparisons_name_variants_of_their_suite(bench):
    for suite in bench.SUITES:
        spec = bench.load_suite(suite)
        labels = {v.label for v in spec.variants}
        for pair in spec.meta.get("paired", []):
            assert set(pair) <= labels, (suite, pair)


def test_targets_name_variants_of_their_suite(bench):
    for suite in bench.SUITES:
        spec = bench.load_suite(suite)
        labels = {v.label for v in spec.variants}
        for target in spec.meta.get("targets", []):
            assert {target["variant"], target.get("over", target["variant"])} <= labels, suite
            judged = "gain" in target or "ratio" in target
            assert ("over" in target) == judged != ("at_least" in target), target
            if "group" in target:  # [grouping, group] of the suite's grouped metrics
                assert target["group"][0] in spec.meta.get("groups", []), target


def _grouped(name: str, cold: float, warm: float) -> dict:
    groups = {
        "target": {"warm": {"users": 90, "ndcg@10": warm}, "cold": {"users": 10, "ndcg@10": cold}}
    }
    return {
        "name": name,
        "metrics": {"exclude_history": {"test": {"ndcg@10": 0.9 * warm + 0.1 * cold}}},
        "groups": {"exclude_history": {"test": groups}},
    }


def test_group_targets_and_tables_read_the_records_groups(bench):
    done = [_grouped("a1", 0.010, 0.06), _grouped("a2", 0.014, 0.06), _grouped("b1", 0.020, 0.05)]
    label_of = {"a1": "A", "a2": "A", "b1": "B"}
    targets = [
        {"variant": "B", "over": "A", "ratio": 1.5, "group": ["target", "cold"]},  # 0.020/0.012
        {"variant": "B", "over": "A", "ratio": 2.0, "group": ["target", "cold"]},
        {"variant": "B", "over": "A", "gain": 0.0},  # overall: 0.047 vs 0.0552
    ]
    lines = [x for x in bench.targets_section(done, label_of, targets) if x.startswith("- ")]
    assert lines == [
        "- B on cold targets 0.0200 vs A 0.0120: 1.67× (target ≥ 1.5×), n = 1: **met**",
        "- B on cold targets 0.0200 vs A 0.0120: 1.67× (target ≥ 2.0×), n = 1: **not met**",
        "- B 0.0470 vs A 0.0552: -14.9% (target ≥ +0%), n = 1: **not met**",
    ]
    table = bench.groups_section(done, label_of, ["A", "B"], ["target"])
    assert "| variant | n | warm (90) | cold (10) |" in table
    assert "| A | 2 | 0.0600 | 0.0120 |" in table and "| B | 1 | 0.0500 | 0.0200 |" in table


def _record(name: str, ndcg: float) -> dict:
    return {"name": name, "metrics": {"exclude_history": {"test": {"ndcg@10": ndcg}}}}


def test_targets_are_judged_on_the_means_of_the_records(bench):
    done = [_record("a1", 0.0300), _record("a2", 0.0320), _record("b1", 0.0330)]
    label_of = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}
    targets = [
        {"variant": "B", "over": "A", "gain": 0.03},  # 0.0330 / 0.0310 - 1 = +6.5%
        {"variant": "B", "over": "A", "gain": 0.07},
        {"variant": "A", "at_least": 0.0310, "source": "P"},  # mean 0.0310: at, so met
        {"variant": "B", "at_least": 0.0331, "source": "P"},
        {"variant": "C", "at_least": 0.0, "source": "P"},  # no record of C: no line
        {"variant": "B", "over": "C", "gain": 0.0},
    ]
    lines = [x for x in bench.targets_section(done, label_of, targets) if x.startswith("- ")]
    assert lines == [
        "- B 0.0330 vs A 0.0310: +6.5% (target ≥ +3%), n = 1: **met**",
        "- B 0.0330 vs A 0.0310: +6.5% (target ≥ +7%), n = 1: **not met**",
        "- A 0.0310 vs P 0.0310: +0.0000 (target: at or above), n = 2: **met**",
        "- B 0.0330 vs P 0.0331: -0.0001 (target: at or above), n = 1: **not met**",
    ]
    assert bench.targets_section(done, label_of, []) == []


def test_the_report_regenerates_results_md_unchanged(bench, tmp_path):
    out = bench.report(tmp_path / "RESULTS.md")
    assert out.read_text() == (REPO / "RESULTS.md").read_text()


SUITE = """
[sweep]
config = "synthetic"
seeds = [1, 2]
description = "tiny"

[overrides]
"train.epochs" = 1
"model.d" = 16
"init.method" = "random"
"data.synth.users" = 300
"data.synth.items" = 150
"data.synth.interactions" = 4000

[meta]
run_name = "tiny-{variant}-s{seed}"

[[variants]]  # first: an init=text run recorded into a store that has no facet_report yet
name = "text"
label = "SASRec + text init"
seeds = [1]
overrides = { "model.name" = "sasrec", "init.method" = "text" }

[[variants]]
name = "sasrec"
label = "SASRec"
overrides = { "model.name" = "sasrec" }

[[variants]]
name = "fame"
label = "FAME"
seeds = [1]
overrides = { "model.name" = "fame" }
"""


@pytest.mark.timeout(600)
def test_a_suite_run_writes_records_of_the_old_shape_under_their_names(
    bench, tmp_path, monkeypatch
):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "tiny.toml").write_text(SUITE)
    monkeypatch.setattr(bench, "SWEEPS", tmp_path / "sweeps")
    monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(bench, "report", lambda: None)  # RESULTS.md is the real suites'
    store = str(tmp_path / "store")
    bench.run_suites(["tiny"], set(), store, 1)
    names = sorted(p.stem for p in (tmp_path / "runs").glob("*.json"))
    assert names == ["tiny-fame-s1", "tiny-sasrec-s1", "tiny-sasrec-s2", "tiny-text-s1"]
    text = json.loads((tmp_path / "runs" / "tiny-text-s1.json").read_text())
    assert text["facet_report"] == [] and "pretrain" in text["stages"]

    rec = json.loads((tmp_path / "runs" / "tiny-fame-s1.json").read_text())
    old = json.loads((REPO / "bench/results/runs/sports-text-sasrec-text-s1.json").read_text())
    # the old shape, plus the metrics by group of users that records carry since
    assert rec.keys() == old.keys() - {"reused_from"} | {"groups"}
    pop = rec["groups"]["exclude_history"]["test"]["target_popularity"]
    mean = sum(g["users"] * g["ndcg@10"] for g in pop.values()) / sum(
        g["users"] for g in pop.values()
    )
    assert mean == pytest.approx(rec["metrics"]["exclude_history"]["test"]["ndcg@10"])
    assert rec["metrics"].keys() == old["metrics"].keys()  # protocols, then splits and metrics
    assert (
        rec["metrics"]["keep_history"]["valid"].keys()
        == old["metrics"]["keep_history"]["valid"].keys()
    )
    assert (rec["suite"], rec["variant"], rec["config_name"]) == ("tiny", "FAME", "synthetic")
    assert rec["overrides"]["model.name"] == "fame" and rec["overrides"]["train.seed"] == 1
    assert "paths.artifacts" not in rec["overrides"]  # the root is no part of the run
    assert rec["keys"] == plan_keys(load_config("synthetic", rec["overrides"]))
    assert rec["epochs_run"] == 1 and rec["stages"]["train"]["skipped"] is False
    ndcg = rec["metrics"]["exclude_history"]["test"]["ndcg@10"]
    assert 0 < ndcg <= 1

    # the sweep's own records hold the trials, variant and label included
    from storage import ArtifactStore

    rows = {r["trial"]: r for r in ArtifactStore(store).records("sweeps")}
    assert [(rows[t]["variant"], rows[t]["label"]) for t in sorted(rows)] == [
        ("text", "SASRec + text init"),
        ("sasrec", "SASRec"),
        ("fame", "FAME"),
        ("sasrec", "SASRec"),
    ]
    assert rows["t002"]["run_id"] == rec["run_id"] and rows["t002"]["test_ndcg10"] == ndcg

    # a second call finds every record there and runs nothing
    before = len(ArtifactStore(store).records("runs"))
    bench.run_suites(["tiny"], set(), store, 1)
    assert len(ArtifactStore(store).records("runs")) == before
