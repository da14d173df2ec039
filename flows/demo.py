"""Which dataset ``fame demo`` runs: ml-100k when it is there or can be fetched, else synthetic.

A first run on a stranger's machine must not dead-end on a missing file: MovieLens may not be
redistributed, so the demo downloads it when the network allows and otherwise falls back to the
bundled synthetic dataset (generated from a seed, no files), saying in one line why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import RunConfig, load_config
from pipeline.errors import PipelineError

DemoData = Literal["auto", "ml-100k", "synthetic"]
FETCH_TIMEOUT = 20.0  # seconds: an offline machine should fall back quickly


@dataclass
class DemoChoice:
    config: str  # config name to run
    reason: str  # one line for the user


def dataset_present(cfg: RunConfig) -> bool:
    return cfg.data_file(cfg.data.interactions, "interactions").is_file()


def choose(
    data: DemoData,
    sets: list[str] | None = None,
    data_dir: Path | None = None,
    url: str | None = None,
    progress: bool = True,
) -> DemoChoice:
    """The config to run for ``fame demo --data DATA``; fetches ml-100k into the data dir when
    it is missing. ``data = "ml-100k"`` raises (with what to run) instead of falling back."""
    if data == "synthetic":
        return DemoChoice("synthetic", "synthetic dataset (asked for with --data synthetic)")
    from sources.fetch import fetch

    cfg = load_config("ml-100k", sets or [], data_dir)
    if dataset_present(cfg):
        return DemoChoice("ml-100k", f"ml-100k from {cfg.dataset_dir()}")
    try:
        path = fetch("ml-100k", cfg.data_dir(), url, progress=progress, timeout=FETCH_TIMEOUT)
    except (PipelineError, OSError) as exc:
        if data == "ml-100k":
            from pipeline.stages.ingest import missing_dataset

            raise PipelineError(
                f"{missing_dataset(cfg, cfg.data_file(cfg.data.interactions, 'interactions'))} "
                f"(download failed: {exc})"
            ) from exc
        return DemoChoice(
            "synthetic",
            f"synthetic dataset: ml-100k is not in {cfg.data_dir()} and could not be downloaded "
            f"({exc}); `fame data fetch ml-100k` or --data-dir gets the real one",
        )
    return DemoChoice("ml-100k", f"ml-100k downloaded to {path}")
