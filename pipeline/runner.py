"""The run loop: which stages a config needs, their keys, and each stage handed to an executor.

Stage keys are a pure function of the config (``plan_keys``), so any stage can run alone: its
upstream artifacts are looked up by key in the store. One stage execution is ``run_task``: from
plain data only (the resolved config, the run id, the stages to recompute and the upstream
artifact refs) it opens the store, skips or computes the stage, records it and refreshes the
catalog, so it can run in another process. ``run_pipeline`` is the one loop over the DAG; its
``executor`` decides how a stage runs: ``in_process`` (the default) calls ``run_task``, the
Prefect flow in ``flows/`` passes a Prefect task that calls it.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from fame.epoch_hook import Pruned
from pipeline.config import RunConfig
from pipeline.context import RunContext, StageRef, StageResult
from pipeline.errors import PipelineError
from pipeline.provenance import code_version, package_versions
from pipeline.registry import ORDER, SOURCE, STAGES, TARGET, VIEWS, stage, upstream_of
from storage import Artifact, ArtifactStore, refresh_catalog, stage_key
from storage.atomic import crash_point
from storage.process import owner

log = logging.getLogger("fame")


class Executor(Protocol):
    """Runs one stage execution (``run_task``'s arguments, all plain data) and returns its ref."""

    def __call__(
        self,
        stage: str,
        *,
        config: dict[str, Any],
        run_id: str,
        force: list[str],
        upstream: dict[str, StageRef],
        progress: bool,
    ) -> StageRef: ...


def plan_keys(cfg: RunConfig) -> dict[str, str]:
    """Every stage's artifact key for this config (upstream keys folded in, in DAG order)."""
    keys: dict[str, str] = {}
    for name, mod in STAGES.items():
        ups = {u: keys[u] for u in mod.upstream(cfg)}
        keys[name] = stage_key(name, mod.key_config(cfg), ups, mod.VERSION)
    return keys


def missing_upstream(cfg: RunConfig, wanted: list[str]) -> list[str]:
    """Stages outside ``wanted`` whose artifact ``wanted`` needs (directly or through another
    missing one) and the store does not hold, in DAG order."""
    keys, store = plan_keys(cfg), ArtifactStore(cfg.artifacts_dir())
    need = set(wanted)
    for name in reversed(ORDER):  # a missing upstream's own upstreams are visited after it
        if name in need:
            need.update(
                up
                for up in upstream_of(name, cfg)
                if up not in need and store.get(up, keys[up]) is None
            )
    return [s for s in ORDER if s in need and s not in wanted]


def uncached(cfg: RunConfig, wanted: list[str]) -> list[str]:
    """The stages of ``wanted`` whose artifact for this config is not in the store."""
    keys, store = plan_keys(cfg), ArtifactStore(cfg.artifacts_dir())
    return [s for s in wanted if store.get(s, keys[s]) is None]


def needed_stages(cfg: RunConfig) -> list[str]:
    """The stages a full run of this config needs (encode/pretrain only if the init uses them)."""
    need = {TARGET}
    frontier = [TARGET]
    while frontier:
        for up in upstream_of(frontier.pop(), cfg):
            if up not in need:
                need.add(up)
                frontier.append(up)
    return [s for s in ORDER if s in need]


def select_stages(cfg: RunConfig, stages: Iterable[str] | None = None) -> list[str]:
    """The stages asked for (default: all the config needs); an unknown name fails here."""
    wanted = list(stages) if stages else needed_stages(cfg)
    if unknown := set(wanted) - set(ORDER):
        raise PipelineError(f"unknown stage(s): {sorted(unknown)}; stages are {ORDER}")
    return wanted


def downstream_closure(stages: Iterable[str], cfg: RunConfig) -> set[str]:
    """The given stages plus everything that depends on them."""
    out = set(stages)
    for name in ORDER:
        if any(u in out for u in upstream_of(name, cfg)):
            out.add(name)
    return out


RUN_ID_RE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # what new_run_id makes


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def task_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as a stage task gets it: plain JSON data with the data dir and artifact root
    resolved here, so a task in another process (other cwd or environment) finds the same files.
    No stage key reads ``paths``, so the keys stay those of ``cfg``."""
    data = cfg.model_dump(mode="json")
    data["paths"] = {"data_dir": str(cfg.data_dir()), "artifacts": str(cfg.artifacts_dir())}
    return data


# -- one stage execution, from plain data ----------------------------------------------------
def run_task(
    stage_name: str,
    *,
    config: Mapping[str, Any],
    run_id: str,
    force: Iterable[str] = (),
    upstream: Mapping[str, StageRef] | None = None,
    progress: bool = False,
) -> StageRef:
    """Run (or skip) one stage of run ``run_id`` and return its artifact ref.

    ``config``: the resolved config as plain data (``task_config``); ``force``: the stages this
    run recomputes even if cached (already closed downstream); ``upstream``: refs
    ``{stage, key}`` of the stage's upstream artifacts (a missing one is taken from the plan).
    Inputs are read from the store by key: nothing here depends on the process that asks.
    """
    cfg = RunConfig.model_validate(dict(config))
    mod = stage(stage_name)
    ctx = RunContext(
        cfg, ArtifactStore(cfg.artifacts_dir()), run_id, set(force), progress, keys=plan_keys(cfg)
    )
    refs = {
        u: dict((upstream or {}).get(u) or {"stage": u, "key": ctx.keys[u]})
        for u in mod.upstream(cfg)
    }
    for u, ref in refs.items():
        if ref.get("key") != ctx.keys[u]:
            raise PipelineError(
                f"stage {stage_name!r}: upstream {u!r} ref has key {ref.get('key')}, but this "
                f"config's {u} key is {ctx.keys[u]}"
            )
    res = _execute(ctx, stage_name, refs)
    return {
        "stage": res.stage,
        "key": res.key,
        "skipped": res.skipped,
        "seconds": res.seconds,
        "path": str(res.artifact.path),
        "rows": dict(res.rows),
    }


def in_process(stage_name: str, **task: Any) -> StageRef:
    """The plain executor: ``run_task`` in this process, one log line per stage."""
    ref = run_task(stage_name, **task)
    log.info(summary(ref))
    return ref


def summary(ref: StageRef) -> str:
    """One line for the log: ``train     computed in 12.30s (key …)``."""
    status = "skipped" if ref["skipped"] else "computed"
    return f"{ref['stage']:<9} {status} in {ref['seconds']:.2f}s (key {ref['key']})"


def _execute(ctx: RunContext, name: str, refs: Mapping[str, StageRef]) -> StageResult:
    """Skip the stage when its artifact exists and it is not forced, else compute and publish
    it; record the execution either way and refresh the catalog."""
    mod, key = STAGES[name], ctx.keys[name]
    start = time.perf_counter()
    began = time.time()
    existing = ctx.store.get(name, key)
    try:
        if existing is not None and name not in ctx.force:
            result = StageResult(name, key, True, time.perf_counter() - start, existing)
        else:
            inputs = {u: _upstream_artifact(ctx, u, ref["key"]) for u, ref in refs.items()}
            out = mod.compute(ctx, inputs)
            if undeclared := set(out.tables) - set(mod.TABLES):
                raise PipelineError(f"stage {name!r} wrote undeclared tables {sorted(undeclared)}")
            meta = {
                "dataset": ctx.config.data.name,
                "config": mod.key_config(ctx.config),
                "upstream": {u: a.key for u, a in inputs.items()},
                "version": mod.VERSION,
                "run_id": ctx.run_id,
                "compute_seconds": round(time.perf_counter() - start, 3),
                **out.meta,
            }
            art = ctx.store.write(
                name, key, tables=out.tables, files=out.files, meta=meta, replace=name in ctx.force
            )
            if out.after_publish is not None:
                out.after_publish()
            result = StageResult(name, key, False, time.perf_counter() - start, art)
    except Exception as exc:
        _record_stage(
            ctx,
            name,
            key,
            _failure(exc),
            time.perf_counter() - start,
            began,
            {},
            f"{type(exc).__name__}: {exc}",
        )
        log.debug("stage %s failed:\n%s", name, traceback.format_exc())
        raise
    _record_stage(
        ctx,
        name,
        key,
        "skipped" if result.skipped else "computed",
        result.seconds,
        began,
        result.rows,
    )
    crash_point(f"{name}:record:stage")
    refresh_catalog(ctx.store.root, VIEWS)
    return result


def _upstream_artifact(ctx: RunContext, name: str, key: str) -> Artifact:
    art = ctx.store.get(name, key)
    if art is None:
        config = ctx.config_name or "<config>"
        raise PipelineError(
            f"stage {name!r} has no artifact for this config (key {key}); compute it first "
            f"with the same options, e.g. `fame run --config {config} --stages {name}` plus "
            "your --set/--data-dir options (or a plain `fame run`, which runs what is missing)"
        )
    return art


def _record_stage(
    ctx, stage_name, key, status, seconds, began, rows: dict[str, int], error=None
) -> None:
    ctx.store.record(
        "stages",
        f"{ctx.run_id}__{stage_name}",
        {
            "run_id": ctx.run_id,
            "stage": stage_name,
            "key": key,
            "status": status,
            "seconds": round(seconds, 4),
            "rows": int(sum(rows.values())),
            "row_counts": str(rows),
            "error": error,
            "started_at": began,
            "ended_at": time.time(),
        },
    )


def recorded_keys(store: ArtifactStore) -> dict[str, dict[str, str]]:
    """run id -> {stage: artifact key} of the stages each recorded run finished (computed or
    found cached): how a run's artifacts are found after the fact, without its raw data."""
    out: dict[str, dict[str, str]] = {}
    for r in store.records("stages"):
        if r.get("status") in ("computed", "skipped"):
            out.setdefault(r["run_id"], {})[r["stage"]] = r["key"]
    return out


# -- the run ---------------------------------------------------------------------------------
def start_run(
    cfg: RunConfig,
    *,
    force: Iterable[str] = (),
    run_id: str | None = None,
    progress: bool = True,
    config_name: str = "",
) -> RunContext:
    force = set(force)
    if unknown := force - set(ORDER):
        raise PipelineError(f"unknown stage(s) in force: {sorted(unknown)}; stages are {ORDER}")
    ctx = RunContext(
        cfg,
        ArtifactStore(cfg.artifacts_dir()),
        run_id or new_run_id(),
        downstream_closure(force, cfg),
        progress,
    )
    ctx.keys = plan_keys(cfg)
    ctx.config_name = config_name
    if swept := {k: v for k, v in ctx.store.sweep().items() if v}:
        log.info("store %s: cleaned up after killed runs: %s", ctx.store.root, swept)
    _record_run(ctx, "running")
    return ctx


def finish_run(ctx: RunContext, status: str, error: str | None = None) -> None:
    _record_run(ctx, status, error=error)
    refresh_catalog(ctx.store.root, VIEWS)


def _record_run(ctx: RunContext, status: str, error: str | None = None) -> None:
    """The ``runs`` row, rewritten at each status: config, code version and package versions."""
    cfg = ctx.config
    ctx.store.record(
        "runs",
        ctx.run_id,
        {
            "run_id": ctx.run_id,
            "dataset": cfg.data.name,
            "model": cfg.model.name,
            "init": cfg.init.method,
            "seed": cfg.train.seed,
            "config": cfg.model_dump_json(),
            "config_name": ctx.config_name or None,
            "code_version": code_version(),
            **owner(),
            "packages": json.dumps(package_versions()),
            "status": status,
            "error": error,
            "started_at": ctx.started_at,
            "ended_at": None if status == "running" else time.time(),
        },
    )


def precheck(ctx: RunContext, stages: Iterable[str]) -> None:
    """Cheap config checks of the given stages, before any heavy work starts.

    Stages may define ``precheck(cfg, items)``; ``items`` is the ingested items table when an
    ingest artifact for this config exists, else None (config-only checks).
    """
    checks = [c for name in stages if (c := getattr(STAGES[name], "precheck", None))]
    if not checks:
        return
    source = (
        ctx.results[SOURCE].artifact
        if SOURCE in ctx.results
        else ctx.store.get(SOURCE, ctx.keys[SOURCE])
    )
    items = source.table("items") if source else None
    for check in checks:
        check(ctx.config, items)


def run_pipeline(
    cfg: RunConfig,
    stages: Iterable[str] | None = None,
    force: Iterable[str] = (),
    *,
    progress: bool = True,
    config_name: str = "",
    run_id: str | None = None,
    executor: Executor = in_process,
) -> RunContext:
    """Run the requested stages (default: all the config needs) in DAG order, each through
    ``executor`` (default: in this process). Returns the run with its stages' results."""
    wanted = select_stages(cfg, stages)
    ctx = start_run(cfg, force=force, progress=progress, config_name=config_name, run_id=run_id)
    config = task_config(cfg)
    refs: dict[str, StageRef] = {}
    try:
        precheck(ctx, wanted)
        for name in ORDER:
            if name not in wanted:
                continue
            # refs of upstream stages run here are the executor's own return values (Prefect
            # draws its task graph from them); the others come from the plan
            ups = {
                u: refs.get(u) or {"stage": u, "key": ctx.keys[u]} for u in upstream_of(name, cfg)
            }
            began = time.perf_counter()
            refs[name] = executor(
                name,
                config=config,
                run_id=ctx.run_id,
                force=sorted(ctx.force),
                upstream=ups,
                progress=ctx.progress,
            )
            ctx.results[name] = _result(ctx, refs[name], time.perf_counter() - began)
            if name == SOURCE:  # prechecks that need the items table
                precheck(ctx, wanted)
    except BaseException as exc:
        finish_run(ctx, _failure(exc), f"{type(exc).__name__}: {exc}")
        raise
    finish_run(ctx, "completed")
    return ctx


def _failure(exc: BaseException) -> str:
    """A run's or stage's status when ``exc`` ended it: ``pruned`` (a sweep gave the trial
    up, see ``studies.pruning``) or ``failed``."""
    return "pruned" if isinstance(exc, Pruned) else "failed"


def _result(ctx: RunContext, ref: StageRef, wall_seconds: float) -> StageResult:
    art = ctx.store.get(ref["stage"], ref["key"])
    if art is None:
        raise PipelineError(
            f"stage {ref['stage']!r} reported artifact {ref['key']}, but the store at "
            f"{ctx.store.root} does not hold it (does the executor write to another store?)"
        )
    return StageResult(ref["stage"], ref["key"], ref["skipped"], ref["seconds"], art, wall_seconds)
