"""Typed configs of facet labels and facet pre-training (pydantic dataclasses, validated from TOML)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid")


@dataclass(config=STRICT)
class FacetSpec:
    """One facet = one head: a categorical label per item derived from a metadata field."""

    name: str
    field: str
    # categorical: the value; first/last: first/last element of a list (or space-separated text);
    # set: the whole sorted set as one label; level: element `level` of a category path;
    # decade: int(year) // 10 * 10; bucket: quantile bucket of a number (`buckets` of them)
    kind: Literal["categorical", "first", "last", "set", "level", "decade", "bucket"] = (
        "categorical"
    )
    level: int = 0
    buckets: int = 5


@dataclass(config=STRICT)
class PretrainConfig:
    """FAME_SPEC §6: alternating supervised contrastive training of per-facet projections."""

    steps: int = 2000
    labels_per_batch: int = 16  # m
    items_per_label: int = 8  # k
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 256
    temperature: float = 0.07
    schedule: Literal["alternating", "joint"] = "alternating"
    seed: int = 42
    device: str = "auto"
    knn_k: int = 10
