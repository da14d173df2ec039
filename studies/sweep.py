"""Sweeps: many pipeline runs of one base config, named variants × a grid over config fields
× seeds, or an Optuna study, each trial a normal run (``run_pipeline``) whose shared upstream
artifacts come from the store.

The loop here knows nothing of Prefect or Dask: it hands each trial, as plain data
(``run_trial``'s payload), to a ``TrialPool`` and waits on what it returns. ``flows.sweep``
passes Prefect tasks on a Dask cluster; ``InlinePool`` runs them one by one in this process.
Before the fan-out the upstream stages the trials share (ingest, encode, pretrain: every stage
not downstream of train) are computed once per distinct key, so trials only read them. A trial
whose train and evaluate keys already belong to a completed run is not run again: its metrics
are read back (``status = reused``, or ``cached`` when this sweep recorded it before). Each
trial is one ``sweeps`` record (a catalog view, like ``runs``); an Optuna study is kept in
``<artifacts>/_sweeps/<name>/study.db`` so a rerun with a larger budget continues it, and its
trials report every epoch there for pruning (``studies.pruning``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import statistics
import time
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fame.epoch_hook import Pruned, epoch_hook
from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.registry import TARGET, VIEWS
from pipeline.runner import (
    downstream_closure,
    needed_stages,
    new_run_id,
    plan_keys,
    recorded_keys,
    run_pipeline,
    task_config,
)
from storage import ArtifactStore, refresh_catalog
from storage.store import canonical_json
from studies.pruning import make_pruner, storage, study_reporter

log = logging.getLogger("fame")

MODEL_STAGE = "train"  # what a trial is for; every needed stage not downstream of it is shared
RECORD = "sweeps"  # record kind, and the catalog view over it
SWEEPS_DIR = "_sweeps"  # per-sweep state under the artifact root (the Optuna study)
DONE = ("completed", "reused", "cached")  # statuses with metrics
PRUNED = "pruned"  # an Optuna trial given up: its last valid metrics, no test metrics
METRICS = ("valid_ndcg10", "valid_hr10", "test_ndcg10", "test_hr10")
NAME = r"^[A-Za-z0-9_.-]+$"


# -- the definition (TOML) ------------------------------------------------------------------
def _dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 5}}`` and ``{"train.epochs": 5}`` both as ``{"train.epochs": 5}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_dotted(value, f"{name}."))
        else:
            out[name] = value
    return out


class Variant(BaseModel):
    """A named setting of a grid sweep (most comparisons are a few hand-picked settings, not
    a product): overrides on top of the sweep's, a label for tables (default: the name) and,
    where they differ from the sweep's, its own seeds."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    label: str = ""
    overrides: dict[str, Any] = {}
    seeds: list[int] | None = None

    @field_validator("overrides", mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        return _dotted(value) if isinstance(value, Mapping) else value

    @field_validator("seeds")
    @classmethod
    def _some(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and not seeds:
            raise ValueError("a variant's seeds, when given, need at least one seed")
        return seeds

    @model_validator(mode="after")
    def _label(self) -> Variant:
        self.label = self.label or self.name
        return self


class Dimension(BaseModel):
    """One field of an Optuna search space: ``float`` (``log`` for a log-uniform), ``int`` or
    ``categorical`` (``choices``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Dimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} dimension needs low <= high")
        return self

    def distribution(self) -> Any:
        from optuna import distributions as d

        if self.type == "categorical":
            return d.CategoricalDistribution(self.choices)
        if self.type == "int":
            step = int(self.step or 1)
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=step)
        return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class OptunaSpec(BaseModel):
    """An Optuna study maximising the primary protocol's valid NDCG@10 (TPE, seeded), pruning
    trials whose valid NDCG@10 after an epoch is below the median of the complete trials' at
    that epoch (``pruner = "none"``: every trial trains to the end)."""

    model_config = ConfigDict(extra="forbid")
    n_trials: int = Field(gt=0)
    seed: int = 0
    space: dict[str, Dimension]
    pruner: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0)  # complete trials before any pruning
    n_warmup_steps: int = Field(0, ge=0)  # no pruning before this epoch (steps: epochs 1, 2, …)

    def pruning(self) -> dict[str, Any] | None:
        """The pruner as plain data for a trial's payload; None: no pruning, no reports."""
        if self.pruner == "none":
            return None
        return self.model_dump(include={"pruner", "n_startup_trials", "n_warmup_steps"})


class SweepSpec(BaseModel):
    """A sweep definition: base config + fixed overrides, then variants × a grid × seeds, or a
    study. ``meta`` is free-form, for tools that read definitions (``bench/experiments.py``:
    run names, paired comparisons); the sweep ignores it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    config: str
    description: str = ""
    overrides: dict[str, Any] = {}
    variants: list[Variant] = []
    grid: dict[str, list[Any]] = {}
    seeds: list[int] = []
    optuna: OptunaSpec | None = None
    data_dir: str | None = None
    meta: dict[str, Any] = {}

    @field_validator("grid")
    @classmethod
    def _values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if empty := [name for name, values in grid.items() if not values]:
            raise ValueError(f"every grid field needs at least one value: {empty}")
        return grid

    @field_validator("variants")
    @classmethod
    def _unique(cls, variants: list[Variant]) -> list[Variant]:
        for attr in ("name", "label"):
            seen = [getattr(v, attr) for v in variants]
            if dupes := sorted({x for x in seen if seen.count(x) > 1}):
                raise ValueError(f"variant {attr}s must differ: {dupes} more than once")
        return variants

    @model_validator(mode="after")
    def _one_kind(self) -> SweepSpec:
        if self.optuna is not None and (self.grid or self.seeds or self.variants):
            raise ValueError(
                "a sweep is a grid (variants/grid/seeds) or an Optuna study (optuna), not both"
            )
        seeded = self.seeds or any(v.seeds for v in self.variants)
        tables = [self.overrides, self.grid, *(v.overrides for v in self.variants)]
        if seeded and any("train.seed" in t for t in tables):
            raise ValueError(
                "seeds sets train.seed: leave it out of overrides, grid and variants.overrides"
            )
        return self

    @property
    def kind(self) -> str:
        return "optuna" if self.optuna is not None else "grid"


def load_sweep(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """A sweep TOML (``[sweep]`` name/config/description/seeds, ``[overrides]``,
    ``[[variants]]`` and/or ``[grid]``, or ``[optuna]`` + ``[optuna.space."field"]``; ``[meta]``)
    plus extra fixed overrides (``--set``). A relative ``config`` path is read relative to the
    sweep file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the sweep: {exc}") from exc
    head = dict(raw.pop("sweep", {}))
    config = str(head.get("config", ""))
    if config.endswith(".toml") and not Path(config).is_absolute():
        config = str((path.parent / config).resolve())
    data = {
        **head,
        "config": config,
        "overrides": {**_dotted(raw.pop("overrides", {})), **dict(overrides or {})},
        "grid": _dotted(raw.pop("grid", {})),
        **raw,
    }
    data.setdefault("name", path.stem)
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid sweep"]
        for err in exc.errors():
            where = ".".join(map(str, err["loc"]))
            lines.append(f"  {where}: {err['msg']}" if where else f"  {err['msg']}")
        raise ConfigError("\n".join(lines)) from exc


# -- trials ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    name: str
    params: dict[str, Any]  # what the grid or the study sets, and train.seed
    variant: Variant | None = None

    @property
    def overrides(self) -> dict[str, Any]:
        """Everything the trial sets on top of the sweep's overrides."""
        return {**(self.variant.overrides if self.variant else {}), **self.params}


def grid_trials(spec: SweepSpec) -> list[Trial]:
    """Each variant (or the base config alone) × the grid's product in field order, once per
    seed; seed-major, variants in file order within a seed, so a sweep cut short has every
    setting side by side on its first seeds. A variant's own ``seeds`` replace the sweep's."""
    fields = list(spec.grid)
    settings = [
        dict(zip(fields, combo, strict=True)) for combo in itertools.product(*spec.grid.values())
    ]
    variants: list[Variant | None] = list(spec.variants) or [None]

    def seeds_of(v: Variant | None) -> list[int | None]:
        return list(v.seeds if v is not None and v.seeds is not None else spec.seeds) or [None]

    trials: list[Trial] = []
    for seed in dict.fromkeys(s for v in variants for s in seeds_of(v)):
        for v in (v for v in variants if seed in seeds_of(v)):
            for setting in settings:
                params = {**setting, **({} if seed is None else {"train.seed": seed})}
                trials.append(Trial(f"t{len(trials):03d}", params, v))
    return trials


def trial_config(spec: SweepSpec, params: Mapping[str, Any]) -> RunConfig:
    return load_config(spec.config, {**spec.overrides, **params}, spec.data_dir)


def payload(
    spec: SweepSpec,
    cfg: RunConfig,
    trial: str,
    stages: list[str] | None = None,
    threads: int | None = None,
    prune: Mapping[str, Any] | None = None,
) -> dict:
    """What a worker gets (plain data): the resolved config with absolute paths
    (``task_config``), so a worker on another machine or working directory reads and writes
    the same store; ``threads`` caps torch's threads so workers do not oversubscribe;
    ``prune``: where the trial reports its epochs (``studies.pruning.study_reporter``)."""
    return {
        "sweep": spec.name,
        "trial": trial,
        "config": task_config(cfg),
        "config_name": spec.config,
        "stages": stages,
        "threads": threads,
        "prune": dict(prune) if prune else None,
    }


def run_trial(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one trial (or the shared upstream stages, ``stages``) in this process; returns the
    run id and its keys, or for a pruned trial ``pruned``: its last epoch and valid metrics (a
    value, not an error: nothing retries it). Called on a worker: everything is in ``job``."""
    if job.get("threads"):
        import torch

        torch.set_num_threads(int(job["threads"]))
    cfg = RunConfig.model_validate(dict(job["config"]))
    hook = study_reporter(job["prune"]) if job.get("prune") else None
    start, run_id = time.perf_counter(), new_run_id()
    out: dict[str, Any] = {"run_id": run_id, "keys": {}, "pid": os.getpid()}
    try:
        with epoch_hook(hook):
            ctx = run_pipeline(
                cfg,
                job.get("stages"),
                progress=False,
                config_name=str(job.get("config_name", "")),
                run_id=run_id,
            )
        out["keys"] = {s: r.key for s, r in ctx.results.items()}
    except Pruned as exc:
        out["pruned"] = {"epoch": exc.epoch, "valid": exc.valid}
    return {**out, "seconds": round(time.perf_counter() - start, 3)}


def trial_metrics(store: ArtifactStore, evaluate_key: str, protocol: str) -> dict[str, float]:
    """Valid/test NDCG@10 and HR@10 of ``protocol``, from the evaluate artifact's manifest."""
    art = store.get(TARGET, evaluate_key)
    if art is None:
        raise ConfigError(f"no evaluate artifact {evaluate_key} in {store.root}")
    found = art.manifest.get("metrics", {})
    return {
        f"{split}_{name.replace('@', '')}": float(found[f"{protocol}/{split}"][name])
        for split in ("valid", "test")
        for name in ("ndcg@10", "hr@10")
    }


def finished_runs(store: ArtifactStore) -> dict[tuple[str, str], str]:
    """(train key, evaluate key) -> the newest completed run that used both."""
    runs = {r["run_id"]: r for r in store.records("runs") if r.get("status") == "completed"}
    used = {r: keys for r, keys in recorded_keys(store).items() if r in runs}
    out: dict[tuple[str, str], str] = {}
    for run_id in sorted(used, key=lambda r: runs[r]["started_at"]):
        keys = used[run_id]
        if MODEL_STAGE in keys and TARGET in keys and store.get(TARGET, keys[TARGET]):
            out[(keys[MODEL_STAGE], keys[TARGET])] = run_id
    return out


# -- where trials run -----------------------------------------------------------------------
class TrialPool(Protocol):
    """Runs ``run_trial`` payloads: ``submit`` returns a handle, ``first_done`` blocks until
    one of the handles is done and returns it, ``result`` gives its value or raises."""

    def submit(self, job: dict[str, Any]) -> Any: ...

    def first_done(self, handles: Sequence[Any]) -> Any: ...

    def result(self, handle: Any) -> dict[str, Any]: ...


@dataclass
class _Done:
    value: dict[str, Any] | None = None
    error: BaseException | None = None


class InlinePool:
    """Each trial at once in this process (no cluster): the sequential reference."""

    def submit(self, job: dict[str, Any]) -> _Done:
        try:
            return _Done(run_trial(job))
        except Exception as exc:  # noqa: BLE001 - a failed trial is a result of the sweep
            return _Done(error=exc)

    def first_done(self, handles: Sequence[_Done]) -> _Done:
        return handles[0]

    def result(self, handle: _Done) -> dict[str, Any]:
        if handle.error is not None:
            raise handle.error
        assert handle.value is not None
        return handle.value


# -- the sweep ------------------------------------------------------------------------------
@dataclass
class SweepResult:
    spec: SweepSpec
    root: Path
    rows: list[dict[str, Any]]
    seconds: float
    submitted: int = 0  # trials handed to the pool in this call (not reused or cached)
    best: dict[str, Any] | None = None


@dataclass
class _Sweep:
    """One call of ``run_sweep``: the store, what is already finished, and the records."""

    spec: SweepSpec
    pool: Callable[[], TrialPool]
    store: ArtifactStore
    done: dict[tuple[str, str], str]
    previous: dict[str, dict[str, Any]]
    threads: int | None = None
    protocol: str = ""
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    submitted: int = 0
    _pool: TrialPool | None = None

    def get_pool(self) -> TrialPool:
        if self._pool is None:  # a sweep with nothing to run starts no cluster
            self._pool = self.pool()
        return self._pool

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows[row["trial"]] = row
        self.store.record(RECORD, f"{self.spec.name}__{row['trial']}", row)
        refresh_catalog(self.store.root, VIEWS)
        return row

    def base_row(self, trial: Trial, cfg: RunConfig) -> dict[str, Any]:
        keys = plan_keys(cfg)
        self.protocol = cfg.evaluate.primary
        return {
            "sweep": self.spec.name,
            "kind": self.spec.kind,
            "trial": trial.name,
            "variant": trial.variant.name if trial.variant else None,
            "label": trial.variant.label if trial.variant else None,
            "params": canonical_json(trial.params),
            "run_id": None,
            "train_key": keys[MODEL_STAGE],
            "evaluate_key": keys[TARGET],
            "protocol": self.protocol,
            **dict.fromkeys(METRICS),
            "epochs": None,  # trained: epochs run (a pruned trial's: until it was pruned)
            "status": "running",
            "error": None,
            "seconds": None,
            "started_at": time.time(),
            "ended_at": None,
        }

    def launch(
        self, trial: Trial, prune: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], Any | None]:
        """The trial's row, and its pool handle when it has to run (None: finished before)."""
        cfg = trial_config(self.spec, trial.overrides)
        row = self.base_row(trial, cfg)
        before = self.previous.get(trial.name)
        same = before and before.get("evaluate_key") == row["evaluate_key"]
        if same and before.get("status") in DONE and self.store.get(TARGET, row["evaluate_key"]):
            self.rows[trial.name] = {**before, "status": "cached"}
            return self.rows[trial.name], None
        if run_id := self.done.get((row["train_key"], row["evaluate_key"])):
            return self.finish(row, {"run_id": run_id}, status="reused"), None
        self.record(row)
        self.submitted += 1
        return row, self.get_pool().submit(
            payload(self.spec, cfg, trial.name, threads=self.threads, prune=prune)
        )

    def finish(
        self, row: dict[str, Any], out: Mapping[str, Any], status: str = "completed"
    ) -> dict[str, Any]:
        metrics = trial_metrics(self.store, row["evaluate_key"], row["protocol"])
        train = self.store.get(MODEL_STAGE, row["train_key"])
        return self.record(
            {
                **row,
                **metrics,
                "epochs": train.manifest.get("epochs_run") if train else None,
                "run_id": out["run_id"],
                "status": status,
                "seconds": out.get("seconds"),
                "ended_at": time.time(),
            }
        )

    def collect(self, row: dict[str, Any], handle: Any) -> dict[str, Any]:
        try:
            out = self.get_pool().result(handle)
        except Exception as exc:  # noqa: BLE001 - recorded; the other trials go on
            log.warning("sweep %s: trial %s failed: %s", self.spec.name, row["trial"], exc)
            error = f"{type(exc).__name__}: {exc}"
            return self.record({**row, "status": "failed", "error": error, "ended_at": time.time()})
        if pruned := out.get("pruned"):
            return self.record(
                {
                    **row,
                    "valid_ndcg10": pruned["valid"].get("ndcg@10"),
                    "valid_hr10": pruned["valid"].get("hr@10"),
                    "epochs": pruned["epoch"],
                    "run_id": out["run_id"],
                    "status": PRUNED,
                    "seconds": out.get("seconds"),
                    "ended_at": time.time(),
                }
            )
        return self.finish(row, out)


def run_sweep(
    spec: SweepSpec,
    pool: Callable[[], TrialPool] = InlinePool,
    *,
    parallel: int = 1,
    threads: int | None = None,
    only: Collection[str] | None = None,
) -> SweepResult:
    """Run the sweep's trials through ``pool`` (made on first need), at most ``parallel`` Optuna
    trials in flight (a grid submits all at once: the pool queues them), each with ``threads``
    torch threads (None: torch's default). ``only``: the grid trials (by name) to run in this
    call, the others left as they are. Returns every trial's row, in trial order."""
    start = time.perf_counter()
    trials = grid_trials(spec) if spec.optuna is None else []
    if only is not None:
        if spec.optuna is not None:
            raise ConfigError(f"sweep {spec.name}: only picks grid trials, not Optuna ones")
        if unknown := set(only) - {t.name for t in trials}:
            raise ConfigError(f"sweep {spec.name} has no trial(s) {sorted(unknown)}")
        trials = [t for t in trials if t.name in only]
    first = trial_config(spec, trials[0].overrides if trials else {})
    store = ArtifactStore(first.artifacts_dir())
    previous = {r["trial"]: r for r in store.records(RECORD) if r.get("sweep") == spec.name}
    sweep = _Sweep(spec, pool, store, finished_runs(store), previous, threads)
    if spec.optuna is None:
        _prepare(sweep, [trial_config(spec, t.overrides) for t in trials])
        launched = [sweep.launch(t) for t in trials]
        for row, handle in launched:
            if handle is not None:
                sweep.collect(row, handle)
        best = None
    else:
        best = _optuna(sweep, max(1, parallel))
    rows = sorted(sweep.rows.values(), key=lambda r: r["trial"])
    return SweepResult(spec, store.root, rows, time.perf_counter() - start, sweep.submitted, best)


def _prepare(sweep: _Sweep, configs: Iterable[RunConfig]) -> None:
    """Compute the stages upstream of train once per distinct key set, before the trials fan
    out (in parallel on the pool when they differ), so that no two trials compute one."""
    jobs: dict[tuple[str, ...], dict[str, Any]] = {}
    for cfg in configs:
        shared = [s for s in needed_stages(cfg) if s not in downstream_closure([MODEL_STAGE], cfg)]
        keys = plan_keys(cfg)
        missing = [s for s in shared if sweep.store.get(s, keys[s]) is None]
        ident = tuple(keys[s] for s in shared)
        if missing and ident not in jobs:
            jobs[ident] = payload(sweep.spec, cfg, "upstream", shared, sweep.threads)
    if not jobs:
        return
    log.info("sweep %s: computing %d shared upstream set(s) first", sweep.spec.name, len(jobs))
    pool = sweep.get_pool()
    for handle in [pool.submit(job) for job in jobs.values()]:
        pool.result(handle)  # an upstream that fails would fail every trial: stop here


def study_path(root: Path, name: str) -> Path:
    return root / SWEEPS_DIR / name / "study.db"


def open_study(spec: SweepSpec, root: Path) -> Any:
    """The sweep's Optuna study (created, or loaded to resume), in SQLite under the root."""
    import optuna

    assert spec.optuna is not None
    path = study_path(root, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage(path),
        direction="maximize",
        load_if_exists=True,
        pruner=make_pruner(spec.optuna.model_dump()),
    )
    # seeded afresh per resume, offset by the trials so far: the same seed again would draw
    # the first trials' parameters again (and so only reuse them)
    study.sampler = optuna.samplers.TPESampler(seed=spec.optuna.seed + len(study.trials))
    return study


def _optuna(sweep: _Sweep, parallel: int) -> dict[str, Any] | None:
    """Ask/tell with up to ``parallel`` trials in flight until ``n_trials`` are complete or
    pruned (or failed in this call). Trials a killed sweep left RUNNING are failed and asked
    again; pruned trials stay pruned."""
    from optuna.trial import TrialState

    spec = sweep.spec
    assert spec.optuna is not None
    study = open_study(spec, sweep.store.root)
    space = {name: dim.distribution() for name, dim in spec.optuna.space.items()}
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)
        study.enqueue_trial(stale.params)
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    for t in ended:
        name = f"o{t.number:03d}"  # earlier trials belong to the table too
        if name in sweep.previous:
            status = "cached" if t.state == TrialState.COMPLETE else PRUNED
            sweep.rows[name] = {**sweep.previous[name], "status": status}
    complete = len(ended)  # the budget counts pruned trials too
    settings = spec.optuna.pruning()
    prepared, failed = False, 0
    inflight: dict[int, tuple[Any, dict[str, Any], Any]] = {}
    while inflight or complete + failed + len(inflight) < spec.optuna.n_trials:
        while len(inflight) < parallel and complete + failed + len(inflight) < spec.optuna.n_trials:
            asked = study.ask(space)
            trial = Trial(f"o{asked.number:03d}", dict(asked.params))
            if not prepared:  # every trial shares the upstream unless the space reaches it
                _prepare(sweep, [trial_config(spec, trial.params)])
                prepared = True
            prune = settings and {
                "storage": str(study_path(sweep.store.root, spec.name)),
                "study": spec.name,
                "number": asked.number,
                "pruner": settings,
            }
            row, handle = sweep.launch(trial, prune)
            if handle is None:
                study.tell(asked, row["valid_ndcg10"])
                complete += 1
            else:
                inflight[id(handle)] = (asked, row, handle)
        if not inflight:
            continue
        handle = sweep.get_pool().first_done([h for _, _, h in inflight.values()])
        asked, row, _ = inflight.pop(id(handle))
        row = sweep.collect(row, handle)
        if row["status"] in DONE:
            study.tell(asked, row["valid_ndcg10"])
            complete += 1
        elif row["status"] == PRUNED:  # its last reported epoch becomes its value
            study.tell(asked, state=TrialState.PRUNED)
            complete += 1
        else:
            study.tell(asked, state=TrialState.FAIL)
            failed += 1
    try:
        best = study.best_trial
    except ValueError:
        return None
    return {"trial": f"o{best.number:03d}", "value": best.value, "params": best.params}


# -- the report -----------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def report_rows(trials: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One line per trial: its variant's label (if any), params, status, run, the four
    metrics (a pruned trial: valid only, of its last epoch), epochs, seconds."""
    named = ["variant"] if any(r.get("label") for r in trials) else []
    columns = ["trial", *named, "params", "status", "run_id", *METRICS, "epochs", "seconds"]
    rows = []
    for r in trials:
        params = ", ".join(f"{k}={v}" for k, v in json.loads(r["params"]).items())
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        epochs = "" if r.get("epochs") is None else str(r["epochs"])
        rows.append(
            [
                r["trial"],
                *[r.get("label") or "" for _ in named],
                params,
                r["status"],
                r.get("run_id") or "",
                *map(_fmt, (r.get(m) for m in METRICS)),
                epochs,
                seconds,
            ]
        )
    return columns, rows


def summary_rows(trials: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Each setting (variant label and params without ``train.seed``) over its seeds: n,
    mean ± std."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in trials:
        if r["status"] in DONE:
            params = {k: v for k, v in json.loads(r["params"]).items() if k != "train.seed"}
            parts = [r.get("label") or "", ", ".join(f"{k}={v}" for k, v in params.items())]
            key = ", ".join(filter(None, parts)) or "(base)"
            groups.setdefault(key, []).append(r)
    columns = ["setting", "n", *METRICS]
    rows = []
    for key, runs in groups.items():
        cells = []
        for m in METRICS:
            values = [float(r[m]) for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4f} ± {std:.4f}")
        rows.append([key, str(len(runs)), *cells])
    return columns, rows
