"""Where the local Prefect server keeps its state, and the environment commands need to reach it.

Everything lives under one state directory: ``$FAME_STATE_DIR``, else ``.state/`` in the
repository root (``.state/`` in the current directory for a non-editable install). It holds the
server's PREFECT_HOME (``prefect/``, hence its SQLite database), pid files and logs.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import REPO_ROOT

DEFAULT_PORT = 4200
HOST = "127.0.0.1"


def state_dir() -> Path:
    if env := os.environ.get("FAME_STATE_DIR"):
        path = Path(env).expanduser().resolve()
    elif (REPO_ROOT / "pyproject.toml").is_file():
        path = REPO_ROOT / ".state"
    else:
        path = Path.cwd() / ".state"
    path.mkdir(parents=True, exist_ok=True)
    return path


def prefect_home() -> Path:
    return state_dir() / "prefect"


def server_file() -> Path:
    """``{"pid", "port", "url", "ui", "log"}`` of the server started by ``fame server start``."""
    return state_dir() / "server.json"


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def prefect_env(port: int | None = None) -> dict[str, str]:
    """Environment for the local server and the commands that talk to it.

    Loopback only, PREFECT_HOME and the SQLite database under the state dir, no analytics, and
    PREFECT_API_URL pointing at ``port`` (none: Prefect's ephemeral mode on that database).
    """
    home = prefect_home()
    env = dict(os.environ)
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)  # legacy alias of the setting below
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": HOST,
            "PREFECT_CLI_PROMPT": "false",
        }
    )
    if port is not None:
        env["PREFECT_SERVER_API_PORT"] = str(port)
        env["PREFECT_API_URL"] = api_url(port)
    return env


def use_prefect_env(port: int | None) -> str | None:
    """Point this process at the local server on ``port`` (None: an ephemeral server on the
    state dir's database) unless PREFECT_API_URL is already set. Call it before importing
    prefect, which reads its settings at import. Returns the API URL, None for ephemeral mode."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    env = prefect_env(port)
    for key in (
        "PREFECT_HOME",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "PREFECT_API_URL",
    ):
        if key in env:
            os.environ[key] = env[key]
    os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    # a first ephemeral start migrates a new database: Prefect's 20 s default is tight on 2 CPUs
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return env.get("PREFECT_API_URL")
