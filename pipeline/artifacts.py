"""Readers of the stages' artifacts, one per kind: what a downstream stage, ``recommend`` or a
bench script gets out of an upstream artifact. Stages import these, never each other.

torch is imported inside the readers that need it, so the stage registry stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import RunConfig
from storage.vectors import from_column

if TYPE_CHECKING:
    from fame.data import SplitData
    from fame.model import SeqRecModel
    from storage import Artifact

CHECKPOINT = "checkpoint"  # the train artifact's checkpoint folder (weights, config, item map)


def split_data(ingest: Artifact) -> SplitData:
    """An ingest artifact's ``sequences`` as the trainer's CSR arrays (no per-user Python loop).

    One copy of the train items: flattened straight from the Parquet chunks (no combine, no
    astype), offsets from the list lengths; the Arrow table is dropped and its pages handed
    back on return (at 20M interactions: 930 MB resident before, 220 MB now)."""
    from fame.data import SplitData

    cols = ["user_id", "train_items", "valid_item", "test_item"]
    sequences = pq.read_table(ingest.file("sequences.parquet"), columns=cols)
    train = sequences["train_items"]
    lengths = pc.list_value_length(train).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = SplitData(
        user_ids=sequences["user_id"].to_numpy().astype(np.int64, copy=False),
        offsets=offsets,
        items=pc.list_flatten(train).to_numpy().astype(np.int64, copy=False),
        valid=sequences["valid_item"].to_numpy().astype(np.int64, copy=False),
        test=sequences["test_item"].to_numpy().astype(np.int64, copy=False),
        num_items=ingest.rows["items"],
    )
    del sequences, train
    pa.default_memory_pool().release_unused()  # the allocator keeps freed blocks otherwise
    return data


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
