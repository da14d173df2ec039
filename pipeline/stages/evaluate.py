"""evaluate: full-ranking HR/NDCG@k and MRR on valid and test, under both history protocols;
for FAME with facets, ``head_alignment`` (which true facet each trained head holds).

``exclude_history`` (S3-Rec/ICLRec lineage, the default) and ``keep_history`` (RecBole's
``repeatable``) give different numbers for the same model; both are cheap, so both are stored and
every row says which one it is.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.artifacts import facet_labels, split_data, trained_model
from pipeline.config import RunConfig
from pipeline.stages.base import RESULT, StageOutput

if TYPE_CHECKING:
    from pipeline.context import RunContext
    from storage import Artifact

NAME = "evaluate"
VERSION = "1"
SUMMARY = "Full-ranking evaluation of the trained model (valid and test)."
TABLES = {"metrics": RESULT, "rankings": RESULT, "head_alignment": RESULT}  # alignment: FAME


def upstream(cfg: RunConfig) -> list[str]:
    return ["ingest", "train"]


def key_config(cfg: RunConfig) -> dict:
    spec = cfg.evaluate  # batch_size changes speed only; the shape predates [evaluate].ks
    return {"evaluate": {"topk": spec.topk, "protocols": list(spec.protocols)}, "ks": list(spec.ks)}


def split_metric(name: str) -> tuple[str, int | None]:
    """'ndcg@10' -> ('ndcg', 10); 'mrr' -> ('mrr', None)."""
    m = re.fullmatch(r"([a-z_]+)@(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    # imported here: torch costs seconds at start-up that the registry's users never need
    from fame.device import resolve_device
    from fame.evaluate import evaluate as evaluate_model

    cfg = ctx.config
    ingest, train = inputs["ingest"], inputs["train"]
    device = resolve_device(cfg.train.device)
    model = trained_model(train, device)
    data = split_data(ingest)
    metric_rows, ranking_cols = (
        [],
        {k: [] for k in ("split", "protocol", "user_id", "target_item", "rank", "topk")},
    )
    summary = {}
    results = {s: evaluate_model(model, data, s, cfg.evaluate, device) for s in ("valid", "test")}
    for protocol in cfg.evaluate.protocols:
        for split in ("valid", "test"):
            res = results[split][protocol]
            summary[f"{protocol}/{split}"] = res.metrics
            for name, value in res.metrics.items():
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
            n = len(res.ranks)
            target = data.valid if split == "valid" else data.test
            ranking_cols["split"] += [split] * n
            ranking_cols["protocol"] += [protocol] * n
            ranking_cols["user_id"].append(data.user_ids)
            ranking_cols["target_item"].append(target)
            ranking_cols["rank"].append(np.asarray(res.ranks))
            ranking_cols["topk"].append(np.asarray(res.topk_items))
    topk = np.concatenate(ranking_cols["topk"]).astype(np.int64)
    rankings = pa.table(
        {
            "run_id": pa.array([ctx.run_id] * len(topk), pa.string()),
            "split": ranking_cols["split"],
            "protocol": ranking_cols["protocol"],
            "user_id": np.concatenate(ranking_cols["user_id"]),
            "target_item": np.concatenate(ranking_cols["target_item"]),
            "rank": np.concatenate(ranking_cols["rank"]).astype(np.int64),
            "topk": pa.FixedSizeListArray.from_arrays(pa.array(topk.reshape(-1)), topk.shape[1]),
        }
    )
    tables = {"metrics": pa.Table.from_pylist(metric_rows), "rankings": rankings}
    if alignment := head_alignment_rows(ctx, model, ingest.table("items")):
        tables["head_alignment"] = pa.Table.from_pylist(alignment)
    return StageOutput(tables=tables, meta={"metrics": summary})


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
