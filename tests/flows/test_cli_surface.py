"""The console script as a user runs it (real subprocesses, real DuckDB catalog, no test server):
a cached `fame run` without a server, the --stages hint, a moved artifact folder, --version."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.config import REPO_ROOT
from pipeline.registry import ORDER

# the bundled synthetic dataset at its smallest: no data files, seconds per stage
TINY = [
    "data.synth.users=100",
    "data.synth.items=80",
    "data.synth.interactions=1500",
    "train.epochs=1",
    "pretrain.steps=10",
    "model.d=16",
]


def fame(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``fame ARGS`` in a fresh process with no Prefect server to reach (state dir ``state``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["FAME_STATE_DIR"] = str(state)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def assert_names_a_commit(code_version: str) -> None:
    """``git describe`` output (``<hash>[-dirty]`` or ``<tag>-<n>-g<hash>[-dirty]``, then
    ``+src.<digest>``) names a commit of this repository (HEAD may move while tests run)."""
    found = re.search(r"(?:^|-g)([0-9a-f]{7,40})(?:-dirty)?\+src\.", code_version)
    assert found, code_version
    done = subprocess.run(["git", "cat-file", "-e", f"{found.group(1)}^{{commit}}"], cwd=REPO_ROOT)
    assert done.returncode == 0, code_version


def synth_args(store: Path, *extra: str) -> list[str]:
    sets = [f"--set={s}" for s in [*TINY, f"paths.artifacts={store}", *extra]]
    return ["run", "--config", "synthetic", "-q", *sets]


def sql(store: Path, query: str, state: Path) -> list[dict]:
    out = fame("sql", "--artifacts", str(store), "--format", "json", query, state=state)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A completed tiny synthetic run (every stage), computed without Prefect."""
    root = tmp_path_factory.mktemp("synth") / "artifacts"
    fame(*synth_args(root), "--no-prefect", state=root.parent / "state")
    return root


def test_cached_run_is_recorded_without_starting_a_prefect_server(store, tmp_path):
    state = tmp_path / "state"
    done = fame(*synth_args(store), state=state)
    assert "every stage is cached, so no temporary server is started" in done.stderr
    # Prefect's temporary server would have created its database under the state dir
    assert not (state / "prefect" / "prefect.db").exists()
    (run,) = sql(store, "select * from runs order by started_at desc limit 1", state)
    assert run["status"] == "completed" and run["config_name"] == "synthetic"
    stages = sql(store, f"select stage, status from stages where run_id = '{run['run_id']}'", state)
    assert sorted((s["stage"], s["status"]) for s in stages) == sorted(
        (s, "skipped") for s in ORDER
    )


def test_runs_record_package_versions_and_the_code_version(store, tmp_path):
    runs = sql(store, "select code_version, packages from runs", tmp_path / "state")
    assert runs
    for run in runs:
        packages = json.loads(run["packages"])
        for name in ("fame-rec", "torch", "duckdb", "prefect", "pyarrow"):
            assert packages[name] == metadata.version(name)
        assert "+src." in run["code_version"]
        if (REPO_ROOT / ".git").exists():
            assert_names_a_commit(run["code_version"])


def test_a_stage_that_needs_work_still_runs_as_a_prefect_flow(store, tmp_path):
    done = fame(*synth_args(store), "--stages", "ingest", "--force", "ingest", state=tmp_path)
    assert "ephemeral mode" in done.stderr
    assert "task seconds" in done.stdout  # the flow's result table, not the plain runner's


def test_stage_subset_hint_is_a_valid_command_that_keeps_the_overrides(tmp_path):
    empty = tmp_path / "artifacts"
    asked = synth_args(empty, "train.seed=7") + ["--stages", "encode"]
    done = fame(*asked, state=tmp_path / "state", check=False)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())  # rich may wrap a long line
    hint = shlex.split(message.split("run them too: ", 1)[1])
    assert hint[:2] == ["fame", "run"]
    assert hint[hint.index("--stages") + 1] == "ingest,encode"
    for item in [*TINY, f"paths.artifacts={empty}", "train.seed=7"]:
        assert item in hint[hint.index("--set") :], item
    # the hint runs as written (plain runner, to keep it quick), then the first command works
    fame(*hint[1:], "--no-prefect", state=tmp_path / "state")
    fame(*asked, "--no-prefect", state=tmp_path / "state")


def test_moved_artifact_folder_still_answers_fame_sql(tmp_path):
    a, b, state = tmp_path / "A", tmp_path / "B", tmp_path / "state"
    fame(*synth_args(a), "--no-prefect", "--stages", "ingest", state=state)
    queries = {
        "interactions": "select count(*) as n, sum(item_id) as s from interactions",
        "items": "select item_id, source_id from items order by item_id limit 5",
        "runs": "select run_id, status from runs",
        "stages": "select stage, key, status from stages",
    }
    before = {name: sql(a, q, state) for name, q in queries.items()}
    assert before["interactions"][0]["n"] > 0 and before["runs"]
    shutil.move(a, b)
    assert not a.exists()
    assert {name: sql(b, q, state) for name, q in queries.items()} == before
    # an explicit rebuild works too, and leaves a catalog a plain duckdb client can read
    done = fame("catalog", "rebuild", "--artifacts", str(b), state=state)
    assert "interactions" in done.stdout
    con = duckdb.connect(str(b / "catalog.duckdb"), read_only=True)
    try:
        (n,) = con.execute("select count(*) from interactions").fetchone()
    finally:
        con.close()
    assert n == before["interactions"][0]["n"]


def test_version_names_the_package_and_the_commit():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"fame {metadata.version('fame-rec')} (code ")
    if (REPO_ROOT / ".git").exists():
        assert_names_a_commit(res.output.split("(code ", 1)[1])


def test_demo_run_table_shows_its_own_run_not_the_newest(store, tmp_path, capsys):
    """``fame demo`` prints the stages of the run it started, though another process may have
    recorded a newer run in the same store since (here: a cached rerun after it)."""
    from flows.cli import _print_run

    first = sql(store, "select run_id from runs order by started_at limit 1", tmp_path)[0]
    fame(*synth_args(store), "--no-prefect", state=tmp_path)  # a newer run, every stage skipped
    newest = sql(store, "select run_id from runs order by started_at desc limit 1", tmp_path)[0]
    assert newest["run_id"] != first["run_id"]
    capsys.readouterr()
    _print_run(store, first["run_id"])
    shown = capsys.readouterr().out
    assert shown.count("computed") == len(ORDER) and shown.count("skipped") == 1  # the title
