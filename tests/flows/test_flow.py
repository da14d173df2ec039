"""The Prefect flow on a real ml-100k slice with the real encoder, under a Prefect test server."""

import pytest
from prefect.testing.utilities import prefect_test_harness
from support import SMALL

from flows.flow import fame
from pipeline.errors import PipelineError
from pipeline.stages import train as train_stage
from storage import query


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("flow-artifacts")


def _run(store, data_dir, **kw):
    overrides = {"paths.artifacts": str(store), **SMALL, **kw.pop("overrides", {})}
    return fame(config="ml-100k", overrides=overrides, data_dir=str(data_dir), **kw)


def _statuses(store, run_id):
    _, rows = query(
        store, f"select stage, status from stages where run_id = '{run_id}' order by started_at"
    )
    return dict(rows)


def test_flow_runs_every_stage_then_skips(harness, store, ml100k_slice):
    first = _run(store, ml100k_slice)
    assert _statuses(store, first["run_id"]) == dict.fromkeys(
        ["ingest", "encode", "pretrain", "train", "evaluate"], "computed"
    )
    _, rows = query(
        store,
        f"select split, count(*) from metrics where run_id = '{first['run_id']}' group by 1 order by 1",
    )
    assert rows == [("test", 14), ("valid", 14)]  # 7 metrics x 2 protocols
    _, rows = query(store, f"select status from runs where run_id = '{first['run_id']}'")
    assert rows == [("completed",)]
    second = _run(store, ml100k_slice)
    assert set(_statuses(store, second["run_id"]).values()) == {"skipped"}
    assert all(s["skipped"] for s in second["stages"].values())
    assert {s: v["key"] for s, v in second["stages"].items()} == {
        s: v["key"] for s, v in first["stages"].items()
    }


def test_force_train_recomputes_train_and_evaluate_only(harness, store, ml100k_slice):
    _run(store, ml100k_slice)
    forced = _run(store, ml100k_slice, force=["train"])
    assert _statuses(store, forced["run_id"]) == {
        "ingest": "skipped",
        "encode": "skipped",
        "pretrain": "skipped",
        "train": "computed",
        "evaluate": "computed",
    }


def test_single_stage_subset(harness, store, ml100k_slice):
    res = _run(store, ml100k_slice, stages=["evaluate"])
    assert list(res["stages"]) == ["evaluate"] and res["stages"]["evaluate"]["skipped"]


def test_failed_train_keeps_upstream_reusable(harness, store, ml100k_slice, monkeypatch):
    def boom(ctx, inputs):
        raise RuntimeError("injected failure in train")

    monkeypatch.setattr(train_stage, "compute", boom)
    other = {"overrides": {"train.seed": 5}}  # a new train key: train must really run
    with pytest.raises(RuntimeError, match="injected failure in train"):
        _run(store, ml100k_slice, **other)
    _, rows = query(store, "select status, error from runs order by started_at desc limit 1")
    assert rows[0][0] == "failed" and "injected failure in train" in rows[0][1]
    _, rows = query(
        store, "select count(*) from stages where stage = 'train' and status = 'failed'"
    )
    assert rows[0][0] >= 1
    monkeypatch.undo()
    resumed = _run(store, ml100k_slice, **other)
    assert _statuses(store, resumed["run_id"]) == {
        "ingest": "skipped",
        "encode": "skipped",
        "pretrain": "skipped",
        "train": "computed",
        "evaluate": "computed",
    }


def test_config_errors_fail_fast(harness, store, ml100k_slice):
    with pytest.raises(ValueError, match="must be divisible by model.heads"):
        _run(store, ml100k_slice, overrides={"model.heads": 4, "model.d": 30})
    with pytest.raises(PipelineError, match="3 facets declared .* model.heads = 4"):
        _run(
            store,
            ml100k_slice,
            overrides={
                "facets": [
                    {"name": "g", "field": "genres", "kind": "first"},
                    {"name": "d", "field": "year", "kind": "decade"},
                    {"name": "y", "field": "year"},
                ]
            },
        )
