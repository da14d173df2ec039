"""ingest: raw files -> ``items``, ``interactions``, ``sequences`` (FAME_SPEC §5 split)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.readers import (
    RawData,
    read_amazon,
    read_generic,
    read_movielens,
    read_recbole,
    read_s3rec,
)
from pipeline.sequences import prepare
from pipeline.stages.base import StageOutput, drop_at_default

if TYPE_CHECKING:
    from pipeline.runner import RunContext
    from storage import Artifact

NAME = "ingest"
VERSION = "1"


def upstream(cfg: RunConfig) -> list[str]:
    return []


def source_files(cfg: RunConfig) -> list[Path]:
    """Interactions, then item metadata and the item-text table where the config names them."""
    d = cfg.data
    files = [cfg.data_file(d.interactions, "interactions")]
    if d.items:
        files.append(cfg.data_file(d.items, "items"))
    if d.item_text:
        if d.format != "s3rec":
            raise PipelineError(
                f"data.item_text is read by the s3rec format only (data.format = {d.format!r}); "
                "other formats take item text from data.items"
            )
        files.append(cfg.data_file(d.item_text, "item_text"))
    return files


def key_config(cfg: RunConfig) -> dict:
    """The data section plus each source file's name, size and mtime (not its directory)."""
    prints = []
    for path in source_files(cfg):
        st = path.stat() if path.is_file() else None
        prints.append(
            {
                "name": path.name,
                "size": st.st_size if st else None,
                "mtime_ns": st.st_mtime_ns if st else None,
            }
        )
    section = drop_at_default(cfg.section("data"), {"item_text": None})
    section.pop("dir", None)
    return {"data": section, "files": prints}


def read_raw(cfg: RunConfig) -> RawData:
    d = cfg.data
    files = source_files(cfg)
    inter = files[0]
    items = cfg.data_file(d.items, "items") if d.items else None
    if d.format == "s3rec":
        text = cfg.data_file(d.item_text, "item_text") if d.item_text else None
        return read_s3rec(inter, items, text)
    if d.format == "recbole":
        return read_recbole(inter, items, d.user_col, d.item_col, d.time_col)
    if d.format == "amazon":
        return read_amazon(inter, items)
    if d.format == "movielens":
        return read_movielens(inter, items)
    if d.format == "table":
        return read_generic(inter, items, d.user_col, d.item_col, d.time_col)
    raise PipelineError(f"unknown data.format {d.format!r}")


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    d = ctx.config.data
    prepared = prepare(
        read_raw(ctx.config),
        user_core=d.user_core,
        item_core=d.item_core,
        min_seq_len=d.min_seq_len,
        dedup=d.dedup,
        min_rating=d.min_rating,
    )
    return StageOutput(
        tables={
            "items": prepared.items,
            "interactions": prepared.interactions,
            "sequences": prepared.sequences,
        },
        meta={"stats": prepared.stats},
    )
