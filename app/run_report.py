"""``fame report``: one self-contained HTML page for a run, or a comparison of several.

What a finished run holds, seen at a glance without a notebook: training curves (best epoch
marked), the metrics of both protocols, FAME's gate and router weights over the test users, the
facet pre-training report and the head alignment. Plots are plotly figures; plotly.js is inlined
once for the whole page (no CDN), so the file opens offline and can be mailed or attached to a
Prefect artifact. Each figure's JSON sits in a ``<script type="application/json">`` beside its
``<div>``, so the page is deterministic and its data can be read back (the tests do).

    from app import api
    from app.run_report import write_report
    write_report([api.open_run("latest")], "report.html")
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from app import display
from app.options import ConfigOpt, fail, open_run
from app.report import FAMILY_ORDER
from pipeline.errors import PipelineError
from pipeline.stages.evaluate import GROUPING_TITLES

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    import pyarrow as pa

    from app.api import Run
    from pipeline.context import RunContext

REPORTS = "_reports"  # under the artifact root: '_' folders are neither stages nor swept
BINS = 40  # histogram bins of the gate and router distributions
SPLITS = ("valid", "test")
CURVES = (("valid_ndcg@10", "valid NDCG@10", "solid"), ("valid_hr@10", "valid HR@10", "dash"))


# -- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Routing:
    """FAME's gate g (U, H) and router weights β (U, H, N) at the last position of each test
    user's input (train items + the valid item), users in ``sequences`` order."""

    heads: list[str]
    gate: np.ndarray
    router: np.ndarray


def routing(run: Run, batch_size: int = 1024) -> Routing | None:
    """Gate and router weights over every test user, a chunk of users per forward pass through
    ``SeqRecModel.explain``; None for SASRec (no heads, gate or experts)."""
    import torch

    from fame.data import history_windows
    from pipeline.artifacts import split_data

    if run.config.model.name != "fame":
        return None
    offsets, items = split_data(run.artifact("ingest")).inputs("test")
    model, max_len = run.model, run.config.model.max_len
    lengths = np.minimum(np.diff(offsets), max_len)
    gates, betas = [], []
    with torch.inference_mode():
        for s in range(0, len(lengths), batch_size):
            rows = np.arange(s, min(s + batch_size, len(lengths)))
            width = max(int(lengths[rows].max()), 1)
            seq = torch.from_numpy(history_windows(offsets, items, rows, width))
            no_items = torch.zeros((len(rows), 1), dtype=torch.long)  # only gate and router needed
            _, gate, beta = model.explain(seq, no_items)
            gates.append(gate.float().numpy())
            betas.append(beta.float().numpy())
    return Routing(run.head_names, np.concatenate(gates), np.concatenate(betas))


def bin_edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """``bins`` equal bins over the values' range (widened when it is a point: the gate off)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 1e-3, hi + 1e-3
    return np.linspace(lo, hi, bins + 1)


def _optional_table(run: Run, stage: str, name: str) -> pa.Table | None:
    try:
        return run.artifact(stage).table(name)
    except (PipelineError, FileNotFoundError, OSError):
        return None


def metric_frame(run: Run) -> pd.DataFrame | None:
    """The run's metrics with a ``name`` column (``ndcg@10``, ``mrr``), protocols in the
    config's order (primary first), valid before test, metrics in ``FAMILY_ORDER`` by k."""
    try:
        frame = run.metrics()
    except (PipelineError, FileNotFoundError):
        return None
    frame = frame.copy()
    frame["name"] = [
        m if k is None or (isinstance(k, float) and math.isnan(k)) else f"{m}@{int(k)}"
        for m, k in zip(frame["metric"], frame["k"], strict=True)
    ]
    protocols = list(run.config.evaluate.protocols)
    frame["_p"] = [protocols.index(p) if p in protocols else len(protocols) for p in frame.protocol]
    frame["_s"] = [SPLITS.index(s) if s in SPLITS else 2 for s in frame.split]
    frame["_m"] = [FAMILY_ORDER.index(m) if m in FAMILY_ORDER else 9 for m in frame.metric]
    frame = frame.sort_values(["_p", "protocol", "_s", "_m", "k"], kind="stable")
    return frame.drop(columns=["_p", "_s", "_m"]).reset_index(drop=True)


def best_epoch(run: Run) -> int | None:
    return run.artifact("train").manifest.get("best_epoch")


def label(run: Run) -> str:
    c = run.config
    return f"{c.data.name} {c.model.name} init={c.init.method} ({run.run_id})"


# -- figures -----------------------------------------------------------------------------------
def curves_figure(runs: Sequence[Run]) -> go.Figure:
    """Loss and valid NDCG@10 / HR@10 per epoch of each run (overlaid when several), the best
    epoch (early stopping's choice) starred; epochs without validation are left out."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("training loss", "valid NDCG@10 (solid) and HR@10 (dashed)"),
        horizontal_spacing=0.08,
    )
    palette = qualitative.Plotly
    for i, run in enumerate(runs):
        hist = run.history()
        color = palette[i % len(palette)]
        name = run.run_id if len(runs) > 1 else ""
        fig.add_trace(
            go.Scatter(
                x=hist["epoch"].tolist(),
                y=hist["loss"].astype(float).tolist(),
                mode="lines+markers",
                name=f"{name} loss".strip(),
                line={"color": color},
                meta={"run": run.run_id, "series": "loss"},
            ),
            row=1,
            col=1,
        )
        for col, title, dash in CURVES:
            if col not in hist:
                continue
            part = hist[["epoch", col]].dropna()
            fig.add_trace(
                go.Scatter(
                    x=part["epoch"].tolist(),
                    y=part[col].astype(float).tolist(),
                    mode="lines+markers",
                    name=f"{name} {title}".strip(),
                    line={"color": color, "dash": dash},
                    meta={"run": run.run_id, "series": col},
                ),
                row=1,
                col=2,
            )
        best = best_epoch(run)
        at = hist[hist["epoch"] == best]
        if best and len(at) and "valid_ndcg@10" in hist:
            fig.add_trace(
                go.Scatter(
                    x=[best],
                    y=[float(at["valid_ndcg@10"].iloc[0])],
                    mode="markers+text" if len(runs) == 1 else "markers",
                    marker={"symbol": "star", "size": 16, "color": color},
                    text=[f"best epoch {best}"],
                    textposition="top center",
                    name=f"{name} best epoch {best}".strip(),
                    meta={"run": run.run_id, "series": "best_epoch"},
                ),
                row=1,
                col=2,
            )
            if len(runs) == 1:
                fig.add_vline(x=best, line={"dash": "dot", "color": "grey"}, row=1, col="all")
    fig.update_xaxes(title_text="epoch", dtick=1 if _max_epoch(runs) <= 30 else None)
    return _layout(fig, height=420)


def _max_epoch(runs: Sequence[Run]) -> int:
    return max((int(r.history()["epoch"].max()) for r in runs), default=0)


def gate_figure(rt: Routing) -> go.Figure:
    """One histogram per head of g_h over the test users, bins shared by all heads; the dotted
    line is the uniform gate 1/H."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    H = rt.gate.shape[1]
    edges = bin_edges(rt.gate)
    centers, width = ((edges[:-1] + edges[1:]) / 2).tolist(), float(edges[1] - edges[0])
    fig = make_subplots(rows=1, cols=H, subplot_titles=rt.heads, shared_yaxes=True)
    for h, name in enumerate(rt.heads):
        counts, _ = np.histogram(rt.gate[:, h], edges)
        fig.add_trace(
            go.Bar(
                x=centers,
                y=counts.tolist(),
                width=width,
                name=name,
                showlegend=False,
                meta={"head": name, "edges": edges.tolist()},
            ),
            row=1,
            col=h + 1,
        )
        fig.add_vline(x=1 / H, line={"dash": "dot", "color": "grey"}, row=1, col=h + 1)
    fig.update_xaxes(title_text="gate g_h")
    fig.update_yaxes(title_text="test users", row=1, col=1)
    fig.update_layout(bargap=0)
    return _layout(fig, height=320)


def router_figure(rt: Routing) -> go.Figure:
    """Per head, the distribution of each expert's router weight β^h_n over the test users
    (bins shared by all heads and experts)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    H, N = rt.router.shape[1:]
    edges = bin_edges(rt.router)
    centers = ((edges[:-1] + edges[1:]) / 2).tolist()
    palette = qualitative.D3
    fig = make_subplots(rows=1, cols=H, subplot_titles=rt.heads, shared_yaxes=True)
    for h, name in enumerate(rt.heads):
        for n in range(N):
            counts, _ = np.histogram(rt.router[:, h, n], edges)
            fig.add_trace(
                go.Scatter(
                    x=centers,
                    y=counts.tolist(),
                    mode="lines",
                    line={"shape": "hvh", "color": palette[n % len(palette)]},
                    name=f"expert {n}",
                    legendgroup=f"expert {n}",
                    showlegend=h == 0,
                    meta={"head": name, "expert": n, "edges": edges.tolist()},
                ),
                row=1,
                col=h + 1,
            )
    fig.update_xaxes(title_text="router weight β")
    fig.update_yaxes(title_text="test users", row=1, col=1)
    return _layout(fig, height=340)


def _layout(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


# -- HTML --------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2933;
  background:#f5f7fa}
main{max-width:1280px;margin:0 auto;padding:16px 28px 48px}
h1{font-size:1.6em;margin:8px 0 4px} h2{margin-top:36px;border-bottom:2px solid #d9e2ec;
  padding-bottom:4px} h3{margin:24px 0 6px}
section.run,section.comparison{background:#fff;border-radius:8px;padding:4px 24px 20px;
  margin-top:24px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:left;white-space:nowrap}
th{white-space:normal;max-width:240px;vertical-align:bottom}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:700;color:#0b6e4f} thead th{background:#f0f4f8}
p.note{color:#52606d;font-size:.9em;max-width:1000px;margin:4px 0}
div.na{background:#fffbea;border-left:4px solid #f0b429;padding:10px 14px;margin:10px 0}
table.config-diff td{white-space:normal;overflow-wrap:anywhere;max-width:520px}
nav a{margin-right:14px} .fig{width:100%}
"""
RENDER = """
for (const s of document.querySelectorAll("script.fig-data")) {
  const f = JSON.parse(s.textContent);
  Plotly.newPlot(s.dataset.target, f.data, f.layout, {responsive: true, displaylogo: false});
}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 4, best: bool = False) -> str:
    cls = "num best" if best else "num"
    return f'<td class="{cls}" data-value="{float(value)!r}">{value:.{digits}f}</td>'


def _table(header: Sequence[str], rows: Sequence[str], cls: str, num_from: int = 1) -> str:
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i >= num_from else f"<th>{_e(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(f"<tr>{r}</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def groups_figure(rows: list[dict], protocol: str) -> go.Figure:
    """Test NDCG@10 per group of users, one panel per grouping (``group_metrics``), bars
    labelled with their users: where the model earns its metric, head or tail."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keep = [
        r
        for r in rows
        if r["split"] == "test" and r["protocol"] == protocol and r["metric"] == "ndcg"
        and r["k"] == 10
    ]  # fmt: skip
    groupings = [g for g in GROUPING_TITLES if any(r["grouping"] == g for r in keep)]
    titles = [GROUPING_TITLES[g] for g in groupings]
    fig = make_subplots(rows=1, cols=len(groupings), subplot_titles=titles, shared_yaxes=True)
    for c, grouping in enumerate(groupings, 1):
        part = sorted(
            (r for r in keep if r["grouping"] == grouping), key=lambda r: r["group_order"]
        )
        fig.add_trace(
            go.Bar(
                x=[r["group"] for r in part],
                y=[r["value"] for r in part],
                text=[f"{r['users']:,} users" for r in part],
                name=grouping,
                showlegend=False,
                meta={"grouping": grouping},
            ),
            row=1,
            col=c,
        )
    fig.update_yaxes(title_text=f"test NDCG@10 ({protocol})", row=1, col=1)
    return _layout(fig, height=340)


def groups_html(run: Run) -> str | None:
    table = _optional_table(run, "evaluate", "group_metrics")
    if table is None or not table.num_rows:
        return None
    fig = groups_figure(table.to_pylist(), run.config.evaluate.primary)
    return figure_html(fig, f"groups-{run.run_id}") + (
        '<p class="note">The same users as the metrics table, split by the test item\'s '
        "popularity in training, by how long their input history is and (cold-start protocol, "
        "<code>data.cold_items</code>) by whether the test item was held out of training. "
        'All rows: <code>fame sql "select * from group_metrics"</code>.</p>'
    )


def figure_html(fig: go.Figure, div_id: str) -> str:
    """The figure's div and its JSON (``</`` escaped, so no string can close the script)."""
    payload = fig.to_json().replace("</", "<\\/")
    return (
        f'<div class="fig" id="{div_id}"></div>'
        f'<script type="application/json" class="fig-data" id="{div_id}-data" '
        f'data-target="{div_id}">{payload}</script>'
    )


def metrics_html(run: Run) -> str:
    frame = metric_frame(run)
    if frame is None:
        return '<div class="na">No evaluate artifact: this run has no metrics.</div>'
    names = list(dict.fromkeys(frame["name"]))
    rows = []
    for (protocol, split), part in frame.groupby(["protocol", "split"], sort=False):
        values = dict(zip(part["name"], part["value"], strict=True))
        cells = "".join(_num(values[n]) if n in values else "<td>-</td>" for n in names)
        rows.append(f"<td>{_e(protocol)}</td><td>{_e(split)}</td>{cells}")
    primary = run.config.evaluate.primary
    return _table(["protocol", "split", *names], rows, "metrics", num_from=2) + (
        f'<p class="note">Full ranking over all items. <b>{_e(primary)}</b> is the primary '
        "protocol (early stopping, recommendations): a user's seen items are removed from the "
        "candidates; keep_history ranks them too.</p>"
    )


def _pivot(rows: list[dict], by: str, across: str) -> tuple[list, dict[Any, dict[Any, dict]]]:
    """(the ``across`` values in first-seen order, {``by`` value: {``across`` value: row}})."""
    out: dict[Any, dict[Any, dict]] = {}
    for r in rows:
        out.setdefault(r[by], {})[r[across]] = r
    return list(dict.fromkeys(r[across] for r in rows)), out


def _accuracy_cells(row: dict, cols: list, bold: set) -> str:
    """One cell per column: the row's kNN accuracy there (bold for the columns in ``bold``)."""
    return "".join(
        _num(row[c]["accuracy"], 3, c in bold) if c in row else "<td>-</td>" for c in cols
    )


def facet_html(run: Run) -> str | None:
    """facet × representation kNN accuracy of the pre-trained item table (pretrain stage)."""
    tbl = _optional_table(run, "pretrain", "facet_report")
    if tbl is None or tbl.num_rows == 0:
        return None
    reps, by_facet = _pivot(tbl.to_pylist(), "facet", "representation")
    body = []
    for facet, row in by_facet.items():
        top = max(v["accuracy"] for v in row.values())
        cells = _accuracy_cells(row, reps, {p for p, v in row.items() if v["accuracy"] == top})
        n = next(iter(row.values())).get("n_items", "")
        body.append(f"<td>{_e(facet)}</td>{cells}<td class='num'>{_e(n)}</td>")
    return _table(["facet", *reps, "items"], body, "facet-report") + (
        '<p class="note">kNN accuracy of each facet\'s labels from each representation of the '
        "pre-trained item table: <i>slice:f</i> is facet f's slice, <i>text</i> the text "
        "embedding, <i>random</i> a random table (chance). A slice should predict its own facet "
        "best.</p>"
    )


def alignment_html(run: Run) -> str | None:
    """head × facet kNN accuracy from the trained heads' item sub-embeddings (evaluate)."""
    tbl = _optional_table(run, "evaluate", "head_alignment")
    if tbl is None or tbl.num_rows == 0:
        return None
    facets, heads = _pivot(tbl.to_pylist(), "head", "facet")
    names = run.head_names
    body = []
    for h, row in sorted(heads.items()):
        best = next((f for f, v in row.items() if v["best"]), None)
        cells = _accuracy_cells(row, facets, {best})
        floor = f"{best} (floor {row[best]['majority']:.3f})" if best else "-"
        name = names[h] if h < len(names) else f"head {h}"
        body.append(f"<td>{_e(name)}</td>{cells}<td>{_e(floor)}</td>")
    return _table(["head", *facets, "aligned facet"], body, "head-alignment") + (
        '<p class="note">Which facet each trained FAME head holds: kNN accuracy of the facet '
        "labels from the head's item sub-embeddings e_v W_f^h; the floor is the majority-label "
        "accuracy.</p>"
    )


def routing_html(run: Run, rt: Routing | None) -> str:
    if rt is None:
        return (
            '<div class="na routing-na"><b>Gate and router do not apply to SASRec.</b> Its score '
            "is one dot product of the last block's output with the item table: there are no "
            "facet heads, no gate over heads and no mixture of experts. Report a FAME run to "
            "see them.</div>"
        )
    U, H, N = rt.router.shape
    top_head = np.bincount(rt.gate.argmax(1), minlength=H) / U  # share of users; gate off: ties
    top_expert = rt.router.argmax(2)  # (U, H)
    rows = []
    for h, name in enumerate(rt.heads):
        share = np.bincount(top_expert[:, h], minlength=N) / U
        means = " / ".join(f"{m:.3f}" for m in rt.router[:, h].mean(0))
        rows.append(
            f"<td>{_e(name)}</td>{_num(rt.gate[:, h].mean(), 4)}{_num(rt.gate[:, h].std(), 4)}"
            f"{_num(top_head[h], 3) if run.config.model.gate else '<td>-</td>'}"
            f"<td class='num'>{means}</td>"
            f"{_num(rt.router[:, h].max(1).mean(), 3)}"
            f"<td class='num'>expert {int(share.argmax())} ({share.max():.0%})</td>"
        )
    gate_note = "" if run.config.model.gate else " The gate is off (g = 1/H for every user)."
    summary = _table(
        [
            "head",
            "mean gate",
            "std",
            "largest gate for",
            "mean β per expert",
            "top expert's mean β",
            "most often top",
        ],
        rows,
        "routing",
    )
    return (
        f'<p class="note">At the last position of each of the {U} test users\' input sequences '
        f"(train items + the valid item), {H} heads × {N} experts.{gate_note}</p>"
        + summary
        + "<h4>gate weight per head</h4>"
        + figure_html(gate_figure(rt), f"gate-{run.run_id}")
        + "<h4>router weight of each expert, per head</h4>"
        + figure_html(router_figure(rt), f"router-{run.run_id}")
    )


def _summary_row(run: Run) -> str:
    c, r = run.config, run.record
    train = run.artifact("train").manifest
    started, ended = r.get("started_at"), r.get("ended_at")
    when = (
        datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if isinstance(started, int | float)
        else ""
    )
    took = f"{ended - started:.0f} s" if isinstance(ended, int | float) and when else ""
    cells = [
        run.run_id,
        c.data.name,
        c.model.name,
        c.init.method,
        c.train.seed,
        f"d={c.model.d} H={c.model.heads}"
        + (f" N={c.model.experts}" if c.model.name == "fame" else ""),
        f"{train.get('best_epoch', '-')} / {train.get('epochs_run', '-')}",
        f"{train.get('num_params', 0):,}",
        r.get("status", ""),
        when,
        took,
    ]
    return "".join(f"<td>{_e(v)}</td>" for v in cells)


SUMMARY_HEADER = (
    "run",
    "dataset",
    "model",
    "init",
    "seed",
    "size",
    "best / epochs",
    "parameters",
    "status",
    "started",
    "took",
)


def run_section(run: Run) -> str:
    parts = [
        f'<section class="run" id="run-{_e(run.run_id)}"><h2>{_e(label(run))}</h2>',
        _table(SUMMARY_HEADER, [_summary_row(run)], "summary", num_from=99),
        f'<p class="note">config {_e(run.record.get("config_name") or "-")}, code '
        f"{_e(run.record.get('code_version', '-'))}, artifacts {_e(run.store.root)}</p>",
        "<h3>Training curves</h3>",
        figure_html(curves_figure([run]), f"curves-{run.run_id}"),
        "<h3>Metrics</h3>",
        metrics_html(run),
        "<h3>Gate and router over the test users</h3>",
        routing_html(run, routing(run)),
    ]
    if (groups := groups_html(run)) is not None:
        parts += ["<h3>Metrics by group of users</h3>", groups]
    if (facets := facet_html(run)) is not None:
        parts += ["<h3>Facet pre-training report</h3>", facets]
    if (aligned := alignment_html(run)) is not None:
        parts += ["<h3>Head alignment</h3>", aligned]
    return "".join(parts) + "</section>"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def comparison_section(runs: Sequence[Run]) -> str:
    """Metrics side by side (the best of each row in bold), overlaid curves, and the config
    fields in which the runs differ."""
    frames = {r.run_id: metric_frame(r) for r in runs}
    keys: list[tuple[str, str, str]] = []
    values: dict[str, dict[tuple[str, str, str], float]] = {}
    for run_id, frame in frames.items():
        values[run_id] = {}
        for row in [] if frame is None else frame.itertuples(index=False):
            key = (row.protocol, row.split, row.name)
            keys.append(key)
            values[run_id][key] = row.value
    rows = []
    for key in dict.fromkeys(keys):
        got = [values[r.run_id].get(key) for r in runs]
        top = max((v for v in got if v is not None), default=None)
        cells = "".join("<td>-</td>" if v is None else _num(v, 4, v == top) for v in got)
        rows.append("".join(f"<td>{_e(k)}</td>" for k in key) + cells)
    header = ["protocol", "split", "metric", *(label(r) for r in runs)]
    configs = [_flat(r.config.model_dump(mode="json")) for r in runs]
    fields = sorted({k for c in configs for k in c})
    differ = [k for k in fields if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    diff_rows = [
        f"<td>{_e(k)}</td>" + "".join(f"<td>{_e(c.get(k, '-'))}</td>" for c in configs)
        for k in differ
    ]
    return (
        '<section class="comparison" id="comparison"><h2>Comparison</h2>'
        + _table(SUMMARY_HEADER, [_summary_row(r) for r in runs], "summary", num_from=99)
        + "<h3>Training curves</h3>"
        + figure_html(curves_figure(runs), "curves-comparison")
        + "<h3>Metrics side by side</h3>"
        + _table(header, rows, "comparison-metrics", num_from=3)
        + "<h3>Config differences</h3>"
        + (
            _table(["field", *(r.run_id for r in runs)], diff_rows, "config-diff", num_from=99)
            if differ
            else '<p class="note">The runs have the same config.</p>'
        )
        + "</section>"
    )


def render(runs: Sequence[Run]) -> str:
    """The whole page as a string: plotly.js once in the head, then the sections."""
    from plotly.offline import get_plotlyjs

    runs = list({r.run_id: r for r in runs}.values())
    if not runs:
        raise PipelineError("a report needs at least one run")
    title = f"fame report: {label(runs[0])}" if len(runs) == 1 else f"fame report: {len(runs)} runs"
    nav = ""
    if len(runs) > 1:
        links = "".join(f'<a href="#run-{_e(r.run_id)}">{_e(r.run_id)}</a>' for r in runs)
        nav = f'<nav><a href="#comparison">comparison</a>{links}</nav>'
    body = (comparison_section(runs) if len(runs) > 1 else "") + "".join(map(run_section, runs))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><main><h1>{_e(title)}</h1>{nav}{body}</main>"
        f"<script>{RENDER}</script></body></html>\n"
    )


def report_path(runs: Sequence[Run]) -> Path:
    """``<artifacts>/_reports/<run id>.html``, or ``compare-<ids or digest>.html``."""
    ids = list(dict.fromkeys(r.run_id for r in runs))
    if len(ids) == 1:
        name = ids[0]
    elif len(ids) <= 3:
        name = "compare-" + "_".join(ids)
    else:
        name = "compare-" + hashlib.sha1(",".join(ids).encode()).hexdigest()[:12]
    return runs[0].store.root / REPORTS / f"{name}.html"


def write_report(runs: Sequence[Run], path: str | Path | None = None) -> Path:
    """Write the report of ``runs`` (a comparison when several) to ``path`` (default
    ``report_path``), through a temporary name and a rename; returns the path."""
    path = Path(path) if path is not None else report_path(runs)
    page = render(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def write_run_report(ctx: RunContext) -> Path:
    """The report of a pipeline run just finished, at ``report_path``: the stages a subset did
    not run are read at the run's planned keys (the store holds them: its upstream used them)."""
    from app.api import Run

    record = next(r for r in ctx.store.records("runs") if r["run_id"] == ctx.run_id)
    keys = {**ctx.keys, **{name: res.key for name, res in ctx.results.items()}}
    return write_report([Run(ctx.store, record, keys)])


# -- command line ------------------------------------------------------------------------------
def report_command(
    run_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--run", help="a run id or 'latest' (repeatable: a comparison); default: --config's"
        ),
    ] = None,
    artifacts: Annotated[
        Path | None, typer.Option("--artifacts", help="artifact root (default: the config's)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML file (default <artifacts>/_reports/<run>.html)"),
    ] = None,
    config: ConfigOpt = "ml-100k",
) -> None:
    """Write one self-contained HTML report of a run (or a comparison of several): training
    curves, metrics, FAME's gate and router over the test users, facet report, head alignment."""
    runs = [open_run(r, config, None, None, artifacts) for r in (run_ids or [None])]
    try:
        path = write_report(runs, out)
    except PipelineError as exc:
        fail(exc)
        return
    size = path.stat().st_size / 2**20
    display.say(f"wrote {path} ({size:.1f} MiB; {', '.join(r.run_id for r in runs)})")
