"""The initial item table E of ``init = text | facet_pretrain`` (FAME_SPEC §6.7), assembled in
one place from the pretrain stage's vectors."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch


def initial_item_table(
    ids: np.ndarray,
    vectors: np.ndarray,
    num_items: int,
    init_std: float,
    heads: int,
    scale: Literal["table", "slice"],
    seed: int,
) -> torch.Tensor:
    """(num_items+1, d) E: row ``ids[i]`` = ``vectors[i]``; items without a vector (no text)
    keep a seeded N(0, init_std²) row, as under random init; row 0 (padding) is zero.

    ``vectors`` arrive at the default init's scale as a whole (§6.7); ``scale="slice"`` rescales
    each head's d'-slice to ``init_std`` on its own (PCA puts most of the variance in slice 0).
    The table is at gain 1: the train stage multiplies every method's table by ``init.gain``.
    """
    vec = np.asarray(vectors, dtype=np.float32)
    if scale == "slice":
        slices = vec.reshape(len(vec), heads, -1)  # (n, H, d')
        std = slices.std(axis=(0, 2), keepdims=True)
        vec = (slices * (init_std / np.maximum(std, 1e-12))).reshape(len(vec), -1)
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(num_items + 1, vec.shape[1], generator=gen) * init_std  # (|V|+1, d)
    table[torch.tensor(ids, dtype=torch.long)] = torch.tensor(vec, dtype=torch.float32)
    table[0] = 0
    return table
