"""The ``fame`` console script: the pipeline CLI (``app.cli``) plus the Prefect commands:
``run`` as a Prefect flow, ``serve``, ``server start|stop|status|env`` and ``demo``, and
``catalog rebuild`` and ``--version``.

Prefect is imported inside the commands, after the environment is set: its settings are read
at import.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from app import cli as base
from app import display, options
from app.display import say
from flows.state import DEFAULT_PORT, state_dir
from pipeline.config import ConfigError, RunConfig, default_artifacts_dir, parse_overrides
from pipeline.errors import PipelineError

PortOpt = Annotated[int, typer.Option(help="port of the local server on 127.0.0.1")]


def _overrides(sets: list[str] | None) -> dict[str, Any]:
    """``--set train.epochs=3`` strings as the flow's ``overrides`` dict."""
    try:
        return parse_overrides(sets or [])
    except ConfigError as exc:
        options.fail(exc)
        raise  # unreachable


def run(
    config: options.ConfigOpt = "ml-100k",
    stages: Annotated[
        str | None,
        typer.Option(help="comma-separated subset of stages (default: all the config needs)"),
    ] = None,
    force: options.ForceOpt = None,
    sets: options.SetOpt = None,
    data_dir: options.DataDirOpt = None,
    quiet: options.QuietOpt = False,
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect/--no-prefect",
            help="run as the Prefect flow `fame` (on the local server when it runs or "
            "PREFECT_API_URL is set, else Prefect's ephemeral mode), or plainly in-process",
        ),
    ] = True,
) -> None:
    """Run the pipeline in-process as the Prefect flow `fame` (cached stages are skipped).

    With no server to talk to and every stage cached, the run is recorded and reported without
    starting Prefect's temporary server (most of a cached run's time)."""
    stage_list = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    cfg = options.load(config, sets, data_dir)
    wanted = _check_stages(cfg, stage_list, config, sets, data_dir)
    if not prefect:
        base.run_in_process(config, sets, data_dir, stage_list, force, quiet)
        return
    from flows.server import status
    from flows.state import use_prefect_env
    from pipeline.runner import uncached

    server = status()
    url = use_prefect_env(server["port"] if server.get("healthy") else None)
    if not url and not force and not uncached(cfg, wanted):
        say(
            "Prefect: every stage is cached, so no temporary server is started "
            "(`fame server start` to see runs in the UI)",
            stderr=True,
        )
        base.run_in_process(config, sets, data_dir, stage_list, force, quiet)
        return
    say(
        f"Prefect: {url}" if url else "Prefect: ephemeral mode (no server; `fame server start`)",
        stderr=True,
    )
    if not url:
        _start_guarded_ephemeral_server()
    from flows.flow import fame

    try:
        result = fame(
            config=config,
            overrides=_overrides(sets),
            stages=stage_list or [],
            force=force or [],
            data_dir=str(data_dir) if data_dir else "",
        )
    except (PipelineError, ConfigError, ValueError, FileNotFoundError) as exc:
        options.fail(exc)
        return
    _print_result(result)


def _check_stages(
    cfg: RunConfig,
    stages: list[str] | None,
    config: str,
    sets: list[str] | None,
    data_dir: Path | None,
) -> list[str]:
    """The stages to run; fails before any work when a ``--stages`` subset needs an upstream
    artifact the store lacks, naming the command that also computes it, with the user's
    options (``--set`` included)."""
    from pipeline.runner import missing_upstream, select_stages

    try:
        wanted = select_stages(cfg, stages)
    except PipelineError as exc:
        options.fail(exc)
        raise  # unreachable
    if missing := missing_upstream(cfg, wanted):
        from pipeline.registry import ORDER

        rerun = [s for s in ORDER if s in wanted or s in missing]
        options.fail(
            PipelineError(
                f"--stages {','.join(wanted)} needs the {', '.join(missing)} artifact(s) of this "
                f"config, which {cfg.artifacts_dir()} lacks; run them too: "
                f"{rerun_command(config, sets, data_dir, rerun)}"
            )
        )
    return wanted


def rerun_command(
    config: str, sets: list[str] | None, data_dir: Path | None, stages: list[str]
) -> str:
    """``fame run --config C [--data-dir D] [--set k=v …] --stages a,b``, shell-quoted."""
    cmd = ["fame", "run", "--config", config]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    for item in sets or []:
        cmd += ["--set", item]
    return shlex.join([*cmd, "--stages", ",".join(stages)])


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        from pipeline.provenance import code_version

        typer.echo(f"fame {metadata.version('fame-rec')} (code {code_version()})")
        raise typer.Exit()


# app.cli's commands with the Prefect-backed `run` (app.cli.app stays Prefect-free)
app = base.make_app(run_command=run)


@app.callback(help=base.HELP)
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="print the package version and the code version (git commit, source digest)",
        ),
    ] = False,
) -> None:
    pass


server_app = typer.Typer(no_args_is_help=True, help="Local Prefect server on 127.0.0.1.")
app.add_typer(server_app, name="server")
catalog_app = typer.Typer(no_args_is_help=True, help="The DuckDB catalog over the artifacts.")
app.add_typer(catalog_app, name="catalog")


def _start_guarded_ephemeral_server() -> str:
    """Put a watchdog on Prefect's temporary API server, then start it now (the singleton its
    clients then use), so a killed ``fame run`` does not leave it listening. Returns its API URL."""
    from prefect.server.api.server import SubprocessASGIServer

    from flows.reaper import guard

    guard("prefect.server.api.server")
    server = SubprocessASGIServer()
    server.start()
    return server.api_url


def _print_result(result: dict) -> None:
    rows = [
        (
            stage,
            "skipped" if r["skipped"] else "computed",
            f"{r['seconds']:.2f}",
            f"{r['wall_seconds']:.2f}",
            r["key"],
        )
        for stage, r in result["stages"].items()
    ]
    columns = ("stage", "status", "seconds", "task seconds", "key")
    display.show(display.table(columns, rows, title=f"run {result['run_id']}"))
    from pipeline.registry import TARGET

    if ev := result["stages"].get(TARGET):
        from app.report import alignment_table, metrics_table

        root = Path(result["catalog"]).parent
        display.show(metrics_table(root, ev["key"]))
        if (aligned := alignment_table(root, ev["key"])) is not None:
            display.show(aligned)
    root = Path(result["catalog"]).parent
    say(
        f'catalog: {result["catalog"]}  (try: fame sql{options.root_opt(root)} "select * from stages")'
    )


@catalog_app.command("rebuild")
def catalog_rebuild(
    artifacts: Annotated[
        Path | None, typer.Option(help="artifact root (default $FAME_HOME or ./artifacts)")
    ] = None,
) -> None:
    """Rebuild catalog.duckdb from the artifacts and records under the root (`fame sql` also
    repoints a copied or moved folder's catalog by itself)."""
    from pipeline.registry import VIEWS
    from storage import query, refresh_catalog

    root = artifacts or default_artifacts_dir()
    if not root.is_dir():
        options.fail(PipelineError(f"no artifact store at {root.resolve()}; run a stage first"))
    path = refresh_catalog(root, VIEWS)
    _, rows = query(root, "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1")
    say(f"rebuilt {path}: {len(rows)} views ({', '.join(r[0] for r in rows) or 'none yet'})")


@app.command()
def sweep(
    definition: Annotated[Path, typer.Argument(help="sweep TOML (configs/sweeps/*.toml)")],
    workers: Annotated[
        int, typer.Option(help="worker processes of the local Dask cluster (one thread each)")
    ] = 2,
    address: Annotated[
        str,
        typer.Option(help="scheduler of an existing Dask cluster (tcp://host:8786) to run on"),
    ] = "",
    sets: options.SetOpt = None,
    data_dir: options.DataDirOpt = None,
) -> None:
    """Run a grid or Optuna sweep (the flow fame/sweep): each trial a pipeline run on a Dask
    worker; finished trials are reused, the table is printed and kept in the `sweeps` view."""
    from flows.server import status
    from flows.state import use_prefect_env
    from studies.sweep import load_sweep

    overrides = _overrides(sets)
    try:
        load_sweep(definition, overrides)  # a bad definition fails before any server starts
    except ConfigError as exc:
        options.fail(exc)
    server = status()
    url = use_prefect_env(server["port"] if server.get("healthy") else None)
    if not url:
        url = _start_guarded_ephemeral_server()
    say(f"Prefect: {url}", stderr=True)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sweep import sweep_flow

    os.environ["PREFECT_API_URL"] = url  # Dask workers of a temporary server report to it too
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            out = sweep_flow(
                sweep=str(definition),
                overrides=overrides,
                workers=workers,
                address=address,
                data_dir=str(data_dir) if data_dir else "",
            )
    except (PipelineError, ConfigError, ValueError, FileNotFoundError) as exc:
        options.fail(exc)
        return
    _print_sweep(out)


def _print_sweep(out: dict) -> None:
    """The trial table, mean ± std per setting when there are seeds, the best Optuna trial."""
    from studies.sweep import report_rows, summary_rows

    trials = out["trials"]
    display.show(display.table(*report_rows(trials), title=f"sweep {out['sweep']}"))
    columns, rows = summary_rows(trials)
    if any(int(r[1]) > 1 for r in rows):
        display.show(display.table(columns, rows, title="per setting over seeds (mean ± std)"))
    if out.get("best"):
        say(f"best trial {out['best']['trial']}: valid NDCG@10 {out['best']['value']:.4f}")
    say(
        f"{len(trials)} trials ({out['submitted']} run now) in {out['seconds']:.1f}s; "
        f"fame sql{options.root_opt(Path(out['root']))} "
        f"\"select * from sweeps where sweep = '{out['sweep']}'\""
    )


@app.command()
def serve(
    poll_seconds: Annotated[
        float, typer.Option(help="how often to ask the server for new flow runs")
    ] = 5.0,
) -> None:
    """Serve the deployments fame/full-pipeline, fame/<stage> and fame/sweep (server:
    PREFECT_API_URL or local)."""
    from flows.server import status
    from flows.state import use_prefect_env

    if "PREFECT_API_URL" not in os.environ:
        server = status()
        if not server.get("healthy"):
            options.fail(
                PipelineError("no Prefect server: run `fame server start` or set PREFECT_API_URL")
            )
        use_prefect_env(server["port"])
    from prefect import serve as prefect_serve

    from flows.flow import deployments
    from flows.sweep import sweep_deployment

    prefect_serve(*deployments(), sweep_deployment(), query_seconds=poll_seconds)


@server_app.command("start")
def server_start(port: PortOpt = DEFAULT_PORT) -> None:
    """Start the Prefect server in the background; wait until /api/health answers."""
    from flows.server import ServerError, start

    try:
        info = start(port)
    except ServerError as exc:
        options.fail(exc)
        return
    verb = f"started in {info['startup_seconds']:.1f}s" if info["started"] else "already running"
    say(f"Prefect server {verb}: UI {info['ui']}, pid {info['pid']}, log {info['log']}")
    say(f"export PREFECT_API_URL={info['url']}")


@server_app.command("env")
def server_env() -> None:
    """Print `export PREFECT_API_URL=…` for the running server, so that
    `eval "$(fame server env)"` points the `prefect` CLI at it (exit code 1 when none runs)."""
    from flows.server import status

    info = status()
    if not info.get("healthy"):
        display.error("no healthy Prefect server; start one with `fame server start`")
        raise typer.Exit(1)
    typer.echo(f"export PREFECT_API_URL={shlex.quote(info['url'])}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server (and the background `fame serve` of `fame demo`)."""
    from flows.server import stop

    stopped = stop()
    say(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@server_app.command("status")
def server_status() -> None:
    """Print the server's URL, pid and health (exit code 1 when it is not healthy)."""
    from flows.server import serve_status, status

    info = status()
    if info.get("running"):
        health = "healthy" if info["healthy"] else "NOT healthy"
        say(f"server {health}: {info['url']} (UI {info['ui']}), pid {info['pid']}")
        say(f"  state: {state_dir()}  log: {info['log']}")
    else:
        say(f"no server running (state dir {state_dir()})")
    serve = serve_status()
    if serve.get("running"):
        say(f"fame serve: pid {serve['pid']}, log {serve['log']}")
    if not info.get("healthy"):
        raise typer.Exit(1)


@app.command()
def demo(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="config to run instead of the --data choice (name or path)"
        ),
    ] = None,
    data: Annotated[
        str,
        typer.Option(
            help="auto: ml-100k if present or downloadable, else the synthetic dataset; "
            "ml-100k: fail rather than fall back; synthetic: the bundled generator"
        ),
    ] = "auto",
    fetch_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    sets: options.SetOpt = None,
    port: PortOpt = DEFAULT_PORT,
    stop: Annotated[
        bool, typer.Option("--stop", help="stop the server and `fame serve`, then exit")
    ] = False,
) -> None:
    """Start the server and `fame serve`, run fame/full-pipeline, print the metrics."""
    from flows.server import ServerError, prefect_cmd, start, start_serve
    from flows.server import stop as stop_all
    from flows.state import prefect_env

    if stop:
        stopped = stop_all()
        say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return
    overrides = _overrides(sets)
    if config is None:
        from flows.demo import choose

        if data not in ("auto", "ml-100k", "synthetic"):
            options.fail(PipelineError(f"--data must be auto, ml-100k or synthetic, not {data!r}"))
        try:
            choice = choose(data, sets, url=fetch_url)  # type: ignore[arg-type]
        except (PipelineError, ConfigError) as exc:
            options.fail(exc)
            return
        config = choice.config
        say(f"data: {choice.reason}")
    elif data != "auto":
        options.fail(PipelineError("give --config or --data, not both"))
    cfg = options.load(config, sets, None)  # fail on a bad config before starting anything
    try:
        info = start(port)
        how = f"started in {info['startup_seconds']:.1f}s" if info["started"] else "running"
        if info.get("restarted"):
            how = f"restarted ({info['restarted']})"
        say(f"[1/3] Prefect server {how}: {info['ui']}")
        serve = start_serve(info["port"])
    except ServerError as exc:
        options.fail(exc)
        return
    if serve.get("restarted"):
        say(f"      `fame serve` restarted: {serve['restarted']}")
    say(f"[2/3] `fame serve` (pid {serve['pid']}) serves fame/full-pipeline and fame/<stage>")
    from pipeline.runner import new_run_id

    run_id = new_run_id()  # chosen here, so the table below shows this run, not another's
    params: dict[str, Any] = {"config": config, "run_id": run_id}
    if overrides:
        params["overrides"] = overrides
    cmd = [*prefect_cmd(), "deployment", "run", "fame/full-pipeline", "--watch"]
    cmd += ["--params", json.dumps(params)]
    say(f"[3/3] prefect deployment run fame/full-pipeline --watch --params {shlex.quote(cmd[-1])}")
    sys.stdout.flush()
    done = subprocess.run(cmd, env=prefect_env(info["port"]))
    if done.returncode != 0:
        options.fail(
            PipelineError(
                f"the flow run did not complete; see {info['ui']} and {serve['log']} "
                "(stages that finished are cached: rerun `fame demo` to resume)"
            )
        )
    from app.report import alignment_table, metrics_table
    from pipeline.registry import TARGET
    from pipeline.runner import plan_keys

    root = cfg.artifacts_dir()
    catalog, opt = root / "catalog.duckdb", options.root_opt(root)
    again = {k: v for k, v in params.items() if k != "run_id"}  # a rerun is a new run
    _print_run(root, run_id)
    evaluate_key = plan_keys(cfg)[TARGET]
    display.show(metrics_table(root, evaluate_key))
    if (aligned := alignment_table(root, evaluate_key)) is not None:
        display.show(aligned)
    say(
        f"""
Artifacts   {root}
  fame sql{opt} "select stage, status, seconds from stages where run_id = '{run_id}'"
  fame sql{opt} "select * from metrics where split = 'test'"
  duckdb -readonly {catalog}
Prefect UI  {info["ui"]}  (flow runs, the task graph, the artifacts 'fame-run' and
            'fame-report-summary')
Run again   {demo_again(config, sets, port, info["url"], again)}
            (deployments fame/ingest … fame/evaluate run one stage; --param/--params override)
Stop        fame demo --stop   (the server and `fame serve`; logs in {state_dir()})"""
    )


def demo_again(
    config: str, sets: list[str] | None, port: int, url: str, params: dict[str, Any]
) -> str:
    """The two ways to rerun this demo, each a valid command with the user's options:
    ``fame demo …``, or the deployment run with the same parameters against ``url``."""
    demo = ["fame", "demo", "--config", config]
    demo += [f"--set={item}" for item in sets or []]
    if port != DEFAULT_PORT:
        demo += ["--port", str(port)]
    deployment = ["prefect", "deployment", "run", "fame/full-pipeline", "--watch"]
    deployment += ["--params", json.dumps(params)]
    return f"{shlex.join(demo)}, or: PREFECT_API_URL={shlex.quote(url)} {shlex.join(deployment)}"


def _print_run(root: Path, run_id: str) -> None:
    """The stages of run ``run_id`` (a ``new_run_id``): computed, or skipped because cached."""
    from pipeline.registry import VIEWS
    from storage import query

    cols, rows = query(
        root,
        "SELECT stage, status, round(seconds, 2) AS seconds, key FROM stages "
        f"WHERE run_id = '{run_id}' ORDER BY started_at",
        VIEWS,
    )
    display.show(display.table(cols, rows, title="this run (skipped = reused from the store)"))


if __name__ == "__main__":
    app()
