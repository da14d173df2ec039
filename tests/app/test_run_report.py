"""``fame report`` on real runs (synthetic data, one FAME and one SASRec run in one store): the
page's tables and figure data are read back and checked against the run's own records and an
independent computation of the gate and router."""

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from app import api
from app.cli import make_app
from app.run_report import REPORTS, bin_edges, routing, write_report
from fame.data import history_windows
from pipeline.artifacts import split_data

SYNTH = {"data.synth.users": 300, "data.synth.items": 150, "data.synth.interactions": 4000}
SMALL = {"train.epochs": 3, "pretrain.steps": 40, "model.d": 32, **SYNTH}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "artifacts"
    base = {**SMALL, "paths.artifacts": str(root)}
    fame = api.run("synthetic", base, progress=False)
    sasrec = api.run("synthetic", {**base, "model.name": "sasrec"}, progress=False)
    return fame, sasrec


@pytest.fixture(scope="module")
def fame_page(runs, tmp_path_factory):
    path = write_report([runs[0]], tmp_path_factory.mktemp("out") / "fame.html")
    return path.read_text()


class Tables(HTMLParser):
    """Every <table class=...> of a page: rows of (text, data-value or None) cells."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, float | None]]]] = {}
        self._rows: list | None = None
        self._cell: list | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._rows = self.tables.setdefault(a.get("class", ""), [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows is not None:
            value = a.get("data-value")
            self._cell = ["", None if value is None else float(value)]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._rows = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data


def figure(page: str, div_id: str) -> dict:
    m = re.search(rf'<script type="application/json"[^>]*id="{re.escape(div_id)}-data"[^>]*>', page)
    assert m, f"no figure {div_id}"
    end = page.index("</script>", m.end())
    return json.loads(page[m.end() : end])


def traces(fig: dict, **meta) -> list[dict]:
    return [t for t in fig["data"] if all(t.get("meta", {}).get(k) == v for k, v in meta.items())]


def independent_routing(run: api.Run, batch: int = 97) -> tuple[np.ndarray, np.ndarray]:
    """Gate through encode + gate_weights and router through explain, on windows of full
    max_len width in other chunks than the report's."""
    offsets, items = split_data(run.artifact("ingest")).inputs("test")
    model, n = run.model, len(offsets) - 1
    gates, betas = [], []
    with torch.inference_mode():
        for s in range(0, n, batch):
            rows = np.arange(s, min(s + batch, n))
            seq = torch.from_numpy(history_windows(offsets, items, rows, model.cfg.max_len))
            gates.append(model.gate_weights(model.encode(seq, last_only=True))[:, -1].numpy())
            top = torch.ones((len(rows), 2), dtype=torch.long)
            betas.append(model.explain(seq, top)[2].numpy())
    return np.concatenate(gates), np.concatenate(betas)


def test_metrics_table_holds_the_runs_metrics(runs, fame_page):
    fame = runs[0]
    (header, *rows) = Tables(fame_page).tables["metrics"]
    names = [h for h, _ in header]
    want = fame.metrics()
    seen = 0
    for row in rows:
        protocol, split = row[0][0], row[1][0]
        for name, (text, value) in zip(names[2:], row[2:], strict=True):
            metric, _, k = name.partition("@")
            hit = want[
                (want.protocol == protocol) & (want.split == split) & (want.metric == metric)
            ]
            hit = hit[hit.k.isna()] if not k else hit[hit.k == int(k)]
            assert value == hit["value"].item() and text == f"{value:.4f}"
            seen += 1
    assert seen == len(want) == 28  # 7 metrics x 2 splits x 2 protocols
    assert {r[0][0] for r in rows} == {"exclude_history", "keep_history"}


def test_training_curves_are_the_history(runs, fame_page):
    fame = runs[0]
    hist = fame.history()
    fig = figure(fame_page, f"curves-{fame.run_id}")
    for series in ("loss", "valid_ndcg@10", "valid_hr@10"):
        (t,) = traces(fig, run=fame.run_id, series=series)
        assert t["x"] == hist["epoch"].tolist() and t["y"] == hist[series].tolist()
    (best,) = traces(fig, run=fame.run_id, series="best_epoch")
    epoch = fame.artifact("train").manifest["best_epoch"]
    assert best["x"] == [epoch]
    assert best["y"] == hist.loc[hist.epoch == epoch, "valid_ndcg@10"].tolist()


def test_gate_and_router_distributions_match_an_independent_computation(runs, fame_page):
    fame = runs[0]
    gate, beta = independent_routing(fame)
    rt = routing(fame)
    U, H, N = beta.shape
    assert U == 300 and H == 4 and fame.config.model.experts == N
    np.testing.assert_allclose(rt.gate, gate, atol=1e-6)
    np.testing.assert_allclose(rt.router, beta, atol=1e-6)
    np.testing.assert_allclose(gate.sum(1), 1, atol=1e-5)

    fig = figure(fame_page, f"gate-{fame.run_id}")
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert fame.head_names == [f.name for f in fame.config.facets]
    assert titles[:H] == fame.head_names
    for h, name in enumerate(fame.head_names):
        (bar,) = traces(fig, head=name)
        edges = np.array(bar["meta"]["edges"])
        np.testing.assert_allclose(edges, bin_edges(gate), atol=1e-6)
        assert bar["y"] == np.histogram(rt.gate[:, h], edges)[0].tolist()
        assert sum(bar["y"]) == U

    fig = figure(fame_page, f"router-{fame.run_id}")
    for h, name in enumerate(fame.head_names):
        for n in range(N):
            (line,) = traces(fig, head=name, expert=n)
            edges = np.array(line["meta"]["edges"])
            assert line["y"] == np.histogram(rt.router[:, h, n], edges)[0].tolist()

    (_, *rows) = Tables(fame_page).tables["routing"]
    assert [r[0][0] for r in rows] == fame.head_names
    for h, row in enumerate(rows):
        assert row[1][1] == pytest.approx(gate[:, h].mean(), abs=1e-6)


def test_facet_report_and_head_alignment_tables(runs, fame_page):
    fame = runs[0]
    tables = Tables(fame_page).tables
    (header, *rows) = tables["facet-report"]
    reps = [h for h, _ in header[1:-1]]
    stored = fame.artifact("pretrain").table("facet_report").to_pylist()
    want = {(r["facet"], r["representation"]): r["accuracy"] for r in stored}
    got = {(row[0][0], rep): v for row in rows for rep, (_, v) in zip(reps, row[1:], strict=False)}
    assert got == want
    (header, *rows) = tables["head-alignment"]
    assert [r[0][0] for r in rows] == fame.head_names
    columns = [h for h, _ in header]
    for r in fame.artifact("evaluate").table("head_alignment").to_pylist():
        assert rows[r["head"]][columns.index(r["facet"])][1] == r["accuracy"]
        if r["best"]:
            assert rows[r["head"]][-1][0].startswith(r["facet"])


def test_page_is_self_contained_small_and_deterministic(runs, fame_page, tmp_path):
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", fame_page)
    assert fame_page.count("plotly.js v") == 1  # the library once, inline
    assert len(fame_page.encode()) < 5.5 * 2**20
    again = write_report([runs[0]], tmp_path / "again.html").read_text()
    assert again == fame_page


def test_sasrec_report_says_gate_and_router_do_not_apply(runs, tmp_path):
    sasrec = runs[1]
    page = write_report([sasrec], tmp_path / "sasrec.html").read_text()
    assert "Gate and router do not apply to SASRec" in page
    assert f"gate-{sasrec.run_id}" not in page and f"router-{sasrec.run_id}" not in page
    fig = figure(page, f"curves-{sasrec.run_id}")
    (loss,) = traces(fig, series="loss")
    assert loss["y"] == sasrec.history()["loss"].tolist()
    assert "metrics" in Tables(page).tables


def test_comparison_puts_metrics_side_by_side_and_overlays_curves(runs, tmp_path):
    fame, sasrec = runs
    page = write_report([fame, sasrec], tmp_path / "both.html").read_text()
    tables = Tables(page).tables
    (_, *rows) = tables["comparison-metrics"]
    assert len(rows) == 28
    for row in rows:
        protocol, split, name = (c[0] for c in row[:3])
        metric, _, k = name.partition("@")
        for run, (_, value) in zip(runs, row[3:], strict=True):
            m = run.metrics()
            m = m[(m.protocol == protocol) & (m.split == split) & (m.metric == metric)]
            m = m[m.k.isna()] if not k else m[m.k == int(k)]
            assert value == m["value"].item()
    fig = figure(page, "curves-comparison")
    for run in runs:
        (loss,) = traces(fig, run=run.run_id, series="loss")
        assert loss["y"] == run.history()["loss"].tolist()
    diff = {r[0][0]: [c[0] for c in r[1:]] for r in tables["config-diff"][1:]}
    assert diff["model.name"] == ["fame", "sasrec"]
    for run in runs:  # each run keeps its own section
        assert f'id="run-{run.run_id}"' in page and f"curves-{run.run_id}" in page


def test_cli_writes_the_report_and_says_where(runs, tmp_path):
    fame, sasrec = runs
    root = fame.store.root
    app = make_app()
    out = CliRunner().invoke(app, ["report", "--run", fame.run_id, "--artifacts", str(root)])
    assert out.exit_code == 0, out.output
    default = root / REPORTS / f"{fame.run_id}.html"
    assert default.is_file() and str(default) in out.output.replace("\n", "")
    target = tmp_path / "cmp.html"
    args = ["report", "--run", fame.run_id, "--run", "latest", "--artifacts", str(root)]
    out = CliRunner().invoke(app, [*args, "--out", str(target)])
    assert out.exit_code == 0, out.output
    assert sasrec.run_id in target.read_text() and 'id="comparison"' in target.read_text()
    out = CliRunner().invoke(app, ["report", "--run", "nope", "--artifacts", str(root)])
    assert out.exit_code == 2 and "no run 'nope'" in out.output


def test_bin_edges_widen_a_constant():
    edges = bin_edges(np.full(5, 0.25))
    assert len(edges) == 41 and edges[0] < 0.25 < edges[-1]
    assert np.histogram(np.full(5, 0.25), edges)[0].sum() == 5


def test_report_of_a_stage_subset_reads_the_planned_keys(runs):
    """A run of `evaluate` alone recorded no train stage: its report still finds the model."""
    from app.run_report import write_run_report
    from pipeline.runner import run_pipeline

    ctx = run_pipeline(runs[0].config, ["evaluate"], progress=False)
    assert set(ctx.results) == {"evaluate"}
    page = write_run_report(ctx).read_text()
    assert f"curves-{ctx.run_id}" in page and f"gate-{ctx.run_id}" in page
