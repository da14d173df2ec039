"""Typed configs of facet labels and facet pre-training (pydantic dataclasses, validated from TOML)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid")


@dataclass(config=STRICT)
class FacetSpec:
    """One facet = one head: a categorical label per item derived from a metadata field."""

    name: str
    field: str
    # categorical: the value; first/last: first/last element of a list (or space-separated text);
    # set: the whole sorted set as one label; level: element `level` of a category path
    # (negative counts from the leaf); decade: int(year) // 10 * 10; bucket: quantile bucket
    # of a number (`buckets` of them)
    kind: Literal["categorical", "first", "last", "set", "level", "decade", "bucket"] = (
        "categorical"
    )
    level: int = 0
    buckets: int = Field(5, ge=2)


@dataclass(config=STRICT)
class PretrainConfig:
    """FAME_SPEC §6: alternating supervised contrastive training of per-facet projections."""

    steps: int = Field(2000, ge=1)
    labels_per_batch: int = Field(16, ge=2)  # m
    items_per_label: int = Field(8, ge=2)  # k: an anchor needs another item of its label
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    hidden: int = Field(256, ge=1)
    temperature: float = Field(0.07, gt=0)
    # alternating: step s trains facet s mod H only [choice]; joint: every step sums all facets
    schedule: Literal["alternating", "joint"] = "alternating"
    seed: int = 42
    device: str = "auto"
    knn_k: int = Field(10, ge=1)
    # §6.9 alternatives [choice]. start: "scratch" = φ_k from a random init; "pca" = slice k
    # starts as the k-th block of d' principal axes of the text vectors (φ_k learns a residual
    # from zero), so the facet losses rotate a projection that keeps the title's information
    start: Literal["scratch", "pca"] = "scratch"
    # λ of an information-keeping term: a linear decoder from [z^1 ‖ … ‖ z^H] back to t_v,
    # loss 1 - cos; at an alternating step only facet k's slice (and the decoder) moves
    keep_text: float = Field(0.0, ge=0)
