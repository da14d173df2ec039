"""The ``fame`` command line: run the pipeline or one stage, query the catalog, recommend.

``make_app`` builds the app; ``flows.cli`` builds the console script's app with it, passing its
Prefect-backed ``run``, and uses the helpers here (``fail``, ``load``, ``run_in_process``) and
the shared options (``ConfigOpt``...).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from app import display
from app.options import (
    ArtifactsOpt,
    ConfigOpt,
    DataDirOpt,
    ForceOpt,
    QuietOpt,
    RunOpt,
    SetOpt,
    fail,
    load,
    open_run,
    root_opt,
)
from pipeline.config import ConfigError, SynthConfig, default_artifacts_dir
from pipeline.errors import PipelineError
from pipeline.registry import ORDER, STAGES, TARGET, VIEWS

HELP = __doc__.split("\n\n")[0]
data_app = typer.Typer(
    no_args_is_help=True, help="Datasets: fetch public ones, or generate the synthetic one."
)


def _setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("FAME_LOG", "INFO"), format="%(message)s")


def run_in_process(config: str, sets, data_dir, stages: list[str] | None, force, quiet: bool):
    """``run_pipeline`` in this process, then the stage table and metrics."""
    from pipeline.runner import run_pipeline

    _setup_logging()
    cfg = load(config, sets, data_dir)
    try:
        ctx = run_pipeline(cfg, stages, force or [], progress=not quiet, config_name=config)
    except (PipelineError, ConfigError, ValueError, FileNotFoundError) as exc:
        fail(exc)
        raise
    _print_stage_table(ctx)
    return ctx


def _print_stage_table(ctx) -> None:
    rows = [
        (
            res.stage,
            "skipped" if res.skipped else "computed",
            f"{res.seconds:.2f}",
            res.key,
            ", ".join(f"{k}={v}" for k, v in res.rows.items()),
        )
        for res in ctx.results.values()
    ]
    display.show(
        display.table(
            ("stage", "status", "seconds", "key", "rows"),
            rows,
            title=f"run {ctx.run_id} ({ctx.config.data.name})",
        )
    )
    if TARGET in ctx.results:
        from app.report import alignment_table, metrics_table

        display.show(metrics_table(ctx.store.root, ctx.results[TARGET].key))
        if (aligned := alignment_table(ctx.store.root, ctx.results[TARGET].key)) is not None:
            display.show(aligned)
    display.say(
        f"catalog: {ctx.store.root / 'catalog.duckdb'}  "
        f'(try: fame sql{root_opt(ctx.store.root)} "select * from stages")'
    )


def run(
    config: ConfigOpt = "ml-100k",
    stages: Annotated[
        str | None,
        typer.Option(help="comma-separated subset of stages (default: all the config needs)"),
    ] = None,
    force: ForceOpt = None,
    sets: SetOpt = None,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the pipeline in-process (no server): ingest → encode → pretrain → train → evaluate."""
    run_in_process(config, sets, data_dir, stages.split(",") if stages else None, force, quiet)


def _stage_command(stage: str, doc: str):
    def command(
        config: ConfigOpt = "ml-100k",
        force: ForceOpt = None,
        sets: SetOpt = None,
        data_dir: DataDirOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        from pipeline.runner import needed_stages

        cfg = load(config, sets, data_dir)
        upto = ORDER.index(stage)
        needed = [s for s in needed_stages(cfg) if ORDER.index(s) <= upto]
        if stage not in needed:
            needed.append(stage)
        if stage == "train":  # a training run is only useful with its test metrics in the catalog
            needed.append(TARGET)
        run_in_process(config, sets, data_dir, needed, force, quiet)

    command.__doc__ = (
        doc + " Missing upstream artifacts are computed first; cached ones are reused."
    )
    return command


SQL_HELP = (
    "Query the catalog (read-only). Views: "
    + ", ".join([v.name for v in VIEWS] + ["runs", "stages"])
    + " (+ <view>_all of "
    + ", ".join(v.name for v in VIEWS if v.current)
    + ")."
)


def sql(
    query: Annotated[str, typer.Argument(help="read-only SQL over the catalog views")],
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    artifacts: Annotated[
        Path | None, typer.Option(help="artifact root (default $FAME_HOME or ./artifacts)")
    ] = None,
    limit: Annotated[int, typer.Option(help="max rows printed in table format (0 = all)")] = 200,
) -> None:
    from storage import CatalogError
    from storage import query as run_query

    root = artifacts or default_artifacts_dir()
    if not root.is_dir():
        fail(PipelineError(f"no artifact store at {root.resolve()}; run a stage first"))
    try:
        columns, rows = run_query(root, query, VIEWS)
    except CatalogError as exc:
        fail(exc)
        return
    if fmt == "json":
        sys.stdout.write(
            json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=1)
            + "\n"
        )
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    elif fmt == "table":
        shown = rows if limit <= 0 else rows[:limit]
        cells = [["NULL" if v is None else v for v in row] for row in shown]
        display.show(display.table(columns, cells))
        if len(shown) < len(rows):
            display.say(f"({len(rows)} rows, {len(shown)} shown; --limit 0 for all)", stderr=True)
    else:
        fail(PipelineError(f"unknown --format {fmt!r}; use table, csv or json"))


def recommend(
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="a user's source id (repeatable)")
    ] = None,
    items: Annotated[
        str | None,
        typer.Option("--items", help="a new sequence instead: comma-separated source item ids"),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="number of items")] = 10,
    explain: Annotated[
        bool, typer.Option(help="FAME: per-head contributions (named by facet), gate, router")
    ] = False,
    cold_scores: Annotated[
        str | None,
        typer.Option(
            "--cold-scores",
            help="raw or matched: how items held out of training are scored "
            "[the run's evaluate.cold_scores]",
        ),
    ] = None,
    run_id: RunOpt = None,
    artifacts: ArtifactsOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    config: ConfigOpt = "ml-100k",
    sets: SetOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Top-k next items for users (their whole history, seen items removed under the primary
    protocol) or for a new item sequence, from a trained run."""
    if bool(user) == bool(items):
        fail(PipelineError("give --user ID (repeatable) or --items A,B,C, not both"))
    run = open_run(run_id, config, sets, data_dir, artifacts)
    how = {"explain": explain, "cold_scores": cold_scores}
    try:
        if items:
            frame = run.recommend_sequence(items.split(","), k, **how)
        else:
            frame = run.recommend(user, k, **how)
    except PipelineError as exc:
        fail(exc)
        return
    c = run.config
    title = f"top-{k} ({c.data.name}, {c.model.name}, run {run.run_id})"
    if fmt != "table" or not explain:
        _show_frame(frame, fmt, title)
        return
    # a table per concern: the per-head contributions beside the items, then gate and router
    who = frame.columns[0]
    per_query = [c for c in frame.columns if c.startswith(("gate ", "expert "))]
    sums = ": score = sum of the head columns"
    if run.cold_ids(cold_scores) is not None:
        sums += " (items held out of training: matched scores, not the sum)"
    _show_frame(frame.drop(columns=per_query), fmt, title + sums)
    rows = []
    for name in run.head_names:
        part = frame.drop_duplicates(who)[
            [who, f"gate {name}", f"expert {name}", f"expert weight {name}"]
        ]
        rows += [[q, name, g, f"expert {e}", w] for q, g, e, w in part.itertuples(index=False)]
    header = [who, "head", "gate g_h", "router's top expert", "its weight"]
    _show_frame(
        pd_frame(rows, header).sort_values([who], kind="stable"), fmt, "gate and router per head"
    )


def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="file to write: .parquet or .csv")],
    k: Annotated[int, typer.Option("-k", help="items per user")] = 10,
    run_id: RunOpt = None,
    artifacts: ArtifactsOpt = None,
    config: ConfigOpt = "ml-100k",
    sets: SetOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write the top-k recommendations of every user to Parquet or CSV (user, rank, item,
    title, score), in chunks of users."""
    run = open_run(run_id, config, sets, data_dir, artifacts)
    try:
        path = run.export(out, k)
    except PipelineError as exc:
        fail(exc)
        return
    display.say(f"wrote {path} (top-{k} of every user, run {run.run_id})")


def pd_frame(rows: list[list], columns: list[str]):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _show_frame(frame, fmt: str, title: str) -> None:
    if fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    elif fmt == "table":
        cells = [
            [f"{v:.3f}" if isinstance(v, float) else ("" if v is None else v) for v in row]
            for row in frame.itertuples(index=False)
        ]
        display.show(display.table(list(frame.columns), cells, title=title))
    else:
        fail(PipelineError(f"unknown --format {fmt!r}; use table, csv or json"))


def show_config(
    config: ConfigOpt = "ml-100k", sets: SetOpt = None, data_dir: DataDirOpt = None
) -> None:
    """Print the fully resolved config (defaults filled in) as JSON, with stage keys."""
    from pipeline.runner import plan_keys

    cfg = load(config, sets, data_dir)
    out = cfg.model_dump(mode="json")
    out["_resolved"] = {
        "data_dir": str(cfg.dataset_dir()),
        "artifacts": str(cfg.artifacts_dir()),
        "keys": plan_keys(cfg),
    }
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[
        str, typer.Argument(help="dataset to download: ml-100k, ml-1m, ml-20m or amazon2023")
    ],
    category: Annotated[
        str | None,
        typer.Option(help="amazon2023 only: the category, as on the Hub (e.g. All_Beauty)"),
    ] = None,
    dest: Annotated[
        Path | None,
        typer.Option(help="data directory (default: the configs' data dir, see `fame --help`)"),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="override the download URL (mirrors, tests); for amazon2023 the base under "
            "which raw/review_categories/ and raw/meta_categories/ lie"
        ),
    ] = None,
) -> None:
    """Download a dataset from its official source (needs internet) into the layout its config
    reads, whole or not at all. MovieLens archives are checked against their published MD5 (not
    with --url); an amazon2023 category is checked line by line by its reader and stored as
    Parquet in amazon2023-<category>/ (configs/amazon2023-all-beauty.toml reads All_Beauty)."""
    from pipeline.config import default_data_dir

    target = dest or default_data_dir()
    try:
        if name == "amazon2023":
            from sources import amazon2023

            if not category:
                raise PipelineError("fame data fetch amazon2023 needs --category (e.g. All_Beauty)")
            path = amazon2023.fetch(category, target, url)
        else:
            from sources.fetch import fetch

            if category:
                raise PipelineError(f"--category is for amazon2023, not {name!r}")
            path = fetch(name, target, url)
    except PipelineError as exc:
        fail(exc)
        return
    display.say(f"{name} written to {path}")


SYNTH_OPTIONS = ("users", "items", "interactions", "seed")  # the rest go through --param


def _synth_option(name: str) -> str:
    return f"--{name}" if name in SYNTH_OPTIONS else f"--param {name}"


def _synth_default(name: str) -> str:
    field = SynthConfig.model_fields[name]
    return f"{field.description} (default {field.default})"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


@data_app.command("synth")
def data_synth(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for synthetic.{inter,items}.parquet")
    ],
    users: Annotated[int | None, typer.Option(help=_synth_default("users"))] = None,
    items: Annotated[int | None, typer.Option(help=_synth_default("items"))] = None,
    interactions: Annotated[int | None, typer.Option(help=_synth_default("interactions"))] = None,
    seed: Annotated[int | None, typer.Option(help=_synth_default("seed"))] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="any other generator parameter: name=value (docs/synthetic.md)"
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate the synthetic dataset from a seed (no download): interactions, and items with
    true facets and descriptions. Same parameters and seed, same bytes."""
    from pydantic import ValidationError

    from pipeline.config import parse_overrides
    from sources.synth import generate

    given = {"users": users, "items": items, "interactions": interactions, "seed": seed}
    values = {k: v for k, v in given.items() if v is not None}
    for text in params or []:
        name, eq, _ = text.partition("=")
        if not eq or name.strip() in SYNTH_OPTIONS:
            fail(
                ConfigError(
                    f"--param {text!r}: expected name=value for a parameter without its own option"
                )
            )
    values.update(parse_overrides(params or []))
    try:
        synth_params = SynthConfig(**values)
    except ValidationError as exc:
        lines = ["invalid synthetic dataset parameters"]
        for err in exc.errors():
            where = _synth_option(str(err["loc"][0])) + ": " if err["loc"] else ""
            lines.append(f"  {where}{err['msg'].removeprefix('Value error, ')}")
        fail(ConfigError("\n".join(lines)))
        return
    try:
        result = generate(synth_params, out, progress=not quiet)
    except OSError as exc:
        fail(PipelineError(f"cannot write the synthetic dataset to {out}: {exc}"))
        return
    rows = [
        (str(path), f"{result.rows[what]:,}", _size(path.stat().st_size))
        for what, path in result.files.items()
    ]
    display.show(display.table(("file", "rows", "size"), rows, title="synthetic dataset"))
    display.say(
        f"{result.rows['users']:,} users, generated in {result.seconds:.1f} s; read it with "
        'data.format = "table" and these files, or use `--config synthetic`'
    )


def make_app(run_command: Callable[..., None] = run) -> typer.Typer:
    """The ``fame`` app: ``run_command`` as ``run`` (default: the in-process one), a command per
    stage of the registry, ``sql``, ``recommend``, ``config`` and the ``data`` group."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)
    app.command(name="run")(run_command)
    for name, stage in STAGES.items():
        app.command(name=name)(_stage_command(name, stage.SUMMARY))
    app.command(help=SQL_HELP)(sql)
    app.command()(recommend)
    app.command()(export)
    app.command("config")(show_config)
    from app.run_report import report_command

    app.command("report")(report_command)
    from app.service_cli import serve_model

    app.command("serve-model")(serve_model)
    app.add_typer(data_app, name="data")
    return app


app = make_app()


def main() -> None:  # pragma: no cover
    app()
