"""Facet labels from metadata: every kind on hand-made data, rare labels, errors."""

import math

import numpy as np
import pytest

from pretrain.facets import FacetError, FacetSpec, derive_labels, validate_facets

COLS = {
    "year": [1995, 1991, 1988, 1999, None, 2001, "1993", 1994.0],
    "genres": [
        ["Action", "Crime"],
        ["Action"],
        ["Comedy", "Action"],
        ["Comedy"],
        ["Drama"],
        [],
        "Comedy Drama",  # a RecBole token_seq left as text
        None,
    ],
    "cats": [
        ["Beauty", "Makeup", "Lips"],
        ["Beauty", "Skin", "Face"],
        ["Beauty", "Makeup", "Eyes"],
        ["Tools", "Brushes", "Eyes"],
        ["Beauty"],
        None,
        ["Beauty", "Makeup"],
        [],
    ],
    "price": [1.0, 2.0, 3.0, 4.0, None, 6.0, math.nan, 8.0],
    "brand": ["a", "b", "a", "c", "b", None, "", math.nan],
}


def labels_of(**spec) -> list[int]:
    return derive_labels(COLS, [FacetSpec(name="f", **spec)])[0].tolist()


def test_decade():
    # 1990s (five items, incl. "1993" and 1994.0); 1980s and 2000s are held once: missing
    assert labels_of(field="year", kind="decade") == [0, 0, -1, 0, -1, -1, 0, 0]


def test_first_and_last():
    # first: Action, Action, Comedy, Comedy, Drama (once), -, Comedy, -
    assert labels_of(field="genres", kind="first") == [0, 0, 1, 1, -1, -1, 1, -1]
    # last: Crime (once), Action, Action, Comedy (once), Drama, -, Drama, -
    assert labels_of(field="genres", kind="last") == [-1, 0, 0, -1, 1, -1, 1, -1]


def test_set_groups_identical_sets_in_any_order():
    cols = {"g": [["A", "B"], ["B", "A"], ["A"], ["C"], "B A", ["A", "A", "B"]]}
    assert derive_labels(cols, [FacetSpec(name="s", field="g", kind="set")])[0].tolist() == [
        0,
        0,
        -1,
        -1,
        0,
        0,
    ]


def test_level_of_a_category_path():
    # level 1: Makeup ×3, Skin, Brushes (once each)
    assert labels_of(field="cats", kind="level", level=1) == [0, -1, 0, -1, -1, -1, 0, -1]
    # level -1 = the leaf: Lips, Face, Eyes ×2, Beauty (a one-level path), Makeup
    assert labels_of(field="cats", kind="level", level=-1) == [-1, -1, 0, 0, -1, -1, -1, -1]
    assert labels_of(field="cats", kind="level", level=0) == [0, 0, 0, -1, 0, -1, 0, -1]


def test_categorical_skips_missing_values():
    assert labels_of(field="brand") == [0, 1, 0, -1, 1, -1, -1, -1]


def test_bucket_quantiles():
    got = labels_of(field="price", kind="bucket", buckets=2)
    # numbers 1 2 3 4 6 8, median 3.5: {1,2,3} low, {4,6,8} high; None and NaN missing
    assert got == [0, 0, 0, 1, -1, 1, -1, 1]
    # equal values share a bucket even when a quantile edge falls among them
    cols = {"p": [5, 5, 5, 5, 1, 9, 9]}
    codes = derive_labels(cols, [FacetSpec(name="p", field="p", kind="bucket", buckets=4)])[0]
    assert len(set(codes[:4].tolist())) == 1


def test_several_facets_stack_in_order():
    specs = [
        FacetSpec(name="g", field="genres", kind="first"),
        FacetSpec(name="d", field="year", kind="decade"),
    ]
    labels = derive_labels(COLS, specs)
    assert labels.shape == (2, 8) and labels.dtype == np.int64
    assert labels[1].tolist() == labels_of(field="year", kind="decade")


def test_errors_name_facet_and_field():
    with pytest.raises(
        FacetError, match="facet 'x': field 'nope' does not exist; item fields are year, genres"
    ):
        derive_labels(COLS, [FacetSpec(name="x", field="nope")])
    with pytest.raises(FacetError, match="facet 'only' .* no label is held by at least 2 items"):
        derive_labels({"f": ["a", "b", "c", None]}, [FacetSpec(name="only", field="f")])
    with pytest.raises(FacetError, match="unique"):
        validate_facets(["a"], [FacetSpec(name="x", field="a"), FacetSpec(name="x", field="a")])
    with pytest.raises(FacetError, match="differ in length"):
        derive_labels({"a": [1, 1], "b": [1]}, [FacetSpec(name="x", field="a")])
    with pytest.raises(ValueError, match="buckets"):
        FacetSpec(name="x", field="a", kind="bucket", buckets=1)
    with pytest.raises(ValueError, match="Unexpected keyword"):
        FacetSpec(name="x", field="a", kinds="set")


def _same_partition(codes: np.ndarray, values: list) -> bool:
    """Codes and reference values group the items identically (a bijection value <-> code)."""
    pairs = set(zip(codes.tolist(), values, strict=True))
    return len(pairs) == len(set(values)) == len(set(codes.tolist()))


def test_large_catalogue_labels_match_a_per_item_reference():
    """50k items, every kind vectorised: each facet's codes group the items exactly as a plain
    per-item reading of the spec does (speed belongs to bench/, not here)."""
    n = 50_000
    rng = np.random.default_rng(0)
    cols = {
        "genres": [[f"g{rng.integers(30)}", f"g{rng.integers(30)}"] for _ in range(n)],
        "year": rng.integers(1920, 2020, n).tolist(),
        "price": rng.random(n).tolist(),
    }
    specs = [
        FacetSpec(name="a", field="genres", kind="first"),
        FacetSpec(name="b", field="genres", kind="set"),
        FacetSpec(name="c", field="year", kind="decade"),
        FacetSpec(name="d", field="price", kind="bucket"),
    ]
    labels = derive_labels(cols, specs)
    assert labels.shape == (4, n) and (labels >= 0).all()
    assert _same_partition(labels[0], [g[0] for g in cols["genres"]])
    assert _same_partition(labels[1], [frozenset(g) for g in cols["genres"]])
    assert _same_partition(labels[2], [y // 10 for y in cols["year"]])
    # buckets: 5 quantile bins, ordered by price, of about n/5 items each
    price = np.array(cols["price"])
    order = np.argsort(price)
    ranks = np.unique(labels[3], return_inverse=True)[1]
    assert len(set(labels[3].tolist())) == 5
    by_price = ranks[order]
    first = {b: int(np.flatnonzero(by_price == b)[0]) for b in set(by_price.tolist())}
    bins = sorted(first, key=first.get)  # bins in price order; each is one contiguous run
    for b in bins:
        where = np.flatnonzero(by_price == b)
        assert where[-1] - where[0] + 1 == len(where)
        assert abs(len(where) - n / 5) < n / 50
