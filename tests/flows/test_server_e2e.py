"""End to end on a real Prefect server: start it on a free loopback port with a throwaway state
dir, serve the deployments (`fame serve` as a subprocess), trigger fame/full-pipeline with the
Prefect CLI, wait for it, check the catalog, and stop everything, also when the test fails."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from storage import query

STAGES = ["ingest", "encode", "pretrain", "train", "evaluate"]
SYNTH_TINY = {"data.synth.users": 100, "data.synth.items": 80, "data.synth.interactions": 1500}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, monkeypatch, request):
    """A real `prefect server start` under a temporary FAME_STATE_DIR; stopped at teardown."""
    monkeypatch.setenv("FAME_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from flows import server as srv

    def stop_all():
        stopped = srv.stop()
        assert not srv.status()["running"] and not srv.serve_status()["running"], stopped

    request.addfinalizer(stop_all)
    info = srv.start(free_port(), timeout=240)
    assert info["started"] and info["url"].startswith("http://127.0.0.1:")
    print(f"prefect server healthy after {info['startup_seconds']:.1f}s")
    return srv, info


def api(info, path: str, body: dict) -> list:
    req = urllib.request.Request(
        info["url"] + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
        return json.loads(resp.read())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_deployment_run_on_a_real_server(server, slice_params, flow_store, tmp_path, monkeypatch):
    srv, info = server
    serve = srv.start_serve(info["port"], timeout=240)
    assert serve["started"]
    for name in srv.DEPLOYMENTS:
        assert srv.deployment_exists(info["port"], f"fame/{name}")

    store = tmp_path / "artifacts"
    # reuse the text embeddings the flow tests computed (if they ran): encode still runs, from
    # its per-text cache, and the test does not pay for the encoder a second time
    if (flow_store / "_cache").is_dir():
        shutil.copytree(flow_store / "_cache", store / "_cache")
    from flows.server import prefect_cmd
    from flows.state import prefect_env

    cmd = [*prefect_cmd(), "deployment", "run", "fame/full-pipeline", "--watch"]
    cmd += ["--params", json.dumps(slice_params(store))]
    done = subprocess.run(
        cmd, env=prefect_env(info["port"]), capture_output=True, text=True, timeout=600
    )
    log = Path(serve["log"]).read_text(errors="replace")[-3000:]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + log
    assert "Completed" in done.stdout

    _, rows = query(store, "select stage, status from stages order by started_at")
    assert rows == [(s, "computed") for s in STAGES]
    _, rows = query(store, "select split, count(*) from metrics group by 1 order by 1")
    assert rows == [("test", 14), ("valid", 14)]
    _, rows = query(store, "select status from runs")
    assert rows == [("completed",)]

    runs = api(info, "/flow_runs/filter", {})
    assert [(r["state_type"], r["parameters"]["config"]) for r in runs] == [
        ("COMPLETED", "ml-100k")
    ]
    (artifact,) = api(info, "/artifacts/filter", {"artifacts": {"key": {"any_": ["fame-run"]}}})
    assert "| exclude_history | test |" in artifact["data"]

    # a `fame serve` left from another environment is restarted, not reused; an equal one is
    monkeypatch.setenv("FAME_PROBE_VARIABLE", "1")
    again = srv.start_serve(info["port"], timeout=240)
    assert again["started"] and again["pid"] != serve["pid"]
    assert "FAME_PROBE_VARIABLE changed" in again["restarted"]
    assert not srv._alive(serve["pid"])
    same = srv.start_serve(info["port"], timeout=240)
    assert not same["started"] and same["pid"] == again["pid"]
    # and a server recorded by other packages is replaced
    from flows.state import server_file

    record = json.loads(server_file().read_text())
    record["fingerprint"]["packages"]["prefect"] = "0.0"
    server_file().write_text(json.dumps(record))
    fresh = srv.start(info["port"], timeout=240)
    assert fresh["started"] and fresh["pid"] != info["pid"]
    assert fresh["restarted"].startswith("prefect 0.0 -> ")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_prefect_commands_work_after_eval_fame_server_env(server, tmp_path):
    """As the README says: `eval "$(fame server env)"`, then the plain `prefect` CLI, from a
    shell with no Prefect variable and a fresh home (no profile), reaches the local server."""
    srv, info = server
    srv.start_serve(info["port"], timeout=240)
    from flows.server import fame_cmd, prefect_cmd

    store = tmp_path / "artifacts"
    params = {
        "config": "synthetic",
        "overrides": {"paths.artifacts": str(store), **SYNTH_TINY},
        "stages": ["ingest"],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(tmp_path / "home")
    script = (
        f'eval "$({shlex.join(fame_cmd())} server env)" && echo "url=$PREFECT_API_URL" && '
        f"{shlex.join(prefect_cmd())} deployment run fame/ingest --watch "
        f"--params {shlex.quote(json.dumps(params))}"
    )
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"url={info['url']}" in done.stdout and "Completed" in done.stdout
    _, rows = query(store, "select stage, status from stages")
    assert rows == [("ingest", "computed")]

    # the UI's view of it: the run named after dataset, model and init; a described form
    (run,) = api(info, "/flow_runs/filter", {})
    assert run["name"] == "synthetic-fame-facet_pretrain [ingest]"
    url = f"{info['url']}/deployments/name/fame/full-pipeline"
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
        schema = json.loads(resp.read())["parameter_openapi_schema"]
    for name, prop in schema["properties"].items():
        assert prop.get("description") and "null" not in json.dumps(prop), name


def test_server_env_without_a_server_prints_nothing_to_eval(tmp_path, monkeypatch):
    monkeypatch.setenv("FAME_STATE_DIR", str(tmp_path / "state"))
    from typer.testing import CliRunner

    from flows.cli import app

    res = CliRunner().invoke(app, ["server", "env"])
    assert res.exit_code == 1 and "fame server start" in res.output
    assert "export" not in res.output
