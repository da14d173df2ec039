"""Facet labels from item metadata: one categorical label per item and facet (FAME_SPEC §6.3)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pretrain.config import FacetSpec

__all__ = ["FacetError", "FacetSpec", "derive_labels", "validate_facets"]


class FacetError(ValueError):
    """A facet that cannot be derived; the message names the facet and the field."""


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v)


def _scalar(v: Any) -> str:
    """Label text of a scalar: integral floats without ``.0`` so 1995.0 and 1995 agree."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _elements(v: Any) -> list[str]:
    """A list value as is, a string split on whitespace (RecBole token_seq), else one element."""
    if _missing(v):
        return []
    if isinstance(v, list | tuple | np.ndarray):
        return [s for s in (_scalar(x) for x in v if not _missing(x)) if s]
    if isinstance(v, str):
        return v.split()
    return [_scalar(v)]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def _raw_label(v: Any, spec: FacetSpec) -> str | None:
    kind = spec.kind
    if kind == "categorical":
        if isinstance(v, list | tuple | np.ndarray):
            return "|".join(_elements(v)) or None
        return None if _missing(v) else (_scalar(v) or None)
    if kind in ("first", "last"):
        el = _elements(v)
        return (el[0] if kind == "first" else el[-1]) if el else None
    if kind == "set":
        return "|".join(sorted(set(_elements(v)))) or None
    if kind == "level":
        el = _elements(v)
        return el[spec.level] if -len(el) <= spec.level < len(el) else None
    if kind == "decade":
        x = _number(v)
        return None if x is None else str(int(x) // 10 * 10)
    raise FacetError(f"facet {spec.name!r}: unknown kind {kind!r}")


def _bucket_labels(values: Sequence[Any], buckets: int) -> list[str | None]:
    """Quantile bucket of each number; equal values always share a bucket."""
    nums = np.array([np.nan if (x := _number(v)) is None else x for v in values], dtype=float)
    ok = ~np.isnan(nums)
    if ok.sum() < 2:
        return [None] * len(values)
    edges = np.unique(np.quantile(nums[ok], np.linspace(0, 1, buckets + 1)[1:-1]))
    codes = np.searchsorted(edges, nums, side="right")
    return [str(c) if o else None for c, o in zip(codes.tolist(), ok.tolist(), strict=True)]


def validate_facets(available_fields: Sequence[str], specs: Sequence[FacetSpec]) -> None:
    """Cheap pre-check: at least one facet, unique names, every field exists."""
    if not specs:
        raise FacetError("no facets declared (one [[facets]] entry per head)")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise FacetError(f"facet names must be unique, got {names}")
    for spec in specs:
        if spec.field not in available_fields:
            raise FacetError(
                f"facet {spec.name!r}: field {spec.field!r} does not exist; item fields are "
                f"{', '.join(available_fields)}"
            )


def derive_labels(columns: Mapping[str, Sequence[Any]], specs: Sequence[FacetSpec]) -> np.ndarray:
    """(H, n) int64 label codes, -1 = missing; labels held by fewer than 2 items count as missing.

    Codes number the kept labels in sorted order, so they do not depend on item order.
    """
    validate_facets(list(columns), specs)
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise FacetError(f"item columns differ in length: {lengths}")
    n = next(iter(lengths.values()))
    out = np.full((len(specs), n), -1, dtype=np.int64)
    for h, spec in enumerate(specs):
        values = columns[spec.field]
        if spec.kind == "bucket":
            raw = _bucket_labels(values, spec.buckets)
        else:
            raw = [_raw_label(v, spec) for v in values]
        counts = Counter(r for r in raw if r is not None)
        kept = sorted(label for label, c in counts.items() if c >= 2)
        if not kept:
            raise FacetError(
                f"facet {spec.name!r} (field {spec.field!r}, kind {spec.kind!r}): no label is "
                f"held by at least 2 items ({len(counts)} distinct labels over "
                f"{sum(counts.values())} of {n} items)"
            )
        vocab = {label: i for i, label in enumerate(kept)}
        out[h] = [-1 if r is None else vocab.get(r, -1) for r in raw]
    return out
