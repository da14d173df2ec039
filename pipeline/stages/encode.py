"""encode: item text -> frozen sentence-encoder vectors (``text_embeddings``), cached per text.

The cache lives beside the artifacts, keyed by encoder name and the SHA-256 of each text, so a
second run, or a run over a dataset that gained items, encodes only texts never seen before.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.stages.base import DATA, StageOutput
from storage.atomic import atomic_write_parquet
from storage.vectors import from_column, to_column

if TYPE_CHECKING:
    from pipeline.context import RunContext
    from storage import Artifact

NAME = "encode"
VERSION = "1"
SUMMARY = "Encode item texts with the sentence encoder (cached per text)."
TABLES = {"text_embeddings": DATA}
log = logging.getLogger("fame")


def upstream(cfg: RunConfig) -> list[str]:
    return ["ingest"]


def key_config(cfg: RunConfig) -> dict:
    enc = cfg.section("encode")
    return {"model": enc["model"], "template": enc["template"], "max_length": enc["max_length"]}


def precheck(cfg: RunConfig, items: pa.Table | None) -> None:
    """An unknown encoder, or a template naming fields items do not have, fails before work."""
    from pretrain.encoder import validate_encoder
    from pretrain.text import render_texts

    validate_encoder(cfg.encode.model)
    if items is not None:
        render_texts([dict.fromkeys(items.column_names)], cfg.encode.template)


def item_texts(items: pa.Table, template: str) -> tuple[np.ndarray, list[str]]:
    """(item ids with text, their texts); items whose template renders empty are left out."""
    from pretrain.text import render_texts

    texts = render_texts(items.to_pylist(), template)
    keep = [i for i, t in enumerate(texts) if t]
    ids = items["item_id"].to_numpy()[keep]
    return ids, [texts[i] for i in keep]


class EmbeddingCache:
    """Vectors by (encoder, text hash) as Parquet files under ``<store>/_cache/text/<encoder>/``."""

    def __init__(self, root, encoder_name: str):
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_name)[-40:]
        digest = hashlib.sha256(encoder_name.encode()).hexdigest()[:10]
        self.dir = root / "_cache" / "text" / f"{slug}-{digest}"

    def lookup(self, hashes: list[str]) -> dict[str, np.ndarray]:
        if not self.dir.is_dir() or not any(self.dir.glob("*.parquet")):
            return {}
        table = pq.read_table(self.dir)
        wanted = pc.is_in(table["text_hash"], value_set=pa.array(sorted(set(hashes))))
        table = table.filter(wanted)
        vectors = from_column(table["vector"])  # (rows, D), also for no rows
        return dict(zip(table["text_hash"].to_pylist(), vectors, strict=True))

    def add(self, hashes: list[str], vectors: np.ndarray) -> None:
        if not hashes:
            return
        name = hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]
        table = pa.table({"text_hash": hashes, "vector": to_column(vectors)})
        atomic_write_parquet(table, self.dir / f"{name}.parquet")


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    # imported here: sentence-transformers costs seconds at start-up that other stages never need
    from pretrain.encoder import TextEncoder, validate_encoder
    from pretrain.text import text_hash

    enc_cfg = ctx.config.encode
    validate_encoder(enc_cfg.model)
    items = inputs["ingest"].table("items")
    ids, texts = item_texts(items, enc_cfg.template)
    missing = items.num_rows - len(ids)
    if not texts:
        raise PipelineError(
            f"dataset {ctx.config.data.name!r}: no item has text for template {enc_cfg.template!r} "
            f"(item fields: {', '.join(items.column_names)}); encode needs item text"
        )
    if missing:
        no_text = sorted(set(items["item_id"].to_pylist()) - set(ids.tolist()))
        log.warning(
            "encode: %d of %d items have no text (the template renders empty), e.g. item_id %s; "
            "they are not encoded and keep a random initial vector",
            missing,
            items.num_rows,
            ", ".join(map(str, no_text[:5])),
        )
    encoder = TextEncoder(
        enc_cfg.model,
        device=enc_cfg.device,
        batch_size=enc_cfg.batch_size,
        max_length=enc_cfg.max_length,
    )
    cache = EmbeddingCache(ctx.store.root, encoder.name)
    hashes = [text_hash(t) for t in texts]
    known = cache.lookup(hashes)
    todo = sorted({h: t for h, t in zip(hashes, texts, strict=True) if h not in known}.items())
    cut = 0
    if todo:
        cut = encoder.truncated([t for _, t in todo])
        if cut:
            log.info(
                "encode: %d of %d texts are longer than the encoder's max length (%d tokens) "
                "and are cut there (encode.max_length; the template decides what comes first)",
                cut,
                len(todo),
                encoder.model.max_seq_length,
            )
        new = encoder.encode([t for _, t in todo], progress=ctx.progress)
        cache.add([h for h, _ in todo], new)
        known.update(zip([h for h, _ in todo], new, strict=True))
    vectors = np.stack([known[h] for h in hashes]).astype(np.float32)
    table = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "encoder": pa.array([encoder.name] * len(ids), pa.string()),
            "text": texts,
            "text_hash": hashes,
            "vector": to_column(vectors),
        }
    )
    return StageOutput(
        tables={"text_embeddings": table},
        meta={
            "encoder": encoder.name,
            "dim": int(vectors.shape[1]),
            "items_without_text": missing,
            "encoded": len(todo),
            "truncated": cut,  # of the encoded texts, cut at the encoder's max length
            "cache_hits": len(set(hashes)) - len(todo),
        },
    )
