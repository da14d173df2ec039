"""The stage registry: the stages in DAG order and the catalog views over their output tables.

Each stage module declares its name, upstream, output tables and how the catalog shows them
(``pipeline.stages``); the runner, the catalog, the CLI, the Prefect deployments and the tests
take the lists from here. Importing this module does not import torch.
"""

from __future__ import annotations

from types import ModuleType

from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.stages import encode, evaluate, ingest, pretrain, train
from pipeline.stages.base import DATA, RESULT
from storage.catalog import View

STAGES: dict[str, ModuleType] = {m.NAME: m for m in (ingest, encode, pretrain, train, evaluate)}
ORDER = list(STAGES)
SOURCE = ingest.NAME  # the stage whose ``items`` table the stages' prechecks read
TARGET = evaluate.NAME  # what a full run is for: it and everything upstream of it


def stage(name: str) -> ModuleType:
    if name not in STAGES:
        raise PipelineError(f"unknown stage {name!r}; stages are {ORDER}")
    return STAGES[name]


def upstream_of(name: str, cfg: RunConfig) -> list[str]:
    return STAGES[name].upstream(cfg)


def catalog_views() -> list[View]:
    """Every stage's declared views, data views first: what ``refresh_catalog`` builds."""
    views = [
        View(table, name, table, current=scope == DATA)
        for name, mod in STAGES.items()
        for table, scope in mod.TABLES.items()
        if scope in (DATA, RESULT)
    ]
    return sorted(views, key=lambda v: not v.current)


VIEWS = catalog_views()
