"""The Prefect flow ``fame``: one thin task per pipeline stage, wired as the DAG, and its
deployments (``fame/full-pipeline`` and one per stage).

The artifact store decides what is skipped (an unchanged stage costs nothing and is reported as
``skipped``); Prefect's result caching is off. A task that fails for a transient reason is
retried once; configuration and data errors fail at once. Either way the artifacts of the
stages before it stay in the store, so the next run resumes there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.deployments.runner import EntrypointType
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from pipeline.config import ConfigError, load_config
from pipeline.errors import PipelineError
from pipeline.report import metrics_markdown
from pipeline.runner import (
    ORDER,
    RunContext,
    finish_run,
    needed_stages,
    precheck,
    run_stage,
    start_run,
    upstream_of,
)

# errors that a retry cannot fix (ConfigError is a ValueError)
DETERMINISTIC = (PipelineError, ConfigError, ValueError, TypeError, KeyError, FileNotFoundError)
# run id -> context of the flow runs in this process; tasks run in the flow's process
_RUNS: dict[str, RunContext] = {}


def is_transient(task_, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry unless the error is deterministic."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result()
        except BaseException as raised:  # noqa: BLE001 - the failure being classified
            exc = raised
    return not isinstance(exc, DETERMINISTIC)


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def stage_task(run_id: str, stage: str, upstream: list[dict[str, Any]]) -> dict[str, Any]:
    """Run (or skip) one stage; returns its artifact reference. ``upstream`` (the upstream
    tasks' references) is not read: passing it draws the DAG edges in the Prefect UI."""
    res = run_stage(_RUNS[run_id], stage)
    get_run_logger().info(
        "%s %s in %.2fs (key %s)",
        stage,
        "skipped" if res.skipped else "computed",
        res.seconds,
        res.key,
    )
    return {
        "stage": stage,
        "key": res.key,
        "skipped": res.skipped,
        "seconds": round(res.seconds, 3),
        "path": str(res.artifact.path),
        "rows": res.rows,
    }


TASKS = {name: stage_task.with_options(name=name, task_run_name=name) for name in ORDER}


def _stage_list(value: list[str] | str | None) -> list[str]:
    """``["train", "evaluate"]`` or ``"train,evaluate"`` (handy with ``--param stages=train``)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [s.strip() for s in items if s.strip()]


def _run_name() -> str:
    params = flow_run.parameters
    stages = _stage_list(params.get("stages"))
    return f"{params.get('config', 'ml-100k')}" + (f" [{','.join(stages)}]" if stages else "")


@contextlib.contextmanager
def _pipeline_logs_to_prefect() -> Iterator[None]:
    """Send the pipeline's ``fame`` logger (epoch lines, warnings) to the flow run's logs."""
    logger = logging.getLogger("fame")
    if any(isinstance(h, APILogHandler) for h in logger.handlers):
        yield
        return
    handler = APILogHandler()
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@flow(name="fame", flow_run_name=_run_name, log_prints=True)
def fame(
    config: str = "ml-100k",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | str | None = None,
    force: list[str] | str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """ingest → encode → pretrain → train → evaluate for ``config`` (a name under configs/ or a
    TOML path). ``overrides``: dotted keys, e.g. {"train.epochs": 3}; ``stages``: the subset to
    run (upstream artifacts come from the store); ``force``: stages to recompute (with all that
    depends on them) even if cached."""
    logger = get_run_logger()
    cfg = load_config(config, overrides or {}, data_dir)
    wanted = _stage_list(stages) or needed_stages(cfg)
    if unknown := set(wanted) - set(ORDER):
        raise PipelineError(f"unknown stage(s) {sorted(unknown)}; stages are {ORDER}")
    ctx = start_run(cfg, force=_stage_list(force), progress=False, config_name=config)
    logger.info("pipeline run %s: stages %s, artifacts %s", ctx.run_id, wanted, ctx.store.root)
    _RUNS[ctx.run_id] = ctx
    start = time.perf_counter()
    refs: dict[str, dict[str, Any]] = {}
    try:
        with _pipeline_logs_to_prefect():
            precheck(ctx, wanted)
            for name in ORDER:
                if name not in wanted:
                    continue
                ups = [refs[u] for u in upstream_of(name, cfg) if u in refs]
                began = time.perf_counter()
                refs[name] = TASKS[name](ctx.run_id, name, ups)
                refs[name]["wall_seconds"] = round(time.perf_counter() - began, 3)
                if name == "ingest":  # prechecks that need the items table
                    precheck(ctx, wanted)
    except BaseException as exc:
        finish_run(ctx, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _RUNS.pop(ctx.run_id, None)
    finish_run(ctx, "completed")
    catalog = ctx.store.root / "catalog.duckdb"
    for r in refs.values():
        logger.info(
            "stage %-9s %-8s %7.2fs (task %.2fs)",
            r["stage"],
            "skipped" if r["skipped"] else "computed",
            r["seconds"],
            r["wall_seconds"],
        )
    _publish(ctx, refs, catalog)
    return {
        "run_id": ctx.run_id,
        "catalog": str(catalog),
        "seconds": round(time.perf_counter() - start, 3),
        "stages": {
            k: {
                "key": v["key"],
                "skipped": v["skipped"],
                "seconds": v["seconds"],
                "wall_seconds": v["wall_seconds"],
            }
            for k, v in refs.items()
        },
    }


def _publish(ctx: RunContext, refs: dict[str, dict[str, Any]], catalog) -> None:
    """The run summary as a Prefect markdown artifact (key ``fame-run``): timings, metrics."""
    cfg = ctx.config
    body = [
        f"# fame run `{ctx.run_id}` ({cfg.data.name}, {cfg.model.name}, init={cfg.init.method})",
        "",
        "| stage | status | seconds | key | artifact |",
        "|---|---|---:|---|---|",
        *(
            f"| {r['stage']} | {'skipped' if r['skipped'] else 'computed'} | "
            f"{r['seconds']:.2f} | `{r['key']}` | `{r['path']}` |"
            for r in refs.values()
        ),
        "",
    ]
    if "evaluate" in refs:
        body += [
            "## Metrics (full ranking)",
            "",
            metrics_markdown(ctx.store.root, refs["evaluate"]["key"]),
            "",
        ]
    body.append(
        f"Catalog: `{catalog}`; inspect it with "
        f'`fame sql --artifacts {ctx.store.root} "select * from stages where run_id = '
        f"'{ctx.run_id}'\"` or `duckdb -readonly {catalog}`."
    )
    create_markdown_artifact(
        markdown="\n".join(body), key="fame-run", description=f"fame run {ctx.run_id}"
    )


def deployments() -> list:
    """``fame/full-pipeline`` and one deployment per stage with its ``stages`` preset."""
    common = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["fame"]}
    deps = [
        fame.to_deployment(
            name="full-pipeline",
            description="The whole DAG for a config; cached stages are skipped.",
            parameters={"config": "ml-100k"},
            **common,
        )
    ]
    for name in ORDER:
        deps.append(
            fame.to_deployment(
                name=name,
                description=f"Only the {name} stage; its upstream artifacts come from the store.",
                parameters={"config": "ml-100k", "stages": [name]},
                **common,
            )
        )
    return deps
