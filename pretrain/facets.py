"""Facet labels from item metadata: one categorical label per item and facet (FAME_SPEC §6.3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pretrain.config import FacetSpec

__all__ = ["FacetError", "FacetSpec", "derive_labels", "validate_facets"]


class FacetError(ValueError):
    """A facet that cannot be derived; the message names the facet and the field."""


def _elements(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, list | tuple):
        return [str(x) for x in v if x is not None and str(x) != ""]
    return str(v).split()


def _number(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def _raw_label(v: Any, spec: FacetSpec) -> str | None:
    kind = spec.kind
    if kind == "categorical":
        if isinstance(v, list | tuple):
            return "|".join(_elements(v)) or None
        return None if v is None or str(v) == "" else str(v)
    if kind in ("first", "last"):
        el = _elements(v)
        return (el[0] if kind == "first" else el[-1]) if el else None
    if kind == "set":
        el = sorted(set(_elements(v)))
        return "|".join(el) if el else None
    if kind == "level":
        el = _elements(v) if isinstance(v, list | tuple) else ([] if v is None else [str(v)])
        return el[spec.level] if len(el) > spec.level else None
    if kind == "decade":
        x = _number(v)
        return None if x is None else str(int(x) // 10 * 10)
    raise FacetError(f"facet {spec.name!r}: unknown kind {kind!r}")


def validate_facets(available_fields: Sequence[str], specs: Sequence[FacetSpec]) -> None:
    """Cheap pre-check: every facet names an existing field, names are unique."""
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
    """(H, n) int64 label codes, -1 = missing; labels held by fewer than 2 items count as missing."""
    validate_facets(list(columns), specs)
    n = len(next(iter(columns.values()))) if columns else 0
    out = np.full((len(specs), n), -1, dtype=np.int64)
    for h, spec in enumerate(specs):
        values = columns[spec.field]
        if spec.kind == "bucket":
            nums = np.array([_number(v) if _number(v) is not None else np.nan for v in values])
            ok = ~np.isnan(nums)
            if ok.sum() >= 2:
                edges = np.unique(np.quantile(nums[ok], np.linspace(0, 1, spec.buckets + 1)[1:-1]))
                raw = [
                    str(int(np.searchsorted(edges, x, side="right"))) if o else None
                    for x, o in zip(nums, ok, strict=True)
                ]
            else:
                raw = [None] * n
        else:
            raw = [_raw_label(v, spec) for v in values]
        counts = Counter(r for r in raw if r is not None)
        vocab = {lab: i for i, lab in enumerate(sorted(lab for lab, c in counts.items() if c >= 2))}
        if not vocab:
            raise FacetError(
                f"facet {spec.name!r} (field {spec.field!r}, kind {spec.kind!r}): no label is "
                "held by at least 2 items"
            )
        out[h] = [vocab.get(r, -1) if r is not None else -1 for r in raw]
    return out
