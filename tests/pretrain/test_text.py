"""Item text templates: missing values drop gracefully, unknown fields fail, cache hash."""

import math

import pytest

from pretrain.text import render_texts, template_fields, text_hash

TEMPLATE = "{title} ({year}). Genres: {genres}."
ROWS = [
    {"title": "Toy Story", "year": 1995, "genres": ["Animation", "Comedy"]},
    {"title": "Heat", "year": None, "genres": ["Action"]},
    {"title": "Heat", "year": 1995.0, "genres": []},
    {"title": None, "year": "1995", "genres": ["Drama"]},
    {"title": " ", "year": math.nan, "genres": None},
]


def test_template_and_missing_fields():
    assert render_texts(ROWS, TEMPLATE) == [
        "Toy Story (1995). Genres: Animation, Comedy.",
        "Heat. Genres: Action.",  # the empty "()" disappears
        "Heat (1995).",  # the whole "Genres: ." segment disappears
        "(1995). Genres: Drama.",
        None,  # nothing to say about this item
    ]
    assert not any("None" in t or "nan" in t for t in render_texts(ROWS, TEMPLATE) if t)


def test_optional_sections_of_the_shipped_configs():
    assert render_texts(ROWS, "{title}[ ({year})][. Genres: {genres}]") == [
        "Toy Story (1995). Genres: Animation, Comedy",
        "Heat. Genres: Action",
        "Heat (1995)",
        "(1995). Genres: Drama",
        None,
    ]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{title}, {year}, {genres}", "Heat, Action"),
        ("{title} - {year} - {genres}", "Heat - Action"),
        ("{title} ({year}, {genres})", "Heat (Action)"),
        ("Title: {title}\nYear: {year}\nGenres: {genres}", "Title: Heat Genres: Action"),
    ],
)
def test_separators_tidied(template, expected):
    assert render_texts([ROWS[1]], template) == [expected]


def test_values_are_never_altered_and_template_text_is_exact_when_complete():
    row = {"title": "Odd (,) {x} [y]  title", "brand": "a - - b"}
    assert render_texts([row], "{title} , by {brand} .") == ["Odd (,) {x} [y] title , by a - - b ."]
    assert render_texts([{"title": "A"}], "Movie {{x}}: {title}.") == ["Movie {x}: A."]


def test_unknown_fields_and_bad_templates():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['brand'\].*genres.*title.*year"):
        render_texts(ROWS, "{title} {brand}")
    with pytest.raises(ValueError, match="names no"):
        render_texts(ROWS, "just text")
    with pytest.raises(ValueError, match="must name a field"):
        render_texts(ROWS, "{} {title}")
    with pytest.raises(ValueError, match="not supported"):
        render_texts(ROWS, "{year:.0f}")
    assert template_fields(TEMPLATE) == ["title", "year", "genres"]
    # the cheap precheck the pipeline runs: one row of field names, all empty
    assert render_texts([dict.fromkeys(["title", "year", "genres"])], TEMPLATE) == [None]


def test_text_hash_is_stable_sha256():
    assert text_hash("a") == text_hash("a") != text_hash("b")
    assert text_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
