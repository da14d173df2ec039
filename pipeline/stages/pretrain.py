"""pretrain: text vectors -> the initial item embeddings that train starts from.

``init = facet_pretrain`` (and any config that runs this stage without ``init = text``): facet
labels shape one sub-space per head (FAME_SPEC §6); writes ``item_embeddings`` (the full initial
vector and one column per facet slice) and ``facet_report`` (kNN label accuracy per facet for
each slice, the raw text and a random projection), the check that each facet's sub-space holds
that facet. ``init = text``: the unsupervised control, PCA of the text vectors to d dims
(``pretrain.train.plain_projection``), ``item_embeddings`` only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.artifacts import facet_labels, text_vectors
from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.stages.base import DATA, RESULT, StageOutput, drop_at_default
from pretrain.config import PretrainConfig
from storage.vectors import to_column

if TYPE_CHECKING:
    from pipeline.context import RunContext
    from storage import Artifact

NAME = "pretrain"
VERSION = "2"  # 2: per-facet projector parameters (no cross-facet Adam state)
SUMMARY = "Facet-aware supervised contrastive pre-training of item embeddings."
TABLES = {"item_embeddings": DATA, "facet_report": RESULT}
log = logging.getLogger("fame")


def upstream(cfg: RunConfig) -> list[str]:
    return ["ingest", "encode"]


# PretrainConfig fields added after artifacts were first written: in the key only when set
KEY_ONLY_IF_SET = {"start", "keep_text"}
_DEFAULTS = {k: getattr(PretrainConfig(), k) for k in KEY_ONLY_IF_SET}


# version of the unsupervised projection behind init=text (2: PCA with fixed axis signs)
TEXT_PROJECTION_VERSION = 2


def key_config(cfg: RunConfig) -> dict:
    if cfg.init.method == "text":  # the PCA pads with seeded noise where d exceeds its rank
        return {
            "text_projection": TEXT_PROJECTION_VERSION,
            "d": cfg.model.d,
            "init_std": cfg.model.init_std,
            "seed": cfg.train.seed,
        }
    section = drop_at_default(cfg.section("pretrain"), _DEFAULTS)
    section.pop("device")
    return {
        "facets": cfg.section("facets"),
        "pretrain": section,
        "d": cfg.model.d,
        "heads": cfg.model.heads,
        "init_std": cfg.model.init_std,
    }


def precheck(cfg: RunConfig, items: pa.Table | None) -> None:
    """Fail before heavy work: one facet per head, existing fields, a label held twice per facet."""
    if cfg.init.method == "text":
        return
    if not cfg.facets:
        raise PipelineError("pretrain needs [[facets]] in the config (one per model head)")
    if len(cfg.facets) != cfg.model.heads:
        raise PipelineError(
            f"{len(cfg.facets)} facets declared ({', '.join(f.name for f in cfg.facets)}) but "
            f"model.heads = {cfg.model.heads}: FAME pre-training needs one facet per head"
        )
    if items is not None:
        facet_labels(cfg, items)


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    from pretrain.train import initial_embeddings, knn_report, pretrain_facets

    cfg = ctx.config
    ids, text = text_vectors(inputs["encode"])
    if cfg.init.method == "text":
        return _text_projection(cfg, ids, text)
    items = inputs["ingest"].table("items")
    precheck(cfg, None)
    item_ids = items["item_id"].to_numpy()
    labels_all = facet_labels(cfg, items)  # (H, n_items)
    rows = np.searchsorted(item_ids, ids)  # item ids are sorted 1..n
    labels = labels_all[:, rows]
    d_prime = cfg.model.d // cfg.model.heads
    result = pretrain_facets(text, labels, d_prime, cfg.pretrain, progress=ctx.progress)
    init = initial_embeddings(result.z, cfg.model.init_std)
    names = [f.name for f in cfg.facets]
    table = {"item_id": pa.array(ids, pa.int64()), "vector": to_column(init)}
    for h, name in enumerate(names):
        table[f"facet_{name}"] = to_column(result.z[:, h, :])
    report = knn_report(text, result.z, labels, names, k=cfg.pretrain.knn_k, seed=cfg.pretrain.seed)
    for row in report:
        log.info(
            "facet_report %-12s %-22s acc=%.3f",
            row["facet"],
            row["representation"],
            row["accuracy"],
        )
    report_tbl = pa.Table.from_pylist(
        [{"run_id": ctx.run_id, "dataset": cfg.data.name, **r} for r in report]
    )
    coverage = {n: int((labels[h] >= 0).sum()) for h, n in enumerate(names)}
    return StageOutput(
        tables={"item_embeddings": pa.table(table), "facet_report": report_tbl},
        meta={
            "facets": names,
            "labelled_items": coverage,
            "pretrain_seconds": result.seconds,
            "final_losses": result.losses[-len(names) :] if result.losses else [],
        },
    )


def _text_projection(cfg: RunConfig, ids: np.ndarray, text: np.ndarray) -> StageOutput:
    from pretrain.train import plain_projection

    vec = plain_projection(text, cfg.model.d, cfg.model.init_std, cfg.train.seed)
    table = pa.table({"item_id": pa.array(ids, pa.int64()), "vector": to_column(vec)})
    return StageOutput(tables={"item_embeddings": table}, meta={"method": "text"})
