"""The Prefect flow ``fame``: the pipeline's run loop (``pipeline.runner.run_pipeline``) with a
Prefect task per stage as its executor, and its deployments (``fame/full-pipeline`` and one per
stage of the registry).

A stage task gets plain data only (the resolved config, the run id, the stages to recompute and
its upstream artifact refs) and reads its inputs from the store by key, so it could run in
another process; passing the upstream tasks' refs draws the DAG in the Prefect UI. The artifact
store decides what is skipped (an unchanged stage costs nothing and is reported as
``skipped``); Prefect's result caching is off. A task that fails for a transient reason is
retried once; configuration and data errors fail at once. Either way the artifacts of the
stages before it stay in the store, so the next run resumes there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.deployments.runner import EntrypointType
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from app.report import groups_markdown, metrics_markdown
from flows.server import FULL_PIPELINE
from pipeline.config import ConfigError, load_config
from pipeline.context import RunContext, StageRef
from pipeline.errors import PipelineError
from pipeline.registry import ORDER, TARGET
from pipeline.runner import RUN_ID_RE, new_run_id, run_pipeline, run_task, select_stages, summary

# errors that a retry cannot fix (ConfigError is a ValueError)
DETERMINISTIC = (PipelineError, ConfigError, ValueError, TypeError, KeyError, FileNotFoundError)


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
def stage_task(
    stage: str,
    config: dict[str, Any],
    run_id: str,
    force: list[str],
    upstream: dict[str, StageRef],
    progress: bool = False,
) -> StageRef:
    """Run (or skip) one stage (``pipeline.runner.run_task``); returns its artifact ref."""
    ref = run_task(
        stage, config=config, run_id=run_id, force=force, upstream=upstream, progress=progress
    )
    get_run_logger().info(summary(ref))
    return ref


TASKS = {name: stage_task.with_options(name=name, task_run_name=name) for name in ORDER}


def prefect_executor(stage: str, **task_args: Any) -> StageRef:
    """The runner's executor: the stage's Prefect task, called in the flow."""
    return TASKS[stage](stage, **task_args)


def _stage_list(value: list[str] | str | None) -> list[str]:
    """``["train", "evaluate"]`` or ``"train,evaluate"`` (handy with ``--param stages=train``)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [s.strip() for s in items if s.strip()]


def run_name(params: dict[str, Any]) -> str:
    """``ml-100k-fame-facet_pretrain`` (+ `` [train,evaluate]`` for a subset): dataset, model and
    init, so that runs of one config with other models tell apart in the UI. A config that does
    not load is named as given (the run then fails on it)."""
    config = params.get("config") or "ml-100k"
    stages = _stage_list(params.get("stages"))
    try:
        cfg = load_config(config, params.get("overrides") or {}, params.get("data_dir") or None)
        name = f"{cfg.data.name}-{cfg.model.name}-{cfg.init.method}"
    except (ConfigError, PipelineError, OSError, ValueError):
        name = str(config)
    return name + (f" [{','.join(stages)}]" if stages else "")


def _run_name() -> str:
    return run_name(flow_run.parameters)


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


# Parameters have concrete defaults, not None: the UI's form shows "Property is type None" for
# a None default. The mutable ones are never mutated (Prefect passes validated copies anyway).
@flow(name="fame", flow_run_name=_run_name, log_prints=True)
def fame(
    config: str = "ml-100k",
    overrides: dict[str, Any] = {},  # noqa: B006
    stages: list[str] | str = [],  # noqa: B006
    force: list[str] | str = [],  # noqa: B006
    data_dir: str = "",
    run_id: str = "",
) -> dict[str, Any]:
    """ingest → encode → pretrain → train → evaluate for a config; cached stages are skipped.

    Args:
        config: Config name under configs/ (ml-100k, beauty, sports, lastfm, synthetic) or a
            path to a TOML file.
        overrides: Config fields to change, as dotted keys, e.g.
            {"train.epochs": 3, "model.name": "sasrec"}.
        stages: Stages to run, a list or a comma-separated string of ingest, encode, pretrain,
            train, evaluate; empty runs all the config needs. Upstream artifacts of a subset
            come from the store.
        force: Stages to recompute even if cached (everything downstream of them too); a list
            or a comma-separated string.
        data_dir: Folder holding the datasets; empty: $FAME_DATA_DIR, else ../shared/data,
            else ./data.
        run_id: The pipeline run's id in the catalog; empty: a new one. A caller that must find
            its own run afterwards (``fame demo``) chooses it, since others may run beside it.
    """
    logger = get_run_logger()
    cfg = load_config(config, overrides or {}, data_dir or None)
    wanted = select_stages(cfg, _stage_list(stages))
    if run_id and not RUN_ID_RE.fullmatch(run_id):
        raise PipelineError(f"run_id {run_id!r} must look like {new_run_id()!r}")
    run_id = run_id or new_run_id()
    logger.info("pipeline run %s: stages %s, artifacts %s", run_id, wanted, cfg.artifacts_dir())
    start = time.perf_counter()
    with _pipeline_logs_to_prefect():
        ctx = run_pipeline(
            cfg,
            wanted,
            _stage_list(force),
            progress=False,
            config_name=config,
            run_id=run_id,
            executor=prefect_executor,
        )
    catalog = ctx.store.root / "catalog.duckdb"
    for r in ctx.results.values():
        logger.info(
            "stage %-9s %-8s %7.2fs (task %.2fs)",
            r.stage,
            "skipped" if r.skipped else "computed",
            r.seconds,
            r.wall_seconds,
        )
    _publish(ctx, catalog, _report(ctx) if TARGET in ctx.results else None)
    return {
        "run_id": ctx.run_id,
        "catalog": str(catalog),
        "seconds": round(time.perf_counter() - start, 3),
        "stages": {
            name: {
                "key": r.key,
                "skipped": r.skipped,
                "seconds": round(r.seconds, 3),
                "wall_seconds": round(r.wall_seconds, 3),
            }
            for name, r in ctx.results.items()
        },
    }


def _report(ctx: RunContext) -> Path | None:
    """The run's HTML report (``fame report``), linked as the artifact ``fame-report``. A
    failure is logged, not raised: the pipeline run itself succeeded."""
    from app.run_report import write_run_report

    try:
        path = _cached_report(ctx) or write_run_report(ctx)
    except Exception as exc:  # noqa: BLE001 - a report must not fail a finished run
        get_run_logger().warning("no run report: %s: %s", type(exc).__name__, exc)
        return None
    create_link_artifact(
        link=path.as_uri(),
        link_text=path.name,
        key="fame-report",
        description=f"fame run {ctx.run_id}: self-contained HTML report (curves, metrics, gate)",
    )
    # browsers refuse file:// links from a web page: the UI also gets the report's tables
    key = ctx.results[TARGET].key
    body = [
        f"# Report of fame run `{ctx.run_id}`",
        "",
        f"The whole report (curves, gate and router, facets) is `{path}`: open it from this "
        f"machine, or write it again with `fame report --run {ctx.run_id}`.",
        "",
        "## Metrics (full ranking)",
        "",
        metrics_markdown(ctx.store.root, key),
    ]
    if groups := groups_markdown(ctx.store.root, key):
        body += ["", "## Test NDCG@10 by group of users (history excluded)", "", groups]
    create_markdown_artifact(
        markdown="\n".join(body),
        key="fame-report-summary",
        description=f"fame run {ctx.run_id}: the HTML report's tables, and where it is",
    )
    return path


def _cached_report(ctx: RunContext) -> Path | None:
    """When every stage was found cached, the report an earlier run wrote of the same
    evaluation (its content follows from the artifacts): a cached run then costs no model pass."""
    if not all(r.skipped for r in ctx.results.values()):
        return None
    from pipeline.runner import recorded_keys

    key = ctx.results[TARGET].key
    runs = {
        run_id
        for run_id, stages in recorded_keys(ctx.store).items()
        if stages.get(TARGET) == key and run_id != ctx.run_id
    }
    found = [p for p in (ctx.store.root / "_reports").glob("*.html") if p.stem in runs]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _publish(ctx: RunContext, catalog, report: Path | None = None) -> None:
    """The run summary as a Prefect markdown artifact (key ``fame-run``): timings, metrics,
    where the HTML report is."""
    cfg = ctx.config
    body = [
        f"# fame run `{ctx.run_id}` ({cfg.data.name}, {cfg.model.name}, init={cfg.init.method})",
        "",
        "| stage | status | seconds | key | artifact |",
        "|---|---|---:|---|---|",
        *(
            f"| {r.stage} | {'skipped' if r.skipped else 'computed'} | "
            f"{r.seconds:.2f} | `{r.key}` | `{r.artifact.path}` |"
            for r in ctx.results.values()
        ),
        "",
    ]
    if TARGET in ctx.results:
        body += [
            "## Metrics (full ranking)",
            "",
            metrics_markdown(ctx.store.root, ctx.results[TARGET].key),
            "",
        ]
    if report is not None:
        body += [
            f"Report: `{report}` (open it in a browser; `fame report --run ID` rewrites it).",
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
    """``fame/full-pipeline`` and one deployment per stage with its ``stages`` preset (the
    names ``flows.server.DEPLOYMENTS`` waits for)."""
    common = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["fame"]}
    deps = [
        fame.to_deployment(
            name=FULL_PIPELINE,
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
