"""The stage registry drives the runner, the catalog, the CLI and the Prefect deployments; stages
do not import each other, and storage names no stage."""

import ast
import re
from pathlib import Path

import pyarrow as pa
from typer.testing import CliRunner

from app.cli import app
from pipeline.registry import ORDER, STAGES, VIEWS
from pipeline.stages.base import DATA, RESULT, UNLISTED
from storage import ArtifactStore, query, refresh_catalog

REPO = Path(__file__).resolve().parents[2]


def test_every_declared_table_is_a_view_or_unlisted():
    assert ORDER == ["ingest", "encode", "pretrain", "train", "evaluate"]
    declared = {
        (name, table, scope) for name, mod in STAGES.items() for table, scope in mod.TABLES.items()
    }
    assert all(scope in (DATA, RESULT, UNLISTED) for _, _, scope in declared)
    assert {(v.stage, v.table, DATA if v.current else RESULT) for v in VIEWS} == {
        d for d in declared if d[2] is not UNLISTED
    }
    assert ("train", "history", RESULT) in declared  # the training curves: a catalog view
    assert ("evaluate", "head_alignment", RESULT) in declared


def test_the_catalog_holds_exactly_the_registry_views(tmp_path):
    """One row-holding table per declared output: the catalog shows exactly the registry's views
    (current ones with ``_all``), plus the records."""
    store = ArtifactStore(tmp_path)
    for name, mod in STAGES.items():
        tables = {t: pa.table({"x": [1]}) for t in mod.TABLES}
        store.write(name, "a" * 16, tables=tables)
    store.record("runs", "r", {"run_id": "r", "status": "completed"})
    store.record("stages", "r__ingest", {"run_id": "r", "stage": "ingest", "key": "a" * 16})
    refresh_catalog(tmp_path, VIEWS)
    _, rows = query(tmp_path, "select view_name from duckdb_views() where not internal")
    want = {v.name for v in VIEWS} | {f"{v.name}_all" for v in VIEWS if v.current}
    assert {r[0] for r in rows} == want | {"runs", "stages"}


def test_cli_has_a_command_per_stage_and_names_every_view():
    runner = CliRunner()
    res = runner.invoke(app, ["--help"], terminal_width=200)
    assert all(f" {name} " in res.output for name in ORDER), res.output
    res = runner.invoke(app, ["sql", "--help"], terminal_width=400)
    text = " ".join(res.output.split())
    assert all(v.name in text for v in VIEWS), res.output


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_stages_import_neither_each_other_nor_the_runner():
    for name in ORDER:
        imported = _imports(REPO / "pipeline" / "stages" / f"{name}.py")
        others = {f"pipeline.stages.{o}" for o in ORDER if o != name}
        assert not imported & (others | {"pipeline.runner", "pipeline.registry"}), name


def test_storage_names_no_stage():
    """No string in storage (literal, docstring) holds a stage name as a word."""
    named = re.compile(r"\b(" + "|".join(ORDER) + r")\b")
    for path in sorted((REPO / "storage").glob("*.py")):
        strings = [
            n.value
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        assert not [s for s in strings if named.search(s)], path.name
