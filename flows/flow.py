"""The Prefect flow ``fame``: one thin task per pipeline stage, wired as the DAG.

The artifact store decides what is skipped (an unchanged stage costs nothing and is reported as
``skipped``); Prefect's own result caching is off. A task that fails for a transient reason is
retried once; configuration and data errors fail at once, leaving upstream artifacts in place.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

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

# errors that a retry cannot fix
DETERMINISTIC = (PipelineError, ConfigError, ValueError, TypeError, KeyError, FileNotFoundError)
_RUNS: dict[str, RunContext] = {}  # run id -> context, for the tasks of a flow run in this process


def _transient(task_, task_run, state) -> bool:
    try:
        state.result()
    except DETERMINISTIC:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient (I/O, memory, interrupt)
        return True
    return True


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NONE)
def stage_task(run_id: str, stage: str, upstream: list[dict[str, Any]]) -> dict[str, Any]:
    """Run (or skip) one stage; returns its artifact reference. ``upstream`` only draws the DAG."""
    ctx = _RUNS[run_id]
    res = run_stage(ctx, stage)
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


@flow(name="fame", log_prints=True)
def fame(
    config: str = "ml-100k",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    force: list[str] | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """ingest → encode → pretrain → train → evaluate for ``config`` (name or TOML path)."""
    logger = get_run_logger()
    cfg = load_config(config, overrides or {}, data_dir)
    wanted = list(stages) if stages else needed_stages(cfg)
    if unknown := set(wanted) - set(ORDER):
        raise PipelineError(f"unknown stage(s) {sorted(unknown)}; stages are {ORDER}")
    ctx = start_run(cfg, force=force or [], progress=False, config_name=config)
    _RUNS[ctx.run_id] = ctx
    start = time.perf_counter()
    refs: dict[str, dict[str, Any]] = {}
    try:
        precheck(ctx, wanted)
        for name in ORDER:
            if name in wanted:
                ups = [refs[u] for u in upstream_of(name, cfg) if u in refs]
                refs[name] = TASKS[name](ctx.run_id, name, ups)
                if name == "ingest":
                    precheck(ctx, wanted)
    except BaseException as exc:
        finish_run(ctx, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _RUNS.pop(ctx.run_id, None)
    finish_run(ctx, "completed")
    catalog = ctx.store.root / "catalog.duckdb"
    timing = "\n".join(
        f"| {r['stage']} | {'skipped' if r['skipped'] else 'computed'} | {r['seconds']:.2f} | "
        f"`{r['key']}` |"
        for r in refs.values()
    )
    body = [
        f"# fame run `{ctx.run_id}` ({cfg.data.name}, {cfg.model.name}, init={cfg.init.method})",
        "",
        "| stage | status | seconds | key |",
        "|---|---|---:|---|",
        timing,
        "",
    ]
    if "evaluate" in refs:
        body += [
            "## Test and validation metrics (full ranking)",
            "",
            metrics_markdown(ctx.store.root, refs["evaluate"]["key"]),
            "",
        ]
    body += [
        f'Catalog: `{catalog}` — inspect with `fame sql "select * from metrics"` or '
        f"`duckdb -readonly {catalog}`."
    ]
    create_markdown_artifact(
        markdown="\n".join(body), key="fame-run", description=f"fame run {ctx.run_id}"
    )
    for r in refs.values():
        logger.info(
            "stage %-9s %-8s %7.2fs",
            r["stage"],
            "skipped" if r["skipped"] else "computed",
            r["seconds"],
        )
    return {
        "run_id": ctx.run_id,
        "catalog": str(catalog),
        "seconds": round(time.perf_counter() - start, 3),
        "stages": {
            k: {"key": v["key"], "skipped": v["skipped"], "seconds": v["seconds"]}
            for k, v in refs.items()
        },
    }


def deployments() -> list:
    """``fame/full-pipeline`` and one deployment per stage with its ``stages`` preset."""
    deps = [
        fame.to_deployment(
            name="full-pipeline",
            description="The whole DAG for a config.",
            parameters={"config": "ml-100k"},
        )
    ]
    for name in ORDER:
        deps.append(
            fame.to_deployment(
                name=name,
                description=f"Only the {name} stage (upstream from the store).",
                parameters={"config": "ml-100k", "stages": [name]},
            )
        )
    return deps
