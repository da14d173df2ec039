"""The CLI surface: sql formats and refusal, config errors, data fetch from a loopback server."""

import json

import pytest
from support import ml100k_zip, serve_bytes
from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()


@pytest.fixture
def ingested(make_config, artifacts):
    from pipeline.runner import run_pipeline

    run_pipeline(make_config("ml-100k"), ["ingest"], progress=False)
    return artifacts


def test_sql_formats(ingested):
    q = "select count(*) as n from interactions"
    res = runner.invoke(app, ["sql", q, "--format", "json", "--artifacts", str(ingested)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"n": 100000}]
    res = runner.invoke(app, ["sql", q, "--format", "csv", "--artifacts", str(ingested)])
    assert res.stdout.splitlines() == ["n", "100000"]
    res = runner.invoke(app, ["sql", q, "--artifacts", str(ingested)])
    assert "100000" in res.stdout


def test_sql_refuses_writes(ingested):
    res = runner.invoke(app, ["sql", "delete from items", "--artifacts", str(ingested)])
    assert res.exit_code == 2 and "refused" in res.output


def test_bad_override_names_field(data_dir, artifacts):
    res = runner.invoke(
        app,
        [
            "ingest",
            "-c",
            "ml-100k",
            "--set",
            "model.dropout=lots",
            "--set",
            f"paths.artifacts={artifacts}",
        ],
    )
    assert res.exit_code == 2
    assert "model.dropout" in res.output and "ml-100k.toml" in res.output


def test_dataset_name_cannot_be_a_path(data_dir, artifacts):
    res = runner.invoke(app, ["ingest", "-c", "ml-100k", "--set", "data.name=../../etc"])
    assert res.exit_code == 2 and "data.name" in res.output


def test_data_fetch_from_loopback(tmp_path):
    with serve_bytes(ml100k_zip()) as base:
        url = f"{base}/ml-100k.zip"
        res = runner.invoke(
            app, ["data", "fetch", "ml-100k", "--dest", str(tmp_path), "--url", url]
        )
    assert res.exit_code == 0, res.output
    inter = (tmp_path / "ml-100k" / "ml-100k.inter").read_text().splitlines()
    assert inter[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert inter[1:] == ["1\t10\t5\t100", "1\t20\t3\t90", "1\t30\t4\t95"]
    items = (tmp_path / "ml-100k" / "ml-100k.item").read_text().splitlines()
    assert items[1:] == [
        "10\tHeat\t1995\tAction Comedy",
        "20\tBig\t1988\tComedy",
        "30\tOdd\t\tunknown",
    ]
    # the converted files ingest with the shipped ml-100k config
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    cfg = load_config("ml-100k", {"paths.artifacts": str(tmp_path / "a")}, tmp_path)
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    assert ctx.results["ingest"].rows["interactions"] == 3


def test_fetch_rejects_non_http(tmp_path):
    res = runner.invoke(
        app, ["data", "fetch", "ml-100k", "--dest", str(tmp_path), "--url", "file:///etc/passwd"]
    )
    assert res.exit_code == 2 and "http" in res.output
