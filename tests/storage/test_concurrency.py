"""Concurrency: several real `fame run` processes on one store — the same config twice (same
keys published at once, one train waiting for the other's lock) and another seed — while a
`fame sql` loop reads the catalog. Every run ends completed with each stage computed or
skipped, no record is lost, equal configs give equal metrics, and nothing prints a traceback."""

import subprocess
import sys
import time

import pytest
from support import REPO, fame_run, finish

from storage import query

SQL_LOOP = """
import os, sys, time
from storage import CatalogError, query
root, stop, failures, ok = sys.argv[1], sys.argv[2], [], 0
while not os.path.exists(stop):
    try:
        query(root, "select count(*) from runs")
        query(root, "select count(*) from metrics")
        ok += 1
    except CatalogError as exc:  # a view not created yet is fine; anything else is not
        if "does not exist" not in str(exc) and "no views" not in str(exc):
            failures.append(str(exc))
    time.sleep(0.1)
print("queries", ok, "failures", len(failures), *failures[:3], sep="\\n")
sys.exit(1 if failures else 0)
"""


def run_concurrently(store, data, seeds: list[int]) -> None:
    stop = store.parent / "stop-reading"
    reader = subprocess.Popen(
        [sys.executable, "-c", SQL_LOOP, str(store), str(stop)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    procs = [fame_run(store, data, "--set", f"train.seed={s}") for s in seeds]
    outs = [finish(p) for p in procs]
    time.sleep(1.0)  # a few queries on the final catalog too
    stop.touch()
    for rc, out in outs:
        assert rc == 0 and "Traceback" not in out, out
    rc, out = finish(reader)
    assert rc == 0 and "Traceback" not in out, out
    lines = out.splitlines()
    assert int(lines[lines.index("queries") + 1]) > 0, out

    _, runs = query(store, "select status, count(*) from runs group by 1")
    assert dict(runs) == {"completed": len(seeds)}
    _, stages = query(store, "select stage, status from stages")
    assert len(stages) == 3 * len(seeds)  # no record lost
    assert {s for _, s in stages} <= {"computed", "skipped"}
    _, rows = query(
        store,
        "select r.seed, m.value from metrics m join runs r using (run_id) "
        "where m.metric = 'ndcg' and m.k = 10 and m.split = 'test' "
        "and m.protocol = 'exclude_history'",
    )
    by_seed: dict[int, set[float]] = {}
    for seed, value in rows:
        by_seed.setdefault(seed, set()).add(value)
    assert all(len(v) == 1 for v in by_seed.values()), by_seed  # equal configs, equal metrics


@pytest.mark.timeout(900)
def test_same_and_different_configs_on_one_store(ml100k_slice, tmp_path):
    start = time.monotonic()
    run_concurrently(tmp_path / "store", ml100k_slice, [1, 1, 2])
    print(f"3 runs + sql loop in {time.monotonic() - start:.0f}s")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_six_processes_on_one_store(ml100k_slice, tmp_path):
    run_concurrently(tmp_path / "store", ml100k_slice, [1, 1, 1, 2, 2, 3])
