"""Readers of the stages' artifacts, one per kind: what a downstream stage, ``recommend`` or a
bench script gets out of an upstream artifact. Stages import these, never each other.

torch is imported inside the readers that need it, so the stage registry stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from storage.vectors import from_column

if TYPE_CHECKING:
    from fame.data import SplitData
    from fame.item_repr import TextSpec
    from fame.model import SeqRecModel
    from fame.streaming import ParquetSequences
    from storage import Artifact

CHECKPOINT = "checkpoint"  # the train artifact's checkpoint folder (weights, config, item map)


def split_data(ingest: Artifact) -> SplitData:
    """An ingest artifact's ``sequences`` as the trainer's CSR arrays, whole (no per-user Python
    loop); the Arrow table is dropped and its pages handed back on return."""
    from fame.streaming import COLUMNS, split_from_table

    sequences = pq.read_table(ingest.file("sequences.parquet"), columns=COLUMNS)
    data = split_from_table(sequences, ingest.rows["items"])
    del sequences
    pa.default_memory_pool().release_unused()  # the allocator keeps freed blocks otherwise
    return data


def streamed_sequences(ingest: Artifact) -> ParquetSequences:
    """An ingest artifact's ``sequences`` read a window of row groups at a time (train, evaluate)."""
    from fame.streaming import ParquetSequences

    return ParquetSequences(
        ingest.file("sequences.parquet"), ingest.rows["items"], held_out_items(ingest)
    )


def held_out_items(ingest: Artifact) -> np.ndarray:
    """The item ids the cold-start protocol kept out of training (``data.cold_items``)."""
    items = ingest.table("items")
    if "held_out" not in items.column_names:
        return np.zeros(0, dtype=np.int64)
    return items["item_id"].to_numpy()[items["held_out"].to_numpy(zero_copy_only=False)]


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


PROJECTOR, PROJECTOR_META = "projector.safetensors", "projector.json"  # in a pretrain artifact


def text_projector(pretrain: Artifact) -> tuple[TextSpec, dict, float]:
    """(shapes, weights, table scale s) of the projector φ a pretrain artifact stored."""
    import json

    from safetensors.torch import load_file

    from fame.item_repr import TextSpec

    meta = pretrain.file(PROJECTOR_META)
    if not meta.is_file() and (why := pretrain.manifest.get("no_projector")):
        raise PipelineError(f"pretrain artifact {pretrain.key} has no projector: {why}")
    if not meta.is_file():
        raise PipelineError(
            f"pretrain artifact {pretrain.key} holds no projector (written before the text "
            "pathway existed): recompute it with `fame run --force pretrain` and the same config"
        )
    spec = json.loads(meta.read_text())
    scale = spec.pop("scale")
    return TextSpec(**spec), load_file(pretrain.file(PROJECTOR)), float(scale)


def trained_model(train: Artifact, device: str = "cpu") -> SeqRecModel:
    """The model of a train artifact, in eval mode on ``device``."""
    from fame.checkpoint import load_checkpoint

    model, _extra = load_checkpoint(train.file(CHECKPOINT), map_location=device)
    return model
