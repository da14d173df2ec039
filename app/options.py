"""What every ``fame`` command shares: the common options, opening a run, failing with a named error.

The command modules (``cli``, ``run_report``, ``service_cli``, ``flows.cli``) import this one and
it imports none of them, so the commands form no circle.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from app import display
from pipeline.config import ConfigError, RunConfig, default_artifacts_dir, load_config
from pipeline.errors import PipelineError

ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="config name (configs/NAME.toml) or path")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override: section.key=value (repeatable)")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="folder holding the datasets")]
ForceOpt = Annotated[
    list[str] | None,
    typer.Option("--force", "-f", help="stage to recompute even if cached (repeatable)"),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def fail(exc: Exception) -> None:
    """Print the error (one line, no traceback) and exit with code 2."""
    display.error(exc)
    raise typer.Exit(2)


def load(config: str, sets: list[str] | None, data_dir: Path | None) -> RunConfig:
    """The config, or exit with code 2 naming what is wrong with it."""
    try:
        return load_config(config, sets or [], data_dir)
    except (ConfigError, OSError) as exc:
        fail(exc)
        raise  # unreachable


def root_opt(root: Path) -> str:
    """`` --artifacts ROOT`` when ``fame sql`` would not find ``root`` by default."""
    if root.resolve() == default_artifacts_dir():
        return ""
    return f" --artifacts {shlex.quote(str(root))}"


RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="a run id, or 'latest'; default: the run that trained --config"),
]
ArtifactsOpt = Annotated[
    Path | None, typer.Option("--artifacts", help="artifact root (default: the config's)")
]


def open_run(run_id: str | None, config: str, sets, data_dir, artifacts: Path | None):
    """The run to use: ``--run`` (by id, wherever the raw data now is), else the config's."""
    from app import api

    try:
        if run_id:
            return api.open_run(
                run_id, artifacts=artifacts or load(config, sets, data_dir).artifacts_dir()
            )
        cfg = load(config, sets, data_dir)
        if artifacts:
            cfg.paths.artifacts = str(artifacts)
        run, how = api.open_config(cfg, config)
        display.say(f"model: {how}", stderr=True)
        return run
    except PipelineError as exc:
        fail(exc)
        raise  # unreachable
