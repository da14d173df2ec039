"""Optuna pruning of sweep trials: the train stage reports each epoch's valid NDCG@10 to the
trial in the stored study and stops when the study's pruner says so.

A trial runs in another process (a Dask worker), so it reports through the study's SQLite file
(path, study name and trial number come in its payload as plain data), never through the
sweep's in-memory study. The hook reaches the train stage through ``fame.epoch_hook.EPOCH_HOOK``, a
context variable that ``studies.sweep.run_trial`` sets around its in-process run: it is no config
field, so pruning changes no stage key, and a trial that is not pruned trains exactly as the
same run outside a study.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fame.epoch_hook import EpochHook

OBJECTIVE = "ndcg@10"  # of the primary protocol, on valid: what the study maximises
SQLITE_TIMEOUT_S = 60  # workers and the sweep write one SQLite file: wait for its lock


def storage(path: str | Path) -> Any:
    """The study's SQLite storage, waiting up to a minute for a lock another process holds."""
    from optuna.storages import RDBStorage

    return RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    )


def make_pruner(settings: Mapping[str, Any]) -> Any:
    """``{"pruner": "median" | "none", "n_startup_trials", "n_warmup_steps"}`` as an Optuna
    pruner; steps are epochs."""
    import optuna

    if settings["pruner"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(settings["n_startup_trials"]),
        n_warmup_steps=int(settings["n_warmup_steps"]),
    )


def study_reporter(job: Mapping[str, Any]) -> EpochHook:
    """The hook of one trial (``job``: ``storage``, ``study``, ``number``, ``pruner``): report
    the epoch's valid NDCG@10 to the stored trial, then ask the pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(job["storage"])
    trial_id = store.get_trial_id_from_study_id_trial_number(
        store.get_study_id_from_name(job["study"]), int(job["number"])
    )
    study = optuna.load_study(
        study_name=job["study"], storage=store, pruner=make_pruner(job["pruner"])
    )
    trial = optuna.trial.Trial(study, trial_id)
    log = logging.getLogger("fame")

    def report(epoch: int, valid: dict[str, float]) -> bool:
        trial.report(float(valid[OBJECTIVE]), step=epoch)
        prune = trial.should_prune()
        if prune:
            log.info("%s trial %s: pruned at epoch %d", job["study"], job["number"], epoch)
        return prune

    return report
