"""``fame serve-model``: the recommendation service (``app.service``) for one run.

Registered by ``app.cli.make_app``; its options and run opening come from ``app.options``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.options import ArtifactsOpt, ConfigOpt, DataDirOpt, RunOpt, SetOpt, open_run


def serve_model(
    run_id: RunOpt = None,
    artifacts: ArtifactsOpt = None,
    host: Annotated[
        str, typer.Option(help="address to bind; 0.0.0.0 exposes the model to the network")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    threads: Annotated[
        int, typer.Option(help="torch threads per request (1 is fastest for one sequence)")
    ] = 1,
    config: ConfigOpt = "ml-100k",
    sets: SetOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve a trained run over HTTP (FastAPI): top-k next items for a user or a posted item
    sequence, with FAME's explanations; OpenAPI docs at /docs. The model is loaded once."""
    from app.service import serve

    run = open_run(run_id, config, sets, data_dir, artifacts)
    serve(run, host, port, threads=threads)
