"""The ``fame`` console script: the pipeline CLI plus the Prefect commands (run, serve, server,
demo). Prefect stays in ``flows/``; ``pipeline.cli`` knows nothing of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline import cli as base
from pipeline.errors import PipelineError

app = base.app
server_app = typer.Typer(no_args_is_help=True, help="Local Prefect server on 127.0.0.1.")
app.add_typer(server_app, name="server")
out = base.out

# the Prefect-backed `run` replaces the plain one registered by pipeline.cli
app.registered_commands = [
    c
    for c in app.registered_commands
    if c.name != "run" and getattr(c.callback, "__name__", "") != "run"
]


@app.command()
def run(
    config: base.ConfigOpt = "ml-100k",
    stages: Annotated[str | None, typer.Option(help="comma-separated subset of stages")] = None,
    force: base.ForceOpt = None,
    sets: base.SetOpt = None,
    data_dir: base.DataDirOpt = None,
    quiet: base.QuietOpt = False,
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect/--no-prefect",
            help="run as a Prefect flow (ephemeral "
            "mode unless PREFECT_API_URL is set) or plainly in-process",
        ),
    ] = True,
) -> None:
    """Run the pipeline in-process: ingest → encode → pretrain → train → evaluate (cached stages skipped)."""
    stage_list = stages.split(",") if stages else None
    if not prefect:
        base._run(config, sets, data_dir, stage_list, force, quiet)
        return
    from flows.flow import fame
    from pipeline.config import parse_value

    overrides: dict = {}
    for text in sets or []:
        key, _, raw = text.partition("=")
        overrides[key.strip()] = parse_value(raw.strip())
    try:
        result = fame(
            config=config,
            overrides=overrides,
            stages=stage_list,
            force=force or [],
            data_dir=str(data_dir) if data_dir else None,
        )
    except (PipelineError, ValueError) as exc:
        base._fail(exc)
        return
    out.print_json(json.dumps(result))
    _print_metrics(result)


def _print_metrics(result: dict) -> None:
    ev = result.get("stages", {}).get("evaluate")
    if ev:
        from pipeline.report import metrics_table

        out.print(metrics_table(Path(result["catalog"]).parent, ev["key"]))
    out.print(f"catalog: {result['catalog']}")


@app.command()
def serve() -> None:
    """Serve the deployments fame/full-pipeline, fame/ingest … fame/evaluate from this process."""
    from prefect import serve as prefect_serve

    from flows.flow import deployments
    from flows.state import use_local_server

    use_local_server()
    prefect_serve(*deployments())


@server_app.command("start")
def server_start(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 4200) -> None:
    """Start the Prefect server in the background and wait until it is healthy."""
    from flows.server import ServerError, start

    try:
        info = start(port)
    except ServerError as exc:
        base._fail(exc)
        return
    out.print(
        f"Prefect server healthy at {info['url']} (UI {info.get('ui')}), pid {info['pid']}, log {info['log']}"
    )
    out.print(f"export PREFECT_API_URL={info['url']}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server and the background `fame serve` started by `fame demo`."""
    from flows.server import stop

    stopped = stop()
    out.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@server_app.command("status")
def server_status() -> None:
    """Print the server's URL, pid and health."""
    from flows.server import status

    out.print_json(json.dumps(status()))


@app.command()
def demo(
    config: base.ConfigOpt = "ml-100k",
    port: Annotated[int, typer.Option(help="server port on 127.0.0.1")] = 4200,
) -> None:
    """Start the server and `fame serve`, run fame/full-pipeline through Prefect, print the results."""
    from flows.server import PREFECT, ServerError, start, start_serve
    from flows.state import prefect_env
    from pipeline.config import load_config
    from pipeline.report import metrics_table
    from pipeline.runner import plan_keys

    try:
        info = start(port)
        out.print(f"[1/3] Prefect server healthy at {info['ui']}")
        start_serve()
        out.print(
            "[2/3] `fame serve` is serving fame/full-pipeline and the single-stage deployments"
        )
    except ServerError as exc:
        base._fail(exc)
        return
    params = json.dumps({"config": config})
    out.print(f"[3/3] prefect deployment run fame/full-pipeline --params '{params}' --watch")
    done = subprocess.run(
        [PREFECT, "deployment", "run", "fame/full-pipeline", "--params", params, "--watch"],
        env=prefect_env(),
    )
    if done.returncode != 0:
        base._fail(PipelineError("the flow run failed; see the Prefect UI and .state/serve.log"))
    cfg = load_config(config)
    root = cfg.artifacts_dir()
    out.print(metrics_table(root, plan_keys(cfg)["evaluate"]))
    out.print(f"""
Artifacts: {root}   catalog: {root / "catalog.duckdb"}
  fame sql "select stage, status, seconds from stages order by started_at desc limit 5"
  duckdb -readonly {root / "catalog.duckdb"}
Prefect UI: {info["ui"]}   (runs, task graph, the 'fame-run' markdown artifact)
Run again:  prefect deployment run fame/full-pipeline --watch   (cached stages are skipped)
Stop all:   {Path(sys.executable).with_name("fame")} server stop""")


def main() -> None:  # pragma: no cover
    app()
