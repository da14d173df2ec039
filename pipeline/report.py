"""Human-readable summaries of catalog rows (the CLI and the Prefect flow print the same)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from pipeline.display import table
from pipeline.registry import VIEWS
from storage import query

METRIC_ORDER = ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"]


def metric_rows(root: Path, evaluate_key: str) -> list[dict]:
    cols, rows = query(
        root,
        f"""
        SELECT split, protocol, metric || coalesce('@' || k, '') AS name, value
        FROM metrics WHERE artifact_key = '{evaluate_key}'
        ORDER BY protocol, split DESC
    """,
        VIEWS,
    )
    return [dict(zip(cols, r, strict=True)) for r in rows]


def pivot(rows: list[dict]) -> list[tuple[str, str, dict[str, float]]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        out.setdefault((r["protocol"], r["split"]), {})[r["name"]] = r["value"]
    return [(p, s, m) for (p, s), m in out.items()]


def metrics_table(root: Path, evaluate_key: str) -> Table:
    rows = [
        (protocol, split, *(f"{m[n]:.4f}" if n in m else "-" for n in METRIC_ORDER))
        for protocol, split, m in pivot(metric_rows(root, evaluate_key))
    ]
    return table(
        ("protocol", "split", *METRIC_ORDER),
        rows,
        title="metrics (full ranking)",
        justify=dict.fromkeys(METRIC_ORDER, "right"),
    )


def metrics_markdown(root: Path, evaluate_key: str) -> str:
    lines = [
        "| protocol | split | " + " | ".join(METRIC_ORDER) + " |",
        "|---|---|" + "---:|" * len(METRIC_ORDER),
    ]
    for protocol, split, m in pivot(metric_rows(root, evaluate_key)):
        lines.append(
            f"| {protocol} | {split} | "
            + " | ".join(f"{m.get(n, float('nan')):.4f}" for n in METRIC_ORDER)
            + " |"
        )
    return "\n".join(lines)


def alignment_table(root: Path, evaluate_key: str) -> Table | None:
    """Head × facet kNN accuracy of the trained heads (``head_alignment``), the best facet of
    each head last; None when the evaluation holds none (SASRec, or no facets declared)."""
    from storage import CatalogError

    try:
        cols, rows = query(
            root,
            f"""
            SELECT head, facet, accuracy, majority, best FROM head_alignment
            WHERE artifact_key = '{evaluate_key}' ORDER BY head, facet
        """,
            VIEWS,
        )
    except CatalogError:
        return None
    if not rows:
        return None
    facets = list(dict.fromkeys(r[1] for r in rows))
    heads: dict[int, dict[str, tuple[float, float, bool]]] = {}
    for head, facet, acc, majority, best in rows:
        heads.setdefault(head, {})[facet] = (acc, majority, best)
    body = []
    for head, by_facet in heads.items():
        best = next(f for f, v in by_facet.items() if v[2])
        body.append(
            (
                f"head {head}",
                *(f"{by_facet[f][0]:.3f}" for f in facets),
                f"{best} (floor {by_facet[best][1]:.3f})",
            )
        )
    return table(
        ("", *facets, "aligned facet"),
        body,
        title="which facet each FAME head holds: kNN accuracy of facet labels from e_v W_f^h",
        justify=dict.fromkeys(facets, "right"),
    )
