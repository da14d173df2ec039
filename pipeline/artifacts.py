"""Readers of the stages' artifacts, one per kind: what a downstream stage, ``recommend`` or a
bench script gets out of an upstream artifact. Stages import these, never each other.

torch is imported inside the readers that need it, so the stage registry stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import RunConfig
from storage.vectors import from_column

if TYPE_CHECKING:
    from fame.data import SplitData
    from fame.model import SeqRecModel
    from storage import Artifact

CHECKPOINT = "checkpoint"  # the train artifact's checkpoint folder (weights, config, item map)


def split_data(ingest: Artifact) -> SplitData:
    """An ingest artifact's ``sequences`` as the trainer's CSR arrays (no per-user Python loop)."""
    from fame.data import SplitData

    sequences = ingest.table("sequences")
    train = sequences["train_items"].combine_chunks()
    return SplitData(
        user_ids=sequences["user_id"].to_numpy().astype(np.int64),
        offsets=train.offsets.to_numpy().astype(np.int64) - int(train.offsets[0].as_py()),
        items=pc.list_flatten(train).to_numpy().astype(np.int64),
        valid=sequences["valid_item"].to_numpy().astype(np.int64),
        test=sequences["test_item"].to_numpy().astype(np.int64),
        num_items=ingest.rows["items"],
    )


def facet_labels(cfg: RunConfig, items: pa.Table) -> np.ndarray:
    """(H, n_items) label codes of the config's facets over an ingest ``items`` table, rows in
    table order (FacetError names a bad facet)."""
    from pretrain.facets import derive_labels, validate_facets

    validate_facets(items.column_names, cfg.facets)
    fields = sorted({f.field for f in cfg.facets})
    return derive_labels({c: items[c].to_pylist() for c in fields}, cfg.facets)


def text_vectors(encode: Artifact) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, (n, D) float32 vectors) of an encode artifact."""
    table = encode.table("text_embeddings")
    return table["item_id"].to_numpy(), from_column(table["vector"])


def initial_vectors(pretrain: Artifact) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, (n, d) initial item vectors) of a pretrain artifact."""
    table = pretrain.table("item_embeddings")
    return table["item_id"].to_numpy(), from_column(table["vector"])


def trained_model(train: Artifact, device: str = "cpu") -> SeqRecModel:
    """The model of a train artifact, in eval mode on ``device``."""
    from fame.checkpoint import load_checkpoint

    model, _extra = load_checkpoint(train.file(CHECKPOINT), map_location=device)
    return model
