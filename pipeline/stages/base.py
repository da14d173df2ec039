"""What a stage hands back to the runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass
class StageOutput:
    """Tables to store as Parquet, a writer for other files, and manifest extras."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    files: Callable[[Path], None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
