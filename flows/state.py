"""Where the local Prefect server keeps its state, and the environment commands need to reach it.

Everything lives under one state directory (``$FAME_STATE_DIR``, default ``.state/`` in the
current directory): the server's PREFECT_HOME (hence its SQLite database), pid files and logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_PORT = 4200
HOST = "127.0.0.1"


def state_dir() -> Path:
    path = Path(os.environ.get("FAME_STATE_DIR", ".state")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def server_file() -> Path:
    return state_dir() / "server.json"


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def prefect_env(port: int | None = None) -> dict[str, str]:
    """Environment for the server and its clients: loopback only, local home, no analytics."""
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(state_dir() / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": HOST,
            "PREFECT_CLI_PROMPT": "false",
        }
    )
    if port is None and server_file().is_file():
        port = json.loads(server_file().read_text())["port"]
    if port is not None:
        env["PREFECT_SERVER_API_PORT"] = str(port)
        env["PREFECT_API_URL"] = api_url(port)
    return env


def use_local_server() -> None:
    """Point this process at the recorded local server unless PREFECT_API_URL is already set."""
    if "PREFECT_API_URL" in os.environ:
        return
    env = prefect_env()
    for key in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_API_URL"):
        if key in env:
            os.environ[key] = env[key]
