"""The sweep flow ``fame/sweep`` on a real 2-worker Dask cluster and the test Prefect server:
a 4-trial grid on tiny synthetic data with one worker killed mid-trial ends with every trial
finished and equal to the same trial run sequentially; a rerun runs nothing; the ``sweeps``
view holds the trials; catalog readers never see an error while the workers write."""

import os
import signal
import threading
import time

import pytest

from flows.sweep import SWEEP_DEPLOYMENT, sweep_flow, worker_threads
from storage import ArtifactStore, CatalogError, query
from studies.sweep import METRICS, SweepSpec, run_sweep

TINY = {
    "data.synth.users": 300,
    "data.synth.items": 150,
    "data.synth.interactions": 4000,
    "train.epochs": 3,
    "model.d": 16,
    "init.method": "random",
}
SWEEP = """
[sweep]
name = "tiny-grid"
config = "synthetic"
seeds = [1, 2]

[overrides]
"train.epochs" = 3
"model.d" = 16
"init.method" = "random"
"data.synth.users" = 300
"data.synth.items" = 150
"data.synth.interactions" = 4000

[grid]
"model.name" = ["sasrec", "fame"]
"""


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as client,
    ):
        yield lc, client


def kill_first_trial(store, client, killed: list, stop: threading.Event) -> None:
    """SIGKILL the Dask worker process running a trial's run once its train is under way."""
    while not stop.is_set() and not killed:
        pids = set(client.run(os.getpid).values())
        for run in ArtifactStore(store).records("runs"):
            if run.get("status") != "running" or run.get("pid") not in pids:
                continue
            stages = ArtifactStore(store).records("stages")
            done = {s["stage"] for s in stages if s["run_id"] == run["run_id"]}
            if "ingest" in done and "train" not in done:
                time.sleep(0.2)  # into the first epochs
                # still training? (on a fast machine a tiny trial may have finished meanwhile)
                again = [
                    r for r in ArtifactStore(store).records("runs") if r["run_id"] == run["run_id"]
                ]
                later = {
                    s["stage"]
                    for s in ArtifactStore(store).records("stages")
                    if s["run_id"] == run["run_id"]
                }
                if again[0].get("status") != "running" or "train" in later:
                    continue
                os.kill(run["pid"], signal.SIGKILL)
                killed.append(run["run_id"])
                return
        time.sleep(0.05)


def read_catalog(store, errors: list, stop: threading.Event) -> None:
    while not stop.is_set():
        for sql in ("select count(*) from runs", "select count(*) from sweeps"):
            try:
                query(store, sql)
            except CatalogError as exc:  # a view not created yet is fine; nothing else is
                if "does not exist" not in str(exc) and "no views" not in str(exc):
                    errors.append(str(exc))
        time.sleep(0.1)


@pytest.mark.timeout(600)
def test_killed_worker_trial_is_rerun_and_equals_the_sequential_run(harness, cluster, tmp_path):
    lc, client = cluster
    path = tmp_path / "tiny-grid.toml"
    path.write_text(SWEEP)
    store = tmp_path / "store"
    over = {"paths.artifacts": str(store)}
    killed: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    ArtifactStore(store)  # the reader may start before the first run
    threads = [
        threading.Thread(target=kill_first_trial, args=(store, client, killed, stop)),
        threading.Thread(target=read_catalog, args=(store, errors, stop)),
    ]
    for t in threads:
        t.start()
    try:
        out = sweep_flow(sweep=str(path), overrides=over, address=lc.scheduler_address)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert killed, "no trial was killed"
    assert not errors, errors[:3]
    trials = {r["trial"]: r for r in out["trials"]}
    assert sorted(trials) == ["t000", "t001", "t002", "t003"]
    assert {r["status"] for r in trials.values()} == {"completed"}

    runs = {r["run_id"]: r for r in ArtifactStore(store).records("runs")}
    assert runs[killed[0]]["status"] == "killed"  # the killed attempt, found by the retry
    assert all(runs[r["run_id"]]["status"] == "completed" for r in trials.values())

    # the same trials one after another in this process, on a store of their own
    spec = SweepSpec(
        name="tiny-grid",
        config="synthetic",
        overrides={**TINY, "paths.artifacts": str(tmp_path / "sequential")},
        grid={"model.name": ["sasrec", "fame"]},
        seeds=[1, 2],
    )
    sequential = run_sweep(spec, threads=worker_threads(2))
    for row in sequential.rows:
        got = trials[row["trial"]]
        assert got["params"] == row["params"] and got["evaluate_key"] == row["evaluate_key"]
        assert {m: got[m] for m in METRICS} == {m: row[m] for m in METRICS}, row["trial"]

    # rerun: every trial is found finished, nothing is submitted, no run is added
    again = sweep_flow(sweep=str(path), overrides=over, address=lc.scheduler_address)
    assert again["submitted"] == 0
    assert {r["status"] for r in again["trials"]} == {"cached"}
    assert len(ArtifactStore(store).records("runs")) == len(runs)

    cols, rows = query(store, "select * from sweeps order by trial")
    got = [dict(zip(cols, r, strict=True)) for r in rows]
    assert [r["trial"] for r in got] == ["t000", "t001", "t002", "t003"]
    assert all(r["sweep"] == "tiny-grid" and r["status"] == "completed" for r in got)
    assert [r["valid_ndcg10"] for r in got] == [trials[r["trial"]]["valid_ndcg10"] for r in got]


def test_the_sweep_deployment_is_fame_sweep():
    dep = sweep_flow.to_deployment(name=SWEEP_DEPLOYMENT)
    assert (sweep_flow.name, dep.name) == ("fame", "sweep")
    props = dep._parameter_openapi_schema.model_dump_for_openapi()["properties"]
    assert list(props) == ["sweep", "overrides", "workers", "address", "data_dir"]
    assert all(p.get("description") for p in props.values())
