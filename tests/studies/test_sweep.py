"""Sweep definitions and the sweep loop without Prefect (``InlinePool``): TOML parsing and the
grid's trials, an Optuna study stored under the root that a rerun with a larger budget
continues (earlier trials kept, only the new ones run), trials reused from earlier runs."""

import pytest

from pipeline.config import ConfigError
from storage import query
from studies.sweep import (
    METRICS,
    SweepSpec,
    grid_trials,
    load_sweep,
    open_study,
    run_sweep,
    study_path,
    trial_config,
)

TINY = {
    "data.synth.users": 300,
    "data.synth.items": 150,
    "data.synth.interactions": 4000,
    "train.epochs": 1,
    "model.d": 16,
    "init.method": "random",
}


def test_the_ml100k_sweep_is_two_settings_times_three_seeds():
    spec = load_sweep("configs/sweeps/ml100k-seeds.toml")
    assert (spec.name, spec.config, spec.kind) == ("ml100k-seeds", "ml-100k", "grid")
    assert spec.overrides["train.epochs"] == 5
    trials = grid_trials(spec)
    assert [t.params for t in trials[:2]] == [
        {"model.name": "sasrec", "train.seed": 1},
        {"model.name": "fame", "train.seed": 1},
    ]
    assert len(trials) == 6 and len({t.name for t in trials}) == 6


def test_nested_tables_and_set_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[sweep]\nconfig = "synthetic"\n[overrides.train]\nepochs = 2\n'
        '[grid.model]\nheads = [1, 2]\n[optuna]\nn_trials = 2\n[optuna.space."train.lr"]\n'
        'type = "float"\nlow = 1e-4\nhigh = 1e-2\n'
    )
    with pytest.raises(ConfigError, match="not both"):
        load_sweep(path)
    path.write_text(
        '[sweep]\nconfig = "synthetic"\n[overrides.train]\nepochs = 2\n[grid]\n"model.heads" = [1, 2]\n'
    )
    spec = load_sweep(path, {"paths.artifacts": "/x"})
    assert spec.name == "s" and spec.overrides == {"train.epochs": 2, "paths.artifacts": "/x"}
    assert [t.params for t in grid_trials(spec)] == [{"model.heads": 1}, {"model.heads": 2}]


VARIANTS = """
[sweep]
config = "synthetic"
seeds = [1, 2]
[[variants]]
name = "sasrec"
label = "SASRec"
overrides = { "model.name" = "sasrec" }
[[variants]]
name = "fame-h2"
seeds = [1]
[variants.overrides.model]
name = "fame"
heads = 2
[grid]
"train.lr" = [1e-3, 2e-3]
"""


def test_variants_times_grid_times_seeds_seed_major(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text(VARIANTS)
    spec = load_sweep(path)
    assert [v.label for v in spec.variants] == ["SASRec", "fame-h2"]  # the name by default
    got = [(t.name, t.variant.name, t.params) for t in grid_trials(spec)]
    assert got == [
        ("t000", "sasrec", {"train.lr": 1e-3, "train.seed": 1}),
        ("t001", "sasrec", {"train.lr": 2e-3, "train.seed": 1}),
        ("t002", "fame-h2", {"train.lr": 1e-3, "train.seed": 1}),
        ("t003", "fame-h2", {"train.lr": 2e-3, "train.seed": 1}),
        ("t004", "sasrec", {"train.lr": 1e-3, "train.seed": 2}),
        ("t005", "sasrec", {"train.lr": 2e-3, "train.seed": 2}),
    ]
    fame = grid_trials(spec)[3]
    assert fame.overrides == {"model.name": "fame", "model.heads": 2, **fame.params}
    cfg = trial_config(spec, fame.overrides)
    assert (cfg.model.name, cfg.model.heads, cfg.train.lr, cfg.train.seed) == ("fame", 2, 2e-3, 1)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('name = "fame-h2"', 'name = "sasrec"'), "variants: .*variant names must differ"),
        (('name = "fame-h2"', 'name = "x"\nlabel = "SASRec"'), "variants: .*labels must differ"),
        (("seeds = [1]\n", "seeds = []\n"), r"variants\.1\.seeds: .*at least one seed"),
        (('name = "fame-h2"', 'name = "a b"'), r"variants\.1\.name: .*pattern"),
        (('"model.name" = "sasrec"', '"train.seed" = 3'), "seeds sets train.seed"),
        (('"train.lr" = [1e-3, 2e-3]', '"train.lr" = []'), r"grid: .*\['train.lr'\]"),
        (("[grid]", "[optuna]\nn_trials = 1\n[optuna.space]\n[grid]"), "not both"),
        (
            ("[grid]", "[optuna]\nn_trials = 1\npruner = 'hyper'\n[optuna.space]\n[grid]"),
            "optuna.pruner",
        ),
    ],
)
def test_bad_definitions_name_the_field(tmp_path, edit, message):
    path = tmp_path / "v.toml"
    path.write_text(VARIANTS.replace(*edit, 1))
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def optuna_spec(root, n_trials: int) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "tiny-study",
            "config": "synthetic",
            "overrides": {**TINY, "paths.artifacts": str(root)},
            "optuna": {
                "n_trials": n_trials,
                "seed": 3,
                "space": {
                    "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "model.heads": {"type": "categorical", "choices": [1, 2, 4]},
                    "model.blocks": {"type": "int", "low": 1, "high": 2},
                },
            },
        }
    )


@pytest.mark.timeout(600)
def test_optuna_study_is_stored_and_a_bigger_budget_continues_it(tmp_path):
    root = tmp_path / "store"
    first = run_sweep(optuna_spec(root, 3))
    assert first.submitted == 3 and [r["trial"] for r in first.rows] == ["o000", "o001", "o002"]
    assert all(r["status"] == "completed" for r in first.rows)
    assert study_path(root, "tiny-study").is_file()

    again = run_sweep(optuna_spec(root, 5))
    assert again.submitted == 2  # the three finished trials are not run again
    rows = {r["trial"]: r for r in again.rows}
    assert sorted(rows) == ["o000", "o001", "o002", "o003", "o004"]
    for old in first.rows:
        assert rows[old["trial"]]["status"] == "cached"
        assert rows[old["trial"]]["params"] == old["params"]
    study = open_study(optuna_spec(root, 5), root)
    values = {f"o{t.number:03d}": t.value for t in study.trials}
    assert values == {name: r["valid_ndcg10"] for name, r in rows.items()}
    assert again.best["value"] == max(values.values())

    _, got = query(root, "select trial, kind, valid_ndcg10 from sweeps order by trial")
    assert [(t, k) for t, k, _ in got] == [(n, "optuna") for n in sorted(rows)]


@pytest.mark.timeout(600)
def test_a_trial_equal_to_a_finished_run_reuses_it(tmp_path):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    root = tmp_path / "store"
    over = {**TINY, "paths.artifacts": str(root)}
    ctx = run_pipeline(load_config("synthetic", {**over, "train.seed": 7}), progress=False)
    spec = SweepSpec(name="g", config="synthetic", overrides=over, seeds=[7, 8])
    result = run_sweep(spec)
    assert [r["status"] for r in result.rows] == ["reused", "completed"]
    assert result.rows[0]["run_id"] == ctx.run_id and result.submitted == 1
    assert all(result.rows[1][m] is not None for m in METRICS)
