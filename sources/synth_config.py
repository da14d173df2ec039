"""``[data.synth]``, the synthetic generator's parameters, beside the generator that reads them.

``pipeline.config`` nests it in ``[data]``; it lives here so that the data package never imports
the DAG core above it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from fame.config import STRICT, Float, Int, NonNegFloat, NonNegInt, PosInt
from sources import synth_vocab


class SynthConfig(BaseModel):
    """``[data.synth]``: parameters of the synthetic dataset (docs/synthetic.md), demo size."""

    model_config = STRICT

    users: PosInt = Field(2000, description="number of users (exact)")
    items: PosInt = Field(1000, description="number of items (exact; at least 2 per subcategory)")
    interactions: PosInt = Field(
        30000, description="total interactions (exact; users * min_len to users * max_len)"
    )
    seed: NonNegInt = Field(0, description="same seed and parameters, same bytes")
    categories: Int = Field(
        8, ge=1, le=synth_vocab.MAX_CATEGORIES, description="top-level categories"
    )
    subcategories: Int = Field(
        4, ge=1, le=synth_vocab.MAX_SUBCATEGORIES, description="subcategories per category"
    )
    brands: Int = Field(
        40, ge=1, le=synth_vocab.MAX_BRANDS, description="brands, each at home in one category"
    )
    min_len: Int = Field(5, ge=3, description="shortest sequence")
    max_len: Int = Field(2000, ge=3, description="longest sequence")
    length_sigma: NonNegFloat = Field(
        1.0, description="lognormal sigma of the lengths above min_len (0 = all equal)"
    )
    popularity: NonNegFloat = Field(
        0.8, description="Zipf exponent of item popularity (0 = uniform)"
    )
    preference: NonNegFloat = Field(
        0.45, description="mixture weight: next item from the user's preferred categories"
    )
    transition: NonNegFloat = Field(
        0.45, description="mixture weight: next subcategory from the Markov matrix"
    )
    popular: NonNegFloat = Field(0.1, description="mixture weight: next item by global popularity")
    successors: PosInt = Field(
        3, description="non-zero entries per row of the subcategory Markov matrix"
    )
    taste: NonNegFloat = Field(
        4.0, description="how strongly brand/price/colour preferences pick among candidates"
    )
    clause_dropout: Float = Field(
        0.1, ge=0, lt=1, description="probability that a description leaves a facet out"
    )
    distractors: NonNegFloat = Field(
        1.0, description="mean number of facet-free phrases per description"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        n_sub = self.categories * self.subcategories
        checks = [
            (self.min_len <= self.max_len, f"min_len = {self.min_len} > max_len = {self.max_len}"),
            (
                self.users * self.min_len <= self.interactions <= self.users * self.max_len,
                f"interactions = {self.interactions} must lie in [users * min_len, users * "
                f"max_len] = [{self.users * self.min_len}, {self.users * self.max_len}]",
            ),
            (
                self.items >= 2 * n_sub,
                f"items = {self.items} must be at least 2 per subcategory (2 * categories * "
                f"subcategories = {2 * n_sub})",
            ),
            (
                self.brands >= self.categories,
                f"brands = {self.brands} must be at least categories = {self.categories}",
            ),
            (
                self.successors <= max(1, n_sub - 1),
                f"successors = {self.successors} must be at most the other subcategories "
                f"({max(1, n_sub - 1)})",
            ),
            (
                self.preference + self.popular > 0,
                "preference + popular must be > 0 (a sequence's first item needs one of them)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self
