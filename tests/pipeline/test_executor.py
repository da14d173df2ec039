"""The run loop with another executor: every stage task in a fresh process (multiprocessing
spawn), from plain data only, gives the artifacts of the in-process run."""

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from support import SMALL

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.registry import VIEWS
from pipeline.runner import run_pipeline, run_task, task_config
from storage import query

# ingest -> train -> evaluate of seconds: SASRec from random item embeddings
CHAIN = {**SMALL, "model.name": "sasrec", "init.method": "random", "train.epochs": 1}


@pytest.fixture
def slice_cfg(ml100k_slice, tmp_path):
    def make(store: str):
        over = {"paths.artifacts": str(tmp_path / store), **CHAIN}
        return load_config("ml-100k", over, ml100k_slice)

    return make


def test_stage_tasks_in_fresh_processes_match_in_process(slice_cfg, tmp_path):
    here = run_pipeline(slice_cfg("here"), progress=False)
    assert list(here.results) == ["ingest", "train", "evaluate"]

    calls = []
    spawn = multiprocessing.get_context("spawn")
    # one fresh interpreter per task: nothing reaches it but the task's arguments
    with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:

        def in_fresh_process(stage, **task):
            assert json.loads(json.dumps(task)) == task  # plain data, nothing else
            calls.append((stage, {u: r["key"] for u, r in task["upstream"].items()}))
            return pool.submit(run_task, stage, **task).result()

        there = run_pipeline(slice_cfg("there"), progress=False, executor=in_fresh_process)

    keys = {s: r.key for s, r in here.results.items()}
    assert calls == [
        ("ingest", {}),
        ("train", {"ingest": keys["ingest"]}),
        ("evaluate", {"ingest": keys["ingest"], "train": keys["train"]}),
    ]
    for name, res in there.results.items():
        assert not res.skipped
        assert res.key == here.results[name].key
        assert res.rows == here.results[name].rows
        assert res.artifact.path.is_relative_to(tmp_path / "there")
    # the tasks recorded themselves and refreshed the catalog of their store
    _, rows = query(
        tmp_path / "there",
        f"select stage, status from stages where run_id = '{there.run_id}' order by started_at",
    )
    assert rows == [("ingest", "computed"), ("train", "computed"), ("evaluate", "computed")]
    _, rows = query(tmp_path / "there", "select count(*) from metrics")
    assert rows == [(here.results["evaluate"].rows["metrics"],)]


def test_a_task_reads_its_upstream_from_the_store_by_key(slice_cfg):
    cfg = slice_cfg("store")
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    config = task_config(cfg)
    ref = run_task("ingest", config=config, run_id="again")
    assert ref["skipped"] and ref["key"] == ctx.results["ingest"].key
    with pytest.raises(PipelineError, match="stage 'train' has no artifact"):
        run_task("evaluate", config=config, run_id="again")  # train never ran
    stale = {"ingest": {"stage": "ingest", "key": "0" * 16}}
    with pytest.raises(PipelineError, match="upstream 'ingest' ref has key 0{16}"):
        run_task("train", config=config, run_id="again", upstream=stale)


def test_task_config_is_plain_data_with_the_same_keys(slice_cfg, monkeypatch, tmp_path):
    from pipeline.config import RunConfig
    from pipeline.runner import plan_keys

    cfg = slice_cfg("store")
    config = json.loads(json.dumps(task_config(cfg)))
    monkeypatch.chdir(tmp_path)  # another working directory, no FAME_ variables
    monkeypatch.delenv("FAME_DATA_DIR", raising=False)
    monkeypatch.delenv("FAME_HOME", raising=False)
    again = RunConfig.model_validate(config)
    assert plan_keys(again) == plan_keys(cfg)
    assert again.artifacts_dir() == cfg.artifacts_dir()
    assert again.dataset_dir() == cfg.dataset_dir()
    assert {v.name for v in VIEWS} >= {"items", "metrics"}
