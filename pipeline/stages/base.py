"""What a stage declares and hands back to the runner."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

# How the catalog shows a stage's output table (``TABLES`` of a stage module: table -> scope)
DATA = "data"  # a view of the artifact the latest run used, and ``<table>_all`` of every version
RESULT = "result"  # one view over every stored artifact (its rows name their run)
UNLISTED = None  # no view (e.g. train's epoch history, read through the manifest)


@dataclass
class StageOutput:
    """Tables to store as Parquet, a writer for other files, manifest extras, and what to do
    once the artifact is published (e.g. drop scratch state it has made redundant)."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    files: Callable[[Path], None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    after_publish: Callable[[], None] | None = None


def drop_at_default(section: dict[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` without those fields of ``later`` that hold the default given there.

    Config fields added after artifacts were first written enter a stage key only when set, so
    the artifacts (and bench records) of configs they do not change keep their keys.
    """
    return {k: v for k, v in section.items() if k not in later or v != later[k]}
