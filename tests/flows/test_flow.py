"""The Prefect flow ``fame`` on a real ml-100k slice with the real encoder, on a test server."""

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

from flows.flow import fame
from pipeline.errors import PipelineError
from pipeline.stages import train as train_stage
from storage import query

STAGES = ["ingest", "encode", "pretrain", "train", "evaluate"]


@pytest.fixture
def run(harness, flow_store, slice_params):
    """Run the flow on the shared store; returns (result dict, flow run id)."""

    def go(**kw):
        state = fame(**slice_params(flow_store, **kw), return_state=True)
        return state.result(), state.state_details.flow_run_id

    return go


def statuses(store, run_id) -> dict[str, str]:
    _, rows = query(store, f"select stage, status from stages where run_id = '{run_id}'")
    return dict(rows)


def test_first_run_computes_every_stage_then_all_are_skipped(run, flow_store):
    first, flow_run_id = run()
    assert statuses(flow_store, first["run_id"]) == dict.fromkeys(STAGES, "computed")
    assert list(first["stages"]) == STAGES
    assert first["catalog"] == str(flow_store / "catalog.duckdb")
    _, rows = query(
        flow_store,
        f"select split, count(*) from metrics where run_id = '{first['run_id']}' "
        "group by 1 order by 1",
    )
    assert rows == [("test", 14), ("valid", 14)]  # 7 metrics x 2 protocols
    _, rows = query(flow_store, f"select status from runs where run_id = '{first['run_id']}'")
    assert rows == [("completed",)]

    with get_client(sync_client=True) as client:
        # the DAG edges the UI draws: each task's `upstream` input names its upstream tasks
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        names = {t.id: t.name for t in tasks}
        edges = {t.name: sorted(names[i.id] for i in t.task_inputs["upstream"]) for t in tasks}
        assert edges == {
            "ingest": [],
            "encode": ["ingest"],
            "pretrain": ["encode", "ingest"],
            "train": ["ingest", "pretrain"],
            "evaluate": ["ingest", "train"],
        }
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fame-run"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
        (report,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fame-report"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert "| exclude_history | test |" in artifact.data
    assert str(flow_store / "catalog.duckdb") in artifact.data
    page = flow_store / "_reports" / f"{first['run_id']}.html"  # the run's HTML report
    assert f"Report: `{page}`" in artifact.data and page.as_uri() in report.data
    assert "Gate and router over the test users" in page.read_text()
    with get_client(sync_client=True) as client:  # the report's tables, shown in the UI itself
        (summary,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fame-report-summary"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert summary.type == "markdown" and f"`{page}`" in summary.data
    assert "| exclude_history | test |" in summary.data
    _, popular = query(
        flow_store,
        "select users, value from group_metrics where split = 'test' and metric = 'ndcg' and "
        f"k = 10 and protocol = 'exclude_history' and grouping = 'target_popularity' "
        f"and run_id = '{first['run_id']}' order by group_order limit 1",
    )
    users, value = popular[0]
    assert f"| {users:,} | {value:.4f} |" in summary.data

    second, second_flow = run()
    assert statuses(flow_store, second["run_id"]) == dict.fromkeys(STAGES, "skipped")
    assert all(s["skipped"] for s in second["stages"].values())
    with get_client(sync_client=True) as client:  # a cached run links the same evaluation's page
        (again,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fame-report"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[second_flow])),
        )
    assert page.as_uri() in again.data
    assert not (flow_store / "_reports" / f"{second['run_id']}.html").exists()
    assert {s: v["key"] for s, v in second["stages"].items()} == {
        s: v["key"] for s, v in first["stages"].items()
    }


def test_a_chosen_run_id_names_the_run_and_a_malformed_one_is_refused(run, flow_store):
    from pipeline.runner import new_run_id

    chosen = new_run_id()
    result, _ = run(run_id=chosen)
    assert result["run_id"] == chosen
    assert set(statuses(flow_store, chosen)) == set(STAGES)
    with pytest.raises(PipelineError, match="run_id"):
        run(run_id="x' or '1'='1")


def test_force_train_recomputes_train_and_evaluate_only(run, flow_store):
    run()
    forced, _ = run(force=["train"])
    assert statuses(flow_store, forced["run_id"]) == {
        "ingest": "skipped",
        "encode": "skipped",
        "pretrain": "skipped",
        "train": "computed",
        "evaluate": "computed",
    }


def test_stage_subset_resolves_upstream_from_the_store(run):
    res, _ = run(stages="evaluate")  # a comma-separated string works like a list
    assert list(res["stages"]) == ["evaluate"] and res["stages"]["evaluate"]["skipped"]


def test_failed_train_is_retried_once_and_leaves_upstream_reusable(run, flow_store, monkeypatch):
    calls = []

    def boom(ctx, inputs):
        calls.append(1)
        raise RuntimeError("injected failure in train")

    monkeypatch.setattr(train_stage, "compute", boom)
    seed = {"overrides": {"train.seed": 5}}  # a new train key: train must really run
    with pytest.raises(RuntimeError, match="injected failure in train"):
        run(**seed)
    assert len(calls) == 2  # a transient-looking error gets one retry
    _, rows = query(flow_store, "select status, error from runs order by started_at desc limit 1")
    assert rows[0][0] == "failed" and "injected failure in train" in rows[0][1]
    monkeypatch.undo()
    resumed, _ = run(**seed)
    assert statuses(flow_store, resumed["run_id"]) == {
        "ingest": "skipped",
        "encode": "skipped",
        "pretrain": "skipped",
        "train": "computed",
        "evaluate": "computed",
    }


def test_deterministic_errors_are_not_retried(run, monkeypatch):
    calls = []

    def bad(ctx, inputs):
        calls.append(1)
        raise PipelineError("train: bad input")

    monkeypatch.setattr(train_stage, "compute", bad)
    with pytest.raises(PipelineError, match="bad input"):
        run(overrides={"train.seed": 6})
    assert len(calls) == 1


def test_config_errors_fail_before_any_stage(run):
    with pytest.raises(ValueError, match="must be divisible by model.heads"):
        run(overrides={"model.heads": 4, "model.d": 30})
    with pytest.raises(PipelineError, match="3 facets declared .* model.heads = 4"):
        run(
            overrides={
                "facets": [
                    {"name": "g", "field": "genres", "kind": "first"},
                    {"name": "d", "field": "year", "kind": "decade"},
                    {"name": "y", "field": "year"},
                ]
            }
        )
    with pytest.raises(PipelineError, match="unknown stage"):
        run(stages=["fit"])
