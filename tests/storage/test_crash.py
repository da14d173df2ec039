"""Crash consistency: a real `fame run` subprocess is SIGKILLed at each step of the publication
protocol (``$FAME_CRASH_AT``) and at random instants; the rerun must leave the store exactly as
an uninterrupted run does — catalog opens, every view has the same rows, no temporary survives,
the killed run is marked ``killed`` — and a killed Prefect run leaves no server listening."""

import os
import random
import signal
import time
from pathlib import Path

import pytest
from support import fame_run, finish

from storage import ArtifactStore, query

VIEWS = ("items_all", "interactions_all", "sequences_all", "metrics", "rankings")
STEPS = ("publish:tables", "publish:manifest", "publish:done", "record:stage")
STAGES = ("ingest", "train", "evaluate")


def snapshot(store: Path) -> dict:
    """What a user sees: the rows of every view and the metric values."""
    counts = {v: query(store, f"select count(*) from {v}")[1][0][0] for v in VIEWS}
    _, metrics = query(store, "select split, protocol, metric, k, value from metrics order by all")
    return {"counts": counts, "metrics": metrics}


def leftovers(store: Path) -> list[str]:
    """Temporaries anywhere a kill can leave them."""
    found = [p.name for p in (store / "_work" / "publish").glob("*")]
    for stage in STAGES:
        found += [f"{stage}/{p.name}" for p in (store / stage).glob(".*")]
    return found


@pytest.fixture(scope="module")
def reference(ml100k_slice, tmp_path_factory) -> dict:
    store = tmp_path_factory.mktemp("reference")
    rc, out = finish(fame_run(store, ml100k_slice))
    assert rc == 0, out
    return snapshot(store)


def check_recovers(
    store: Path, data: Path, reference: dict, killed: int, completed: int = 1
) -> None:
    rc, out = finish(fame_run(store, data))
    assert rc == 0, out
    assert snapshot(store) == reference
    assert leftovers(store) == []
    _, rows = query(store, "select status, count(*) from runs group by 1 order by 1")
    assert dict(rows) == {"completed": completed, **({"killed": killed} if killed else {})}, rows


def crash_at(store: Path, data: Path, point: str, *extra: str) -> None:
    rc, out = finish(fame_run(store, data, *extra, crash=point))
    assert rc == -signal.SIGKILL, f"{point} was not reached (rc {rc}):\n{out}"


DEFAULT_POINTS = ["ingest:publish:manifest", "train:record:stage", "evaluate:publish:tables"]
ALL_POINTS = [f"{stage}:{step}" for stage in STAGES for step in STEPS]


@pytest.mark.parametrize("point", DEFAULT_POINTS)
def test_kill_during_publication_loses_nothing(point, reference, ml100k_slice, tmp_path):
    crash_at(tmp_path / "store", ml100k_slice, point)
    check_recovers(tmp_path / "store", ml100k_slice, reference, killed=1)


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(set(ALL_POINTS) - set(DEFAULT_POINTS)))
def test_kill_at_every_publication_step(point, reference, ml100k_slice, tmp_path):
    crash_at(tmp_path / "store", ml100k_slice, point)
    check_recovers(tmp_path / "store", ml100k_slice, reference, killed=1)


def test_kill_while_replacing_an_artifact_puts_the_old_one_back(reference, ml100k_slice, tmp_path):
    """`--force train` publishes over an existing artifact: killed between moving the old one
    aside and renaming the new one in, the sweep of the next run restores the old version."""
    store = tmp_path / "store"
    rc, out = finish(fame_run(store, ml100k_slice))
    assert rc == 0, out
    crash_at(store, ml100k_slice, "train:publish:displaced", "--force", "train")
    assert not any((store / "train").glob("[0-9a-f]*"))  # the kill left no train artifact
    rc, out = finish(fame_run(store, ml100k_slice))
    assert rc == 0, out
    _, rows = query(
        store,
        "select stage, status from stages where run_id = "
        "(select run_id from runs order by started_at desc limit 1) order by all",
    )
    assert dict(rows)["train"] == "skipped"  # restored, not recomputed
    assert snapshot(store) == reference and leftovers(store) == []


@pytest.mark.slow
def test_random_timed_kills(reference, ml100k_slice, tmp_path):
    rng = random.Random(0)
    for trial in range(6):
        store = tmp_path / f"store{trial}"
        proc = fame_run(store, ml100k_slice)
        time.sleep(rng.uniform(1.0, 8.0))  # a whole run takes about 9 s on 2 idle cores
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        # what the kill interrupted, as the store recorded it: a run still `running` is marked
        # killed by the next run's sweep; one that beat the kill is one more completed run
        statuses = [r["status"] for r in ArtifactStore(store).records("runs")]
        check_recovers(
            store,
            ml100k_slice,
            reference,
            killed=statuses.count("running"),
            completed=1 + statuses.count("completed"),
        )


def _servers_of(state: Path) -> list[int]:
    """Pids of Prefect API servers whose environment points at ``state``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"prefect.server.api.server" in cmd and str(state).encode() in env:
            pids.append(int(proc.name))
    return pids


@pytest.mark.timeout(600)
def test_killed_prefect_run_leaves_no_server_listening(ml100k_slice, tmp_path):
    """SIGKILL `fame run` (Prefect's ephemeral mode) once its temporary API server is up: the
    server must not stay behind, listening."""
    state = tmp_path / "state"
    proc = fame_run(
        tmp_path / "store", ml100k_slice, prefect=True, env={"FAME_STATE_DIR": str(state)}
    )
    deadline = time.monotonic() + 300
    while not _servers_of(state) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _servers_of(state), "no ephemeral server was seen: " + finish(proc)[1]
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # not communicate(): the server holds stdout
    deadline = time.monotonic() + 30
    while _servers_of(state) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _servers_of(state)
    for pid in left:  # never leak a listening server into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_what_a_killed_writer_left_is_invisible_and_swept(make_config, artifacts):
    """The state a kill mid-publication leaves — a temporary copy of an artifact with its
    Parquet files and manifest — must not reach the catalog (it doubled `interactions_all`
    and crashed on a half-written file before) and is removed by the next run's sweep."""
    import shutil

    from pipeline.runner import run_pipeline

    cfg = make_config("ml-100k")
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    art = ctx.results["ingest"].artifact
    _, before = query(artifacts, "select count(*) from interactions_all")
    for leftover in (f".tmp-{art.key}-dead", f".old-{art.key}-1"):
        shutil.copytree(art.path, art.path.parent / leftover)
    (art.path.parent / f".tmp-{art.key}-half").mkdir()
    (art.path.parent / f".tmp-{art.key}-half" / "sequences.parquet").write_bytes(b"PAR1\0trunc")
    run_pipeline(cfg, ["ingest"], progress=False)  # refreshes the catalog
    _, after = query(artifacts, "select count(*) from interactions_all")
    assert after == before
    from storage import ArtifactStore

    assert ArtifactStore(artifacts).sweep(legacy_age=0)["removed"] == 3
    assert leftovers(artifacts) == []
