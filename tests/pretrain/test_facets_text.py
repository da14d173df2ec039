import numpy as np
import pytest

from pretrain.config import FacetSpec
from pretrain.facets import FacetError, derive_labels
from pretrain.text import render_texts, text_hash

COLS = {
    "year": [1995, 1991, 1988, 1999, None, 2001],
    "genres": [["Action", "Crime"], ["Action"], ["Comedy", "Action"], ["Comedy"], ["Drama"], []],
    "cats": [
        ["Beauty", "Makeup"],
        ["Beauty", "Skin"],
        ["Beauty", "Makeup"],
        ["Tools"],
        ["Beauty"],
        None,
    ],
    "price": [1.0, 2.0, 3.0, 4.0, None, 6.0],
    "brand": ["a", "b", "a", "c", "b", None],
}


def labels_of(spec):
    codes = derive_labels(COLS, [spec])[0]
    return codes.tolist()


def test_kinds():
    assert labels_of(FacetSpec(name="dec", field="year", kind="decade")) == [
        0,
        0,
        -1,
        0,
        -1,
        -1,
    ]  # 1980s, 2000s: once
    assert labels_of(FacetSpec(name="g", field="genres", kind="first")) == [0, 0, 1, 1, -1, -1]
    assert labels_of(FacetSpec(name="lvl", field="cats", kind="level", level=1)) == [
        0,
        -1,
        0,
        -1,
        -1,
        -1,
    ]
    assert labels_of(FacetSpec(name="b", field="brand")) == [0, 1, 0, -1, 1, -1]
    buckets = labels_of(FacetSpec(name="p", field="price", kind="bucket", buckets=2))
    assert buckets[4] == -1 and buckets[0] == buckets[1] != buckets[5]


def test_set_kind_groups_identical_sets():
    cols = {"g": [["A", "B"], ["B", "A"], ["A"], ["C"]]}
    assert derive_labels(cols, [FacetSpec(name="s", field="g", kind="set")])[0].tolist() == [
        0,
        0,
        -1,
        -1,
    ]


def test_errors_name_facet_and_field():
    with pytest.raises(
        FacetError, match="facet 'x': field 'nope' does not exist; item fields are year"
    ):
        derive_labels(COLS, [FacetSpec(name="x", field="nope")])
    with pytest.raises(FacetError, match="facet 'only' .* no label is held by at least 2 items"):
        derive_labels({"f": ["a", "b", "c"]}, [FacetSpec(name="only", field="f")])


def test_render_texts():
    rows = [
        {"title": "Heat", "year": 1995, "genres": ["Action", "Crime"]},
        {"title": "Heat", "year": None, "genres": ["Action"]},
        {"title": None, "year": None, "genres": []},
    ]
    assert render_texts(rows, "{title}[ ({year})][. Genres: {genres}]") == [
        "Heat (1995). Genres: Action, Crime",
        "Heat. Genres: Action",
        None,
    ]
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['brand'\].*genres"):
        render_texts(rows, "{title} {brand}")


def test_text_hash_is_stable():
    assert text_hash("a") == text_hash("a") != text_hash("b")
    assert np.char.str_len(text_hash("a")) == 64
