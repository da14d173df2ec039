"""Human-readable summaries of catalog rows (the CLI and the Prefect flow print the same)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from app.display import table
from pipeline.registry import VIEWS
from pipeline.stages.evaluate import GROUPING_TITLES
from storage import query

FAMILY_ORDER = ("hr", "ndcg", "mrr")  # columns: HR@k then NDCG@k (k ascending), then MRR


def metric_rows(root: Path, evaluate_key: str) -> list[dict]:
    """The evaluation's metric rows per protocol and split, metrics in ``FAMILY_ORDER`` over
    the ks that ``[evaluate]`` asked for (read from the rows: the report needs no config)."""
    families = ", ".join(f"'{f}'" for f in FAMILY_ORDER)
    cols, rows = query(
        root,
        f"""
        SELECT split, protocol, metric || coalesce('@' || k, '') AS name, value
        FROM metrics WHERE artifact_key = '{evaluate_key}'
        ORDER BY protocol, split DESC, list_position([{families}], metric), k
    """,
        VIEWS,
    )
    return [dict(zip(cols, r, strict=True)) for r in rows]


def metric_names(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["name"] for r in rows))


def pivot(rows: list[dict]) -> list[tuple[str, str, dict[str, float]]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        out.setdefault((r["protocol"], r["split"]), {})[r["name"]] = r["value"]
    return [(p, s, m) for (p, s), m in out.items()]


def metrics_table(root: Path, evaluate_key: str) -> Table:
    found = metric_rows(root, evaluate_key)
    names = metric_names(found)
    rows = [
        (protocol, split, *(f"{m[n]:.4f}" if n in m else "-" for n in names))
        for protocol, split, m in pivot(found)
    ]
    return table(
        ("protocol", "split", *names),
        rows,
        title="metrics (full ranking)",
        justify=dict.fromkeys(names, "right"),
    )


def metrics_markdown(root: Path, evaluate_key: str) -> str:
    found = metric_rows(root, evaluate_key)
    names = metric_names(found)
    lines = [
        "| protocol | split | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for protocol, split, m in pivot(found):
        lines.append(
            f"| {protocol} | {split} | "
            + " | ".join(f"{m.get(n, float('nan')):.4f}" for n in names)
            + " |"
        )
    return "\n".join(lines)


def groups_markdown(root: Path, evaluate_key: str, protocol: str = "exclude_history") -> str:
    """Test NDCG@10 and users per group of each grouping (``group_metrics``), a markdown table;
    empty for an evaluation stored before groups existed."""
    from storage import CatalogError

    try:
        _, rows = query(
            root,
            f"""
            SELECT grouping, "group", users, value FROM group_metrics
            WHERE artifact_key = '{evaluate_key}' AND split = 'test' AND protocol = '{protocol}'
              AND metric = 'ndcg' AND k = 10
            ORDER BY list_position({list(GROUPING_TITLES)}, grouping), group_order
        """,
            VIEWS,
        )
    except CatalogError:
        return ""
    if not rows:
        return ""
    lines = ["| grouping | group | users | test NDCG@10 |", "|---|---|---:|---:|"]
    lines += [f"| {g} | {name} | {users:,} | {value:.4f} |" for g, name, users, value in rows]
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
