"""What a stage sees of its run (``RunContext``) and what a stage execution hands back
(``StageRef`` as plain data between processes, ``StageResult`` in the run that asked for it).

Stages and the runner both import this module; neither imports the other for these types.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypedDict

from pipeline.config import RunConfig
from storage import Artifact, ArtifactStore


class StageRef(TypedDict, total=False):
    """A stage's artifact reference, plain data (a task's return value, a task's input).

    ``stage`` and ``key`` name the artifact in the store; a stage task's return value adds
    what it did (``skipped``, ``seconds``) and what it wrote (``path``, ``rows``).
    """

    stage: str
    key: str
    skipped: bool
    seconds: float
    path: str
    rows: dict[str, int]


@dataclass
class StageResult:
    stage: str
    key: str
    skipped: bool
    seconds: float  # the stage itself: store lookup, or compute and write
    artifact: Artifact
    wall_seconds: float = 0.0  # the executor's call around it (e.g. Prefect's task machinery)

    @property
    def rows(self) -> dict[str, int]:
        return self.artifact.rows


@dataclass
class RunContext:
    """One pipeline run as a stage sees it: config, store, run id, keys, what to recompute."""

    config: RunConfig
    store: ArtifactStore
    run_id: str
    force: set[str] = field(default_factory=set)
    progress: bool = True
    results: dict[str, StageResult] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    keys: dict[str, str] = field(default_factory=dict)
    config_name: str = ""
