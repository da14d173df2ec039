"""Recommend for one user from a trained checkpoint (on demand; not a cached stage)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch

from fame.evaluate import recommend_topk
from pipeline.artifacts import trained_model
from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.runner import plan_keys
from storage import ArtifactStore


@dataclass
class Recommendation:
    user: str
    history: list[int]
    items: list[int]
    scores: list[float]
    titles: list[str | None]
    gate: list[float] | None = None
    head_scores: list[list[float]] | None = None  # (k, H) per-head scores of the recommended items


def recommend(cfg: RunConfig, user: str, k: int = 10, explain: bool = False) -> Recommendation:
    """Top-k unseen items for ``user`` (its source id) given its whole history."""
    store = ArtifactStore(cfg.artifacts_dir())
    keys = plan_keys(cfg)
    ingest, train = store.get("ingest", keys["ingest"]), store.get("train", keys["train"])
    if ingest is None or train is None:
        raise PipelineError("no trained model for this config; run `fame train` with it first")
    seqs = ingest.table("sequences")
    match = pc.equal(seqs["source_user_id"], str(user))
    row = seqs.filter(match).to_pylist()
    if not row:
        raise PipelineError(f"unknown user {user!r} in dataset {cfg.data.name!r}")
    r = row[0]
    history = [*r["train_items"], r["valid_item"], r["test_item"]]
    model = trained_model(train)
    spec = cfg.evaluate  # the primary protocol decides whether seen items may come back
    top, scores = recommend_topk(
        model, np.array([0, len(history)]), np.array(history), k, spec.primary
    )
    ids = top[0].tolist()
    gate = heads = None
    if explain and cfg.model.name == "fame":
        seq = torch.tensor([history[-cfg.model.max_len :]], dtype=torch.long)
        with torch.inference_mode():
            per_head, g = model.head_scores(seq)
        gate = g[0].tolist()
        heads = per_head[0][:, ids].T.tolist()
    items = ingest.table("items")
    titles = (
        items["title"].to_pylist() if "title" in items.column_names else [None] * items.num_rows
    )
    return Recommendation(
        str(user), history, ids, scores[0].tolist(), [titles[i - 1] for i in ids], gate, heads
    )


def source_ids(cfg: RunConfig, item_ids: list[int]) -> list[str]:
    store = ArtifactStore(cfg.artifacts_dir())
    items = store.get("ingest", plan_keys(cfg)["ingest"]).table("items")
    src = items["source_id"].to_numpy(zero_copy_only=False)
    return [str(s) for s in src[np.asarray(item_ids) - 1]]
