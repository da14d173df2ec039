"""End to end on a real Prefect server: start it on a free loopback port, serve the deployments,
trigger fame/full-pipeline with the Prefect CLI, wait, check the catalog, stop everything."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import SMALL

from storage import query

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("FAME_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from flows import server as srv

    info = srv.start(_free_port(), timeout=240)
    try:
        yield srv, info
    finally:
        srv.stop()
        assert not srv.status()["running"]


@pytest.mark.slow
def test_deployment_run_on_real_server(server, ml100k_slice, tmp_path):
    srv, info = server
    assert info["url"].startswith("http://127.0.0.1:")
    srv.start_serve(timeout=240)
    from flows.state import prefect_env

    store = tmp_path / "artifacts"
    params = {
        "config": "ml-100k",
        "data_dir": str(ml100k_slice),
        "overrides": {"paths.artifacts": str(store), **SMALL},
    }
    done = subprocess.run(
        [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "fame/full-pipeline",
            "--watch",
            "--params",
            json.dumps(params),
        ],
        env=prefect_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, rows = query(store, "select stage, status from stages order by started_at")
    assert rows == [(s, "computed") for s in ("ingest", "encode", "pretrain", "train", "evaluate")]
    _, rows = query(store, "select count(*) from metrics where split = 'test'")
    assert rows[0][0] == 14
    for name in ("fame/ingest", "fame/encode", "fame/pretrain", "fame/train", "fame/evaluate"):
        assert srv.deployment_exists(name)
