"""``fame demo``'s dataset choice against a real loopback HTTP server and a closed port, the
missing-data message, and the reuse-or-restart rule of its background processes."""

import socket

import pytest
from support import ml100k_zip, serve_bytes

from flows.demo import choose
from flows.server import stale_reasons
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.runner import run_pipeline


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/ml-100k.zip"  # nothing listens there any more


def test_missing_ml100k_is_downloaded_then_used(tmp_path):
    with serve_bytes(ml100k_zip()) as base:
        choice = choose("auto", data_dir=tmp_path, url=f"{base}/ml-100k.zip", progress=False)
    assert choice.config == "ml-100k" and "downloaded" in choice.reason
    assert (tmp_path / "ml-100k" / "ml-100k.inter").is_file()
    # present now: chosen without any network (the closed port would fail a download)
    again = choose("auto", data_dir=tmp_path, url=closed_port_url(), progress=False)
    assert again.config == "ml-100k" and str(tmp_path / "ml-100k") in again.reason


def test_no_data_and_no_network_falls_back_to_synthetic(tmp_path):
    choice = choose("auto", data_dir=tmp_path, url=closed_port_url(), progress=False)
    assert choice.config == "synthetic"
    assert "could not be downloaded" in choice.reason and "fame data fetch ml-100k" in choice.reason
    assert "\n" not in choice.reason  # one line
    assert not (tmp_path / "ml-100k").exists()  # a failed download leaves nothing behind
    assert choose("synthetic", data_dir=tmp_path).config == "synthetic"


def test_insisting_on_ml100k_fails_with_what_to_run(tmp_path):
    with pytest.raises(PipelineError) as err:
        choose("ml-100k", data_dir=tmp_path, url=closed_port_url(), progress=False)
    msg = str(err.value)
    assert "fame data fetch ml-100k" in msg and "FAME_DATA_DIR" in msg and str(tmp_path) in msg


def test_missing_dataset_error_names_the_commands(tmp_path):
    cfg = load_config("ml-100k", {"paths.artifacts": str(tmp_path / "a")}, tmp_path)
    with pytest.raises(PipelineError) as err:
        run_pipeline(cfg, ["ingest"], progress=False)
    msg = str(err.value)
    for part in ("fame data fetch ml-100k", "--data-dir", "FAME_DATA_DIR", "ml-100k.inter"):
        assert part in msg


def test_stale_reasons():
    base = {
        "python": "/venv/bin/python",
        "source": "abc",
        "packages": {"torch": "2.13.0", "prefect": "3.9.1"},
        "env": {"FAME_DATA_DIR": "/data"},
        "cwd": "/work",
    }
    assert stale_reasons(base, base) == []
    moved = {**base, "env": {"FAME_DATA_DIR": "/other"}, "source": "def"}
    assert stale_reasons(base, moved) == ["the code changed", "FAME_DATA_DIR changed"]
    upgraded = {**base, "packages": {"torch": "2.13.0", "prefect": "3.10.0"}, "cwd": "/x"}
    assert stale_reasons(base, upgraded) == [
        "prefect 3.9.1 -> 3.10.0",
        "another working directory (/work)",
    ]
    # a record without a fingerprint (written by an older fame) is never reused
    assert stale_reasons({}, base)


def test_demo_rerun_hint_parses_back_to_the_same_options():
    import json
    import shlex

    import typer

    from flows.cli import app, demo_again

    sets = ["train.epochs=3", "model.name=sasrec", "data.item_text=''"]
    params = {"config": "configs/my beauty.toml", "overrides": {"train.epochs": 3}}
    hint = demo_again(params["config"], sets, 4321, "http://127.0.0.1:4321/api", params)
    demo, deployment = hint.split(", or: ")
    words = shlex.split(demo)
    assert words[:2] == ["fame", "demo"]
    command = typer.main.get_command(app).commands["demo"]
    parsed = command.make_context("demo", words[2:]).params  # parsed as the CLI would
    assert (parsed["config"], parsed["sets"], parsed["port"]) == (params["config"], sets, 4321)
    words = shlex.split(deployment)
    assert words[0] == "PREFECT_API_URL=http://127.0.0.1:4321/api"
    assert words[1:5] == ["prefect", "deployment", "run", "fame/full-pipeline"]
    assert json.loads(words[words.index("--params") + 1]) == params
