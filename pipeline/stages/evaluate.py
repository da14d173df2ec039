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
    schema = rankings_schema(min(cfg.evaluate.topk, data.num_items))
    with pq.ParquetWriter(part, schema) as writer, torch.inference_mode():
        for split in ("valid", "test"):
            chunks = rank_chunks(model, data, split, cfg.evaluate, device)
            bar = tqdm(chunks, desc=f"rank {split}", disable=not ctx.progress, leave=False)
            for c in bar:
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
    if alignment := head_alignment_rows(ctx, model, ingest.table("items")):
        tables["head_alignment"] = pa.Table.from_pylist(alignment)
    return tables, summary


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
