"""Text from data reaches the terminal verbatim: never read as rich markup or emoji codes."""

import json

import pytest
from typer.testing import CliRunner

from app import display
from app.cli import app

runner = CliRunner()
NASTY = "[/i] Kolya :x: [bold]b[/bold] [link=http://x]y[/link]"


def _tiny_s3rec(root, title=NASTY, seq="1 1 2 3\n2 2 3 1\n3 3 1 2\n"):
    """A three-user S3-Rec dataset under ``root/tiny`` with an item-text table, and its config."""
    (root / "tiny").mkdir()
    (root / "tiny" / "X.txt").write_text(seq)
    (root / "tiny" / "items.tsv").write_text(f"item_id\ttitle\n1\t{title}\n2\tHeat\n3\tBig\n")
    config = root / "tiny.toml"
    config.write_text(
        '[data]\nname = "tiny"\nformat = "s3rec"\ndir = "tiny"\ninteractions = "X.txt"\n'
        'item_text = "items.tsv"\n'
    )
    return config


def test_say_error_and_table_print_literally(capsys):
    display.say(NASTY)
    display.error(NASTY)
    display.show(display.table([NASTY], [[NASTY]], title=NASTY))
    out, err = capsys.readouterr()
    assert out.count(NASTY) == 4 and err == f"error: {NASTY}\n"
    assert "❌" not in out + err


def test_ingest_error_with_markup_prints_verbatim(tmp_path):
    config = _tiny_s3rec(tmp_path, seq="1 1 2 3\n2 [/x]:x: 3\n")
    res = runner.invoke(
        app,
        ["ingest", "-c", str(config), "--data-dir", str(tmp_path), "-q"]
        + ["--set", f"paths.artifacts={tmp_path / 'a'}"],
    )
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "X.txt, line 2, field 'item_id': non-integer id '[/x]:x:'" in res.stderr
    assert "❌" not in res.output and "MarkupError" not in res.output


def test_config_error_with_markup_prints_verbatim(tmp_path):
    res = runner.invoke(app, ["config", "-c", "ml-100k", "--set", "data.name=[/x]:x:"])
    assert res.exit_code == 2
    assert "dataset name '[/x]:x:' must match" in res.stderr


@pytest.fixture
def nasty_catalog(tmp_path):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    config = _tiny_s3rec(tmp_path)
    root = tmp_path / "a"
    cfg = load_config(config, {"paths.artifacts": str(root)}, tmp_path)
    run_pipeline(cfg, ["ingest"], progress=False)
    return root


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_sql_prints_titles_verbatim(nasty_catalog, fmt):
    res = runner.invoke(
        app,
        ["sql", "select source_id, title from items order by item_id", "--format", fmt]
        + ["--artifacts", str(nasty_catalog)],
    )
    assert res.exit_code == 0, res.output
    if fmt == "json":
        assert json.loads(res.stdout)[0] == {"source_id": "1", "title": NASTY}
    elif fmt == "csv":
        assert res.stdout.splitlines()[1] == f"1,{NASTY}"
    else:
        assert NASTY in res.stdout and "Heat" in res.stdout
    assert "❌" not in res.stdout


def test_sql_column_names_are_literal_too(nasty_catalog):
    res = runner.invoke(app, ["sql", 'select 1 as "[/x] :x:"', "--artifacts", str(nasty_catalog)])
    assert res.exit_code == 0, res.output
    assert "[/x] :x:" in res.stdout
