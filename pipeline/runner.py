"""Runs stages against the artifact store: keys, skipping, forcing, records, catalog refresh.

Stage keys are a pure function of the config (``plan_keys``), so any stage can run alone: its
upstream artifacts are looked up by key in the store. ``flows/`` calls the same functions, one
Prefect task per stage.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType

from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.provenance import code_version, package_versions
from pipeline.stages import encode, evaluate, ingest, pretrain, train
from pipeline.stages.base import StageOutput  # noqa: F401  (re-exported for stage authors)
from storage import Artifact, ArtifactStore, refresh_catalog, stage_key
from storage.atomic import crash_point
from storage.process import owner

log = logging.getLogger("fame")

STAGES: dict[str, ModuleType] = {
    "ingest": ingest,
    "encode": encode,
    "pretrain": pretrain,
    "train": train,
    "evaluate": evaluate,
}
ORDER = list(STAGES)


@dataclass
class StageResult:
    stage: str
    key: str
    skipped: bool
    seconds: float
    artifact: Artifact

    @property
    def rows(self) -> dict[str, int]:
        return self.artifact.rows


@dataclass
class RunContext:
    """One pipeline run: its config, store, id and what its stages produced."""

    config: RunConfig
    store: ArtifactStore
    run_id: str
    force: set[str] = field(default_factory=set)
    progress: bool = True
    results: dict[str, StageResult] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    keys: dict[str, str] = field(default_factory=dict)
    config_name: str = ""


def upstream_of(stage: str, cfg: RunConfig) -> list[str]:
    return STAGES[stage].upstream(cfg)


def plan_keys(cfg: RunConfig) -> dict[str, str]:
    """Every stage's artifact key for this config (upstream keys folded in, in DAG order)."""
    keys: dict[str, str] = {}
    for name in ORDER:
        mod = STAGES[name]
        ups = {u: keys[u] for u in mod.upstream(cfg)}
        keys[name] = stage_key(name, mod.key_config(cfg), ups, mod.VERSION)
    return keys


def needed_stages(cfg: RunConfig) -> list[str]:
    """The stages a full run of this config needs (encode/pretrain only if the init uses them)."""
    need = {"evaluate"}
    frontier = ["evaluate"]
    while frontier:
        for up in upstream_of(frontier.pop(), cfg):
            if up not in need:
                need.add(up)
                frontier.append(up)
    return [s for s in ORDER if s in need]


def downstream_closure(stages: Iterable[str], cfg: RunConfig) -> set[str]:
    """The given stages plus everything that depends on them."""
    out = set(stages)
    for name in ORDER:
        if any(u in out for u in upstream_of(name, cfg)):
            out.add(name)
    return out


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


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
    refresh_catalog(ctx.store.root)


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


def resolve(ctx: RunContext, stage: str) -> Artifact:
    """The artifact of ``stage`` for this config: from this run, else from the store."""
    if stage in ctx.results:
        return ctx.results[stage].artifact
    art = ctx.store.get(stage, ctx.keys[stage])
    if art is None:
        raise PipelineError(
            f"stage {stage!r} has no artifact for this config (key {ctx.keys[stage]}); "
            f"run it first, e.g. `fame run <config> --stages {stage}`"
        )
    return art


def precheck(ctx: RunContext, stages: Iterable[str]) -> None:
    """Cheap config checks of the given stages, before any heavy work starts.

    Stages may define ``precheck(cfg, items)``; ``items`` is the ingested items table when an
    ingest artifact for this config exists, else None (config-only checks).
    """
    ingest_art = (
        ctx.results["ingest"].artifact
        if "ingest" in ctx.results
        else ctx.store.get("ingest", ctx.keys["ingest"])
    )
    checks = [c for name in stages if (c := getattr(STAGES[name], "precheck", None))]
    items = ingest_art.table("items") if ingest_art and checks else None
    for check in checks:
        check(ctx.config, items)


def run_stage(ctx: RunContext, stage: str) -> StageResult:
    """Run one stage (or skip it when its artifact exists and it is not forced)."""
    if stage not in STAGES:
        raise PipelineError(f"unknown stage {stage!r}; stages are {ORDER}")
    mod, key = STAGES[stage], ctx.keys[stage]
    start = time.perf_counter()
    began = time.time()
    existing = ctx.store.get(stage, key)
    try:
        if existing is not None and stage not in ctx.force:
            result = StageResult(stage, key, True, time.perf_counter() - start, existing)
        else:
            inputs = {u: resolve(ctx, u) for u in mod.upstream(ctx.config)}
            out = mod.compute(ctx, inputs)
            meta = {
                "dataset": ctx.config.data.name,
                "config": mod.key_config(ctx.config),
                "upstream": {u: a.key for u, a in inputs.items()},
                "version": mod.VERSION,
                "run_id": ctx.run_id,
                "compute_seconds": round(time.perf_counter() - start, 3),
                **out.meta,
            }
            art = ctx.store.write(stage, key, tables=out.tables, files=out.files, meta=meta)
            if out.after_publish is not None:
                out.after_publish()
            result = StageResult(stage, key, False, time.perf_counter() - start, art)
    except Exception as exc:
        _record_stage(
            ctx,
            stage,
            key,
            "failed",
            time.perf_counter() - start,
            began,
            {},
            f"{type(exc).__name__}: {exc}",
        )
        log.debug("stage %s failed:\n%s", stage, traceback.format_exc())
        raise
    ctx.results[stage] = result
    _record_stage(
        ctx,
        stage,
        key,
        "skipped" if result.skipped else "computed",
        result.seconds,
        began,
        result.rows,
    )
    crash_point(f"{stage}:record:stage")
    refresh_catalog(ctx.store.root)
    return result


def _record_stage(
    ctx, stage, key, status, seconds, began, rows: dict[str, int], error=None
) -> None:
    ctx.store.record(
        "stages",
        f"{ctx.run_id}__{stage}",
        {
            "run_id": ctx.run_id,
            "stage": stage,
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


def run_pipeline(
    cfg: RunConfig,
    stages: Iterable[str] | None = None,
    force: Iterable[str] = (),
    *,
    progress: bool = True,
    config_name: str = "",
    run_id: str | None = None,
) -> RunContext:
    """Run the requested stages (default: all the config needs) in DAG order, in-process."""
    wanted = list(stages) if stages else needed_stages(cfg)
    if unknown := set(wanted) - set(ORDER):
        raise PipelineError(f"unknown stage(s): {sorted(unknown)}; stages are {ORDER}")
    ctx = start_run(cfg, force=force, progress=progress, config_name=config_name, run_id=run_id)
    try:
        precheck(ctx, wanted)
        for name in ORDER:
            if name in wanted:
                res = run_stage(ctx, name)
                if name == "ingest":
                    precheck(ctx, wanted)
                log.info(
                    "%-9s %s in %.2fs (key %s)",
                    name,
                    "skipped" if res.skipped else "computed",
                    res.seconds,
                    res.key,
                )
    except BaseException as exc:
        finish_run(ctx, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finish_run(ctx, "completed")
    return ctx
