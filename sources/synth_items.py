"""The synthetic catalogue: items with true facets, a skewed popularity and noisy descriptions.

Facets are drawn so that they depend on each other the way shop data does (a brand sells
mostly in one category and at one price tier), and the description is built from the values
with synonyms, shuffled clauses, left-out clauses and distractor phrases, so that a text
encoder can recover the facets only approximately. docs/synthetic.md states the process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sources.synth_config import SynthConfig
from sources.synth_vocab import COLOURS, DISTRACTORS, PHRASES, PRICE_BANDS, TAXONOMY, brand_name

BRAND_LOYALTY = 0.9  # share of an item's brand drawn among the brands at home in its category
PRICE_SHIFT = (0.15, 0.7, 0.15)  # P(price band = brand tier -1, +0, +1), clipped to the bands
MAX_DISTRACTORS = 3
FACETS = ("subcategory", "category", "brand", "price_band", "colour")  # the clause kinds


@dataclass
class Catalogue:
    """Item facets as integer codes (item i is row i, item id i + 1) and their names."""

    category: np.ndarray  # (I,) category index
    subcategory: np.ndarray  # (I,) global subcategory index: category * subcategories + j
    brand: np.ndarray  # (I,)
    price_band: np.ndarray  # (I,) 0 = cheapest
    colour: np.ndarray  # (I,)
    popularity: np.ndarray  # (I,) float64, sums to 1
    brand_home: np.ndarray  # (B,) the category each brand mostly sells in
    labels: dict[str, list[str]]  # facet -> the canonical value of each code
    synonyms: dict[str, list[tuple[str, ...]]]  # facet -> the words the text uses per code

    @property
    def n_subcategories(self) -> int:
        return len(self.labels["subcategory"])

    def codes(self, facet: str) -> np.ndarray:
        return getattr(self, facet)


def vocabulary(p: SynthConfig) -> dict[str, dict[str, tuple[str, ...]]]:
    """facet -> {canonical value: synonyms}, in code order: the first categories of the
    taxonomy, the first subcategories of each, the first brand names."""
    cats = list(TAXONOMY.items())[: p.categories]
    return {
        "category": {name: syns for name, (syns, _) in cats},
        "subcategory": {
            name: syns
            for _, (_, subs) in cats
            for name, syns in list(subs.items())[: p.subcategories]
        },
        "brand": {brand_name(b): (brand_name(b),) for b in range(p.brands)},
        "price_band": PRICE_BANDS,
        "colour": COLOURS,
    }


def make_catalogue(p: SynthConfig, rng: np.random.Generator) -> Catalogue:
    """Facets and popularity of every item (docs/synthetic.md, "Catalogue" 1-4)."""
    vocab = vocabulary(p)
    n_sub, n_items = p.categories * p.subcategories, p.items
    # every subcategory holds two items (so each label can be learned), the rest by share
    share = rng.dirichlet(np.full(n_sub, 5.0))
    sub = np.concatenate(
        [np.repeat(np.arange(n_sub), 2), rng.choice(n_sub, n_items - 2 * n_sub, p=share)]
    )
    sub = rng.permutation(sub)
    category = sub // p.subcategories
    # brands: one at home in each category, the others anywhere; each has a price tier
    home = np.concatenate(
        [np.arange(p.categories), rng.integers(0, p.categories, p.brands - p.categories)]
    )
    tier = rng.integers(0, len(PRICE_BANDS), p.brands)
    by_home = np.argsort(home, kind="stable")
    counts = np.bincount(home, minlength=p.categories)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    local = by_home[starts[category] + (rng.random(n_items) * counts[category]).astype(np.int64)]
    brand = np.where(rng.random(n_items) < BRAND_LOYALTY, local, rng.integers(0, p.brands, n_items))
    shift = rng.choice(3, n_items, p=PRICE_SHIFT) - 1
    price = np.clip(tier[brand] + shift, 0, len(PRICE_BANDS) - 1)
    colour = rng.integers(0, len(COLOURS), n_items)
    # Zipf-like popularity over a random ranking of the items
    weight = (rng.permutation(n_items) + 1.0) ** -p.popularity
    return Catalogue(
        category=category,
        subcategory=sub,
        brand=brand,
        price_band=price,
        colour=colour,
        popularity=weight / weight.sum(),
        brand_home=home,
        labels={f: list(v) for f, v in vocab.items()},
        synonyms={f: list(v.values()) for f, v in vocab.items()},
    )


def _phrase_table(synonyms: list[tuple[str, ...]], phrases: tuple[str, ...]) -> np.ndarray:
    """(values, 3, phrasings) object array of rendered clauses; short synonym lists repeat."""
    table = np.empty((len(synonyms), 3, len(phrases)), dtype=object)
    for v, syns in enumerate(synonyms):
        for s in range(3):
            for t, phrase in enumerate(phrases):
                table[v, s, t] = phrase.format(syns[s % len(syns)])
    return table


def describe(cat: Catalogue, p: SynthConfig, rng: np.random.Generator) -> tuple[pa.Array, pa.Array]:
    """(titles, descriptions): a title "<brand> <noun>"; a description of shuffled clauses, one
    per facet (each left out with probability ``clause_dropout``, the noun kept when all
    would be) plus Poisson(``distractors``) facet-free phrases."""
    n = len(cat.subcategory)
    clauses = np.full((n, len(FACETS) + MAX_DISTRACTORS), None, dtype=object)
    nouns = None
    for k, facet in enumerate(FACETS):
        codes = cat.codes(facet)
        synonym = rng.integers(0, 3, n)
        table = _phrase_table(cat.synonyms[facet], PHRASES[facet])
        clauses[:, k] = table[codes, synonym, rng.integers(0, len(PHRASES[facet]), n)]
        if facet == "subcategory":
            nouns = _phrase_table(cat.synonyms[facet], ("{}",))[codes, synonym, 0]
    dropped = rng.random((n, len(FACETS))) < p.clause_dropout
    dropped[dropped.all(axis=1), 0] = False
    clauses[:, : len(FACETS)][dropped] = None
    n_distract = np.minimum(rng.poisson(p.distractors, n), MAX_DISTRACTORS)
    words = np.array(DISTRACTORS, dtype=object)[
        rng.integers(0, len(DISTRACTORS), (n, MAX_DISTRACTORS))
    ]
    words[np.arange(MAX_DISTRACTORS)[None, :] >= n_distract[:, None]] = None
    clauses[:, len(FACETS) :] = words
    order = np.argsort(rng.random(clauses.shape), axis=1)
    clauses = np.take_along_axis(clauses, order, axis=1)
    columns = [pa.array(clauses[:, j], pa.string()) for j in range(clauses.shape[1])]
    text = pc.binary_join_element_wise(*columns, ". ", null_handling="skip")
    text = pc.binary_join_element_wise(text, pa.scalar("."), "")
    brands = np.array(cat.labels["brand"], dtype=object)[cat.brand]
    title = pc.binary_join_element_wise(
        pa.array(brands, pa.string()), pa.array(nouns, pa.string()), " "
    )
    return title, text


def items_table(cat: Catalogue, p: SynthConfig, rng: np.random.Generator) -> pa.Table:
    """One row per item: id, title, description and the canonical facet values as strings."""
    title, description = describe(cat, p, rng)
    columns: dict[str, pa.Array] = {
        "item_id": pa.array(np.arange(1, len(cat.subcategory) + 1, dtype=np.int64)),
        "title": title,
        "description": description,
    }
    for facet in ("category", "subcategory", "brand", "price_band", "colour"):
        labels = np.array(cat.labels[facet], dtype=object)
        columns[facet] = pa.array(labels[cat.codes(facet)], pa.string())
    return pa.table(columns)
