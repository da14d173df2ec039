"""The Prefect commands of the ``fame`` CLI that need no server of their own."""

import json
import socket

import pytest
from typer.testing import CliRunner

from flows import server as srv
from flows.cli import app

runner = CliRunner()


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("FAME_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_run_uses_the_flow_and_no_prefect_the_plain_runner(
    harness, slice_params, state, tmp_path, monkeypatch
):
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the test server
    p = slice_params(tmp_path / "artifacts")
    args = ["--data-dir", p["data_dir"], "-q"]
    args += [f"--set={k}={v}" for k, v in p["overrides"].items()]
    res = runner.invoke(app, ["run", *args, "--stages", "ingest"])
    assert res.exit_code == 0, res.output
    assert "ingest" in res.output and "catalog:" in res.output
    res = runner.invoke(app, ["run", "--no-prefect", *args, "--stages", "ingest"])
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output
    res = runner.invoke(app, ["run", *args, "--stages", "fit"])
    assert res.exit_code == 2 and "unknown stage" in res.output


def test_server_start_fails_clearly_when_the_port_is_taken(state):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not srv.port_free(port)
        with pytest.raises(srv.ServerError, match=f"port {port} on 127.0.0.1 is taken"):
            srv.start(port)
        res = runner.invoke(app, ["server", "start", "--port", str(port)])
    assert res.exit_code == 2 and "is taken" in res.output
    assert not (state / "server.json").exists()


def test_status_and_stop_without_a_server(state):
    res = runner.invoke(app, ["server", "status"])
    assert res.exit_code == 1 and "no server running" in res.output
    # a stale record (pid of an exited process) is not taken for a running server
    state.mkdir(parents=True, exist_ok=True)
    (state / "server.json").write_text(json.dumps({"pid": 2**22 - 1, "port": 1}))
    assert srv.status()["running"] is False
    res = runner.invoke(app, ["demo", "--stop"])
    assert res.exit_code == 0 and "nothing was running" in res.output
    assert not (state / "server.json").exists()


def test_prefect_env_points_at_the_state_dir(state):
    from flows.state import prefect_env

    env = prefect_env(4321)
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_HOME"] == str(state / "prefect")
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith(str(state / "prefect/prefect.db"))
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_deployments_are_the_full_pipeline_and_one_per_registry_stage():
    from flows.flow import deployments
    from pipeline.registry import ORDER

    assert ["full-pipeline", *ORDER] == srv.DEPLOYMENTS
    deps = deployments()
    assert [d.name for d in deps] == srv.DEPLOYMENTS
    assert [d.parameters.get("stages") for d in deps] == [None, *([s] for s in ORDER)]
