"""The Prefect flow behind ``fame/sweep``: ``studies.sweep.run_sweep`` with each trial a
Prefect task on a Dask cluster (prefect-dask's ``DaskTaskRunner``).

A trial task runs one whole pipeline run in its worker process (``studies.sweep.run_trial``:
``run_pipeline`` with the in-process executor), from plain data, so any worker that sees the
artifact root can take it. The cluster is a ``LocalCluster`` of ``workers`` one-thread worker
processes, or the cluster at ``address``; it is started only when some trial has to run. A
worker killed mid-trial is handled by Dask, which hands the task to another worker (up to
``distributed.scheduler.allowed-failures`` deaths); there the run resumes from the store (cached
stages skipped, train from its last epoch). A trial that fails for a transient reason is
retried by Prefect; a deterministic error fails that trial only. A pruned Optuna trial is a
result, not an error: it is never retried.

The flow is named ``fame`` like the pipeline flow, so its deployment is ``fame/sweep``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.deployments.runner import EntrypointType
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run

from flows.flow import is_transient
from studies.sweep import SweepResult, load_sweep, report_rows, run_sweep, run_trial

SWEEP_DEPLOYMENT = "sweep"


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def trial_task(job: dict[str, Any]) -> dict[str, Any]:
    """One trial (or the shared upstream stages) as a pipeline run in this worker process."""
    out = run_trial(job)
    pruned = f" (pruned after epoch {out['pruned']['epoch']})" if out.get("pruned") else ""
    get_run_logger().info(
        "%s %s: run %s in %.1fs%s",
        job["sweep"],
        job["trial"],
        out["run_id"],
        out["seconds"],
        pruned,
    )
    return out


class DaskPool:
    """``studies.sweep.TrialPool`` over a DaskTaskRunner: trials as Prefect task runs."""

    def __init__(self, workers: int, address: str = ""):
        from prefect_dask import DaskTaskRunner

        logging.getLogger("distributed").setLevel(logging.WARNING)  # one line per worker event
        if address:
            self.runner = DaskTaskRunner(address=address)
        else:
            self.runner = DaskTaskRunner(
                cluster_class="distributed.LocalCluster",
                cluster_kwargs={
                    "n_workers": workers,
                    "threads_per_worker": 1,
                    "processes": True,
                    "dashboard_address": None,
                },
            )
        self.runner.__enter__()

    def close(self) -> None:
        self.runner.__exit__(None, None, None)

    def submit(self, job: dict[str, Any]) -> PrefectFuture:
        named = trial_task.with_options(task_run_name=f"{job['sweep']}/{job['trial']}")
        return self.runner.submit(named, parameters={"job": job})

    def first_done(self, handles: Sequence[PrefectFuture]) -> PrefectFuture:
        return next(iter(as_completed(list(handles))))

    def result(self, handle: PrefectFuture) -> dict[str, Any]:
        return handle.result()


def _run_name() -> str:
    return f"sweep {Path(str(flow_run.parameters.get('sweep', ''))).stem}"


def worker_threads(workers: int) -> int:
    """Torch threads per trial: the machine's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@flow(name="fame", flow_run_name=_run_name, log_prints=True)
def sweep_flow(
    sweep: str = "configs/sweeps/ml100k-seeds.toml",
    overrides: dict[str, Any] = {},  # noqa: B006 - never mutated
    workers: int = 2,
    address: str = "",
    data_dir: str = "",
) -> dict[str, Any]:
    """A grid or an Optuna study of pipeline runs, trials on a Dask cluster; finished ones are reused.

    Args:
        sweep: Path of the sweep definition (TOML: base config, overrides, then variants, grid
            and seeds, or an Optuna search space and pruner).
        overrides: Fixed config fields added to every trial, as dotted keys, e.g.
            {"paths.artifacts": "/shared/artifacts"}.
        workers: Worker processes of the local Dask cluster (one thread each); also the number
            of Optuna trials in flight.
        address: Scheduler of an existing Dask cluster (tcp://host:8786) instead of a local
            one; its workers must see the same artifact root and data dir paths.
        data_dir: Folder holding the datasets; empty: $FAME_DATA_DIR, else ../shared/data.
    """
    logger = get_run_logger()
    spec = load_sweep(sweep, overrides or {})
    if data_dir:
        spec.data_dir = data_dir
    pools: list[DaskPool] = []

    def pool() -> DaskPool:
        pools.append(DaskPool(workers, address))
        return pools[-1]

    try:
        result = run_sweep(spec, pool, parallel=workers, threads=worker_threads(workers))
    finally:
        for p in pools:
            p.close()
    logger.info(
        "sweep %s: %d trials (%d run now) in %.1fs",
        spec.name,
        len(result.rows),
        result.submitted,
        result.seconds,
    )
    _publish(result)
    return {
        "sweep": spec.name,
        "root": str(result.root),
        "seconds": round(result.seconds, 3),
        "submitted": result.submitted,
        "best": result.best,
        "trials": result.rows,
    }


def _publish(result: SweepResult) -> None:
    """The trial table as the Prefect markdown artifact ``fame-sweep``."""
    columns, rows = report_rows(result.rows)
    body = [
        f"# sweep `{result.spec.name}` ({result.spec.kind}, {len(rows)} trials)",
        "",
        *([result.spec.description, ""] if result.spec.description else []),
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f'`fame sql --artifacts {result.root} "select * from sweeps where sweep = '
        f"'{result.spec.name}'\"`",
    ]
    create_markdown_artifact(markdown="\n".join(body), key="fame-sweep")


def sweep_deployment():
    """``fame/sweep`` (served by ``fame serve`` beside the pipeline deployments)."""
    return sweep_flow.to_deployment(
        name=SWEEP_DEPLOYMENT,
        description="A grid or Optuna sweep of pipeline runs on a Dask cluster.",
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["fame"],
    )
