"""ingest: raw files -> ``items``, ``interactions``, ``sequences`` (FAME_SPEC §5 split)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from fame.config import BLOCK_USERS
from pipeline.config import DATA_DIR_ORDER, FILE_FIELDS, DataConfig, RunConfig
from pipeline.errors import PipelineError
from pipeline.stages.base import DATA, StageOutput, drop_at_default
from sources import synth
from sources.amazon2023 import read_amazon2023
from sources.readers import (
    RawData,
    read_amazon,
    read_generic,
    read_movielens,
    read_recbole,
    read_s3rec,
)
from sources.sequences import hold_out_items, prepare
from storage.atomic import atomic_dir

if TYPE_CHECKING:
    from pipeline.context import RunContext
    from storage import Artifact

NAME = "ingest"
VERSION = "1"
SUMMARY = "Read raw files into items, interactions and sequences (leave-one-out split)."
TABLES = {"items": DATA, "interactions": DATA, "sequences": DATA}


def upstream(cfg: RunConfig) -> list[str]:
    return []


def source_files(cfg: RunConfig) -> dict[str, Path]:
    """``interactions``, then ``items`` and ``item_text`` where the config names them: each
    path resolved (and checked to stay in the data dir) once, for the key and the reader."""
    d = cfg.data
    files = {"interactions": cfg.data_file(d.interactions, "interactions")}
    if d.items:
        files["items"] = cfg.data_file(d.items, "items")
    if d.item_text:
        if d.format != "s3rec":
            raise PipelineError(
                f"data.item_text is read by the s3rec format only (data.format = {d.format!r}); "
                "other formats take item text from data.items"
            )
        files["item_text"] = cfg.data_file(d.item_text, "item_text")
    if not files["interactions"].is_file():  # after the paths are checked: never probe outside
        raise missing_dataset(cfg, files["interactions"])
    return files


def missing_dataset(cfg: RunConfig, path: Path) -> PipelineError:
    """The error for absent data: where it was looked for and what to run."""
    from sources.fetch import DATASETS

    name = cfg.data.name
    point = f"point --data-dir or FAME_DATA_DIR at the folder holding {cfg.data.dir or name}/"
    todo = f"Download it with `fame data fetch {name}` (into that dir), or {point}"
    if name not in DATASETS:
        todo = point[0].upper() + point[1:]
    return PipelineError(
        f"dataset {name!r}: {path} not found. The data dir is {cfg.data_dir()} (from "
        f"{DATA_DIR_ORDER}). {todo}. `fame run --config synthetic` needs no files."
    )


# data fields added after artifacts were first written: in the key only when set
_COLD_DEFAULTS = {"cold_items": 0.0, "cold_seed": 0}


def key_config(cfg: RunConfig) -> dict:
    """The data section plus each source file's name, size and mtime (not its directory);
    synthetic data: the data section and the generator version (the files follow from them)."""
    if cfg.data.format == "synthetic":
        section = {k: v for k, v in cfg.section("data").items() if k not in FILE_FIELDS}
        section = drop_at_default(section, _COLD_DEFAULTS)
        return {"data": section, "generator": synth.VERSION}
    prints = []
    for path in source_files(cfg).values():
        st = path.stat() if path.is_file() else None
        prints.append(
            {
                "name": path.name,
                "size": st.st_size if st else None,
                "mtime_ns": st.st_mtime_ns if st else None,
            }
        )
    section = drop_at_default(
        cfg.section("data"), {"item_text": None, "synth": None, **_COLD_DEFAULTS}
    )
    section.pop("dir", None)
    return {"data": section, "files": prints}


def synthetic_dir(cfg: RunConfig, progress: bool = False) -> Path:
    """The generated files of ``data.synth``: ``<artifacts>/_cache/synth/<fingerprint>``,
    generated on first use (both files or none: atomic), reused after."""
    params = cfg.data.synth
    path = cfg.artifacts_dir() / "_cache" / "synth" / synth.fingerprint(params)
    if not all((path / name).is_file() for name in (synth.INTERACTIONS_FILE, synth.ITEMS_FILE)):
        with atomic_dir(path) as tmp:
            synth.generate(params, tmp, progress=progress)
    return path


# data.format -> its reader of (data section, interactions file, items file, item-text file)
READERS: dict[str, Callable[[DataConfig, Path, Path | None, Path | None], RawData]] = {
    "s3rec": lambda d, inter, items, text: read_s3rec(inter, items, text),
    "recbole": lambda d, inter, items, _: read_recbole(inter, items, *_columns(d)),
    "amazon": lambda d, inter, items, _: read_amazon(inter, items),
    "amazon2023": lambda d, inter, items, _: read_amazon2023(inter, items),
    "movielens": lambda d, inter, items, _: read_movielens(inter, items),
    "table": lambda d, inter, items, _: read_generic(inter, items, *_columns(d)),
}


def _columns(d: DataConfig) -> tuple[str, str, str]:
    return d.user_col, d.item_col, d.time_col


def read_raw(cfg: RunConfig, progress: bool = False) -> RawData:
    d = cfg.data
    if d.format == "synthetic":  # generated files with the default column names
        path = synthetic_dir(cfg, progress)
        inter, items = path / synth.INTERACTIONS_FILE, path / synth.ITEMS_FILE
        return read_generic(inter, items, "user_id", "item_id", "timestamp")
    if d.format not in READERS:
        raise PipelineError(f"unknown data.format {d.format!r}")
    files = source_files(cfg)  # checks the file names (and that the interactions exist)
    return READERS[d.format](d, files["interactions"], files.get("items"), files.get("item_text"))


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    d = ctx.config.data
    prepared = prepare(
        read_raw(ctx.config, ctx.progress),
        user_core=d.user_core,
        item_core=d.item_core,
        min_seq_len=d.min_seq_len,
        dedup=d.dedup,
        min_rating=d.min_rating,
        consume=True,
    )
    items, sequences, stats = prepared.items, prepared.sequences, prepared.stats
    if d.cold_items:
        items, sequences, cold = hold_out_items(items, sequences, d.cold_items, d.cold_seed)
        stats = {**stats, **cold}

    def files(tmp: Path) -> None:
        # one row group per block of users: training and evaluation stream a window of them
        path = tmp / "sequences.parquet"
        pq.write_table(sequences, path, row_group_size=BLOCK_USERS)

    return StageOutput(
        tables={"items": items, "interactions": prepared.interactions},
        files=files,
        meta={"stats": stats},
    )
