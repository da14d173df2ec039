"""evaluate: full-ranking HR/NDCG@k and MRR on valid and test, under both history protocols;
for FAME with facets, ``head_alignment`` (which true facet each trained head holds).

``exclude_history`` (S3-Rec/ICLRec lineage, the default) and ``keep_history`` (RecBole's
``repeatable``) give different numbers for the same model; both are cheap, so both are stored and
every row says which one it is.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipeline.artifacts import facet_labels, streamed_sequences, trained_model
from pipeline.config import RunConfig
from pipeline.stages.base import RESULT, StageOutput
from storage.atomic import work_name

if TYPE_CHECKING:
    from pipeline.context import RunContext
    from storage import Artifact

NAME = "evaluate"
VERSION = "1"
SUMMARY = "Full-ranking evaluation of the trained model (valid and test)."
# alignment: FAME only; group_metrics: the metrics again per group of users (GROUPING_TITLES)
TABLES = {
    "metrics": RESULT,
    "rankings": RESULT,
    "head_alignment": RESULT,
    "group_metrics": RESULT,
}
# group edges [lo, hi) of the target item's training count and of the user's input history length
POPULARITY_EDGES = (0, 1, 5, 20, 50)
HISTORY_EDGES = (1, 5, 10, 20, 50)
# the groupings of ``group_metrics``, in display order, and what each splits the users by
GROUPING_TITLES = {
    "target": "cold (held out of training) and warm targets",
    "target_popularity": "the target item's training interactions",
    "history_length": "the length of the user's input history",
}


def upstream(cfg: RunConfig) -> list[str]:
    return ["ingest", "train"]


def key_config(cfg: RunConfig) -> dict:
    spec = cfg.evaluate  # batch_size changes speed only; the shape predates [evaluate].ks
    section = {"topk": spec.topk, "protocols": list(spec.protocols)}
    if spec.cold_scores != "raw":  # in the key only when set: earlier keys stay valid
        section["cold_scores"] = spec.cold_scores
    return {"evaluate": section, "ks": list(spec.ks)}


def split_metric(name: str) -> tuple[str, int | None]:
    """'ndcg@10' -> ('ndcg', 10); 'mrr' -> ('mrr', None)."""
    m = re.fullmatch(r"([a-z_]+)@(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def rankings_schema(topk: int) -> pa.Schema:
    return pa.schema(
        [
            ("run_id", pa.string()),
            ("split", pa.string()),
            ("protocol", pa.string()),
            ("user_id", pa.int64()),
            ("target_item", pa.int64()),
            ("rank", pa.int64()),
            ("topk", pa.list_(pa.int64(), topk)),
        ]
    )


def scratch_dir(ctx: RunContext) -> Path:
    """A folder of this execution's own, named like the store's publish temporaries (writer pid
    inside): two processes evaluating one key never share files, and the store's sweep removes
    the folder of a killed one."""
    final = ctx.store.path(NAME, f"{ctx.keys[NAME]}.rankings")
    path = ctx.store.publish_dir / work_name(final)
    path.mkdir(parents=True)
    return path


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    # imported here: torch costs seconds at start-up that the registry's users never need
    from fame.device import resolve_device

    ingest, train = inputs["ingest"], inputs["train"]
    device = resolve_device(ctx.config.train.device)
    model = trained_model(train, device)
    data = streamed_sequences(ingest)
    # rankings stream to a scratch Parquet file one row group per chunk of users (memory: one
    # chunk's scores and rows, whatever the number of users), moved into the artifact at publish
    scratch = scratch_dir(ctx)
    part = scratch / "rankings.parquet"
    try:
        tables, summary = _rank_and_measure(ctx, model, device, data, train, ingest, part)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise

    def files(tmp: Path) -> None:
        os.replace(part, tmp / "rankings.parquet")

    return StageOutput(
        tables=tables,
        files=files,
        meta={"metrics": summary},
        after_publish=lambda: shutil.rmtree(scratch, ignore_errors=True),
    )


def _rank_and_measure(ctx, model, device, data, train, ingest, part: Path) -> tuple[dict, dict]:
    """Rankings streamed to ``part``; the metrics (and head_alignment) tables and summary."""
    import torch

    from fame.evaluate import rank_chunks
    from fame.metrics import metrics_from_ranks

    cfg = ctx.config
    ranks: dict[tuple[str, str], np.ndarray] = {}
    targets = {s: np.empty(data.num_users, np.int64) for s in ("valid", "test")}
    schema = rankings_schema(min(cfg.evaluate.topk, data.num_items))
    cold = data.held_out if cfg.evaluate.cold_scores == "matched" else None
    with pq.ParquetWriter(part, schema) as writer, torch.inference_mode():
        for split in ("valid", "test"):
            chunks = rank_chunks(model, data, split, cfg.evaluate, device, cold=cold)
            bar = tqdm(chunks, desc=f"rank {split}", disable=not ctx.progress, leave=False)
            for c in bar:
                targets[split][c.rows] = c.targets
                for protocol, r in c.ranks.items():
                    ranks.setdefault((split, protocol), np.empty(data.num_users, np.int64))
                    ranks[split, protocol][c.rows] = r
                    top = c.topk_items[protocol]
                    n = len(c.rows)
                    writer.write_table(
                        pa.table(
                            {
                                "run_id": pa.array([ctx.run_id] * n, pa.string()),
                                "split": pa.array([split] * n, pa.string()),
                                "protocol": pa.array([protocol] * n, pa.string()),
                                "user_id": c.user_ids,
                                "target_item": c.targets,
                                "rank": r.astype(np.int64),
                                "topk": pa.FixedSizeListArray.from_arrays(
                                    pa.array(top.reshape(-1)), top.shape[1]
                                ),
                            },
                            schema=schema,
                        )
                    )
    metric_rows, summary = [], {}
    for protocol in cfg.evaluate.protocols:
        for split in ("valid", "test"):
            metrics = metrics_from_ranks(ranks[split, protocol], cfg.evaluate.ks)
            summary[f"{protocol}/{split}"] = metrics
            for name, value in metrics.items():
                metric, k = split_metric(name)
                metric_rows.append(
                    {
                        "run_id": ctx.run_id,
                        "dataset": cfg.data.name,
                        "model": cfg.model.name,
                        "init": cfg.init.method,
                        "seed": cfg.train.seed,
                        "train_key": train.key,
                        "split": split,
                        "protocol": protocol,
                        "metric": metric,
                        "k": k,
                        "value": float(value),
                    }
                )
    tables = {"metrics": pa.Table.from_pylist(metric_rows)}
    common = {
        k: metric_rows[0][k] for k in ("run_id", "dataset", "model", "init", "seed", "train_key")
    }
    groups = group_metric_rows(ranks, targets, data, cfg.evaluate.ks)
    tables["group_metrics"] = pa.Table.from_pylist([{**common, **g} for g in groups])
    if alignment := head_alignment_rows(ctx, model, ingest.table("items")):
        tables["head_alignment"] = pa.Table.from_pylist(alignment)
    return tables, summary


def _buckets(values: np.ndarray, edges: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    """(bucket index per value, bucket names "lo-hi" / "lo+" / "0") over ``edges``."""
    names = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] - 1 if i + 1 < len(edges) else None
        names.append(f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}"))
    return np.searchsorted(np.asarray(edges), values, side="right") - 1, names


def group_metric_rows(
    ranks: dict[tuple[str, str], np.ndarray],
    targets: dict[str, np.ndarray],
    data,
    ks: tuple[int, ...],
) -> list[dict]:
    """The metrics per group of users, for every split and protocol: by the target item's
    training count (``target_popularity``), by the length of the input history
    (``history_length``) and, under the cold-start protocol, by whether the target was held out
    of training (``target``: cold / warm). Within a grouping the groups' user-weighted means
    give back the overall metric."""
    from fame.metrics import metrics_from_ranks

    counts = data.item_counts()
    lengths = {"valid": data.train_lengths(), "test": data.train_lengths() + 1}
    held = np.zeros(data.num_items + 1, dtype=bool)
    held[data.held_out] = True
    rows = []
    for (split, protocol), r in ranks.items():
        tgt = targets[split]
        groupings = {
            "target_popularity": _buckets(counts[tgt], POPULARITY_EDGES),
            "history_length": _buckets(lengths[split], HISTORY_EDGES),
        }
        if held.any():
            groupings["target"] = (held[tgt].astype(np.int64), ["warm", "cold"])
        for grouping, (idx, names) in groupings.items():
            for g, name in enumerate(names):
                sel = idx == g
                if not sel.any():
                    continue
                for metric_name, value in metrics_from_ranks(r[sel], ks).items():
                    metric, k = split_metric(metric_name)
                    rows.append(
                        {
                            "split": split,
                            "protocol": protocol,
                            "grouping": grouping,
                            "group": name,
                            "group_order": g,
                            "users": int(sel.sum()),
                            "metric": metric,
                            "k": k,
                            "value": float(value),
                        }
                    )
    return rows


def head_alignment_rows(ctx: RunContext, model, items: pa.Table) -> list[dict]:
    """FAME with declared facets: per head and facet, how well the trained head's item
    sub-embeddings predict the facet's labels (kNN), so a head can be named by its facet."""
    import torch

    from pretrain.train import head_alignment

    cfg = ctx.config
    if cfg.model.name != "fame" or not cfg.facets:
        return []
    labels = facet_labels(cfg, items)  # (F, n_items), rows in items order
    with torch.inference_mode():
        sub = model.item_sub_embeddings().float().cpu().numpy()  # (H, |V|+1, d')
    sub = sub[:, items["item_id"].to_numpy()]
    names = [f.name for f in cfg.facets]
    rows = head_alignment(sub, labels, names, k=cfg.pretrain.knn_k)
    return [
        {"run_id": ctx.run_id, "dataset": cfg.data.name, "init": cfg.init.method, **r} for r in rows
    ]
