"""Sequences as CSR arrays and vectorised construction of left-padded windows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch


@dataclass
class SplitData:
    """Chronological leave-one-out split; ``items[offsets[u]:offsets[u+1]]`` is u's train part."""

    user_ids: np.ndarray  # (U,) int64
    offsets: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (sum,) int64 in 1..num_items
    valid: np.ndarray  # (U,) int64
    test: np.ndarray  # (U,) int64
    num_items: int

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.user_ids) + 1:
            raise ValueError("offsets must have one more entry than user_ids")

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def inputs(self, split: Literal["valid", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, items) of each user's input history for a split (test adds the valid item)."""
        if split == "valid":
            return self.offsets, self.items
        lengths = np.diff(self.offsets)
        new_offsets = self.offsets + np.arange(len(self.offsets))
        out = np.empty(len(self.items) + self.num_users, dtype=np.int64)
        pos = np.arange(len(self.items)) + np.repeat(np.arange(self.num_users), lengths)
        out[pos] = self.items
        out[new_offsets[1:] - 1] = self.valid
        return new_offsets, out

    def targets(self, split: Literal["valid", "test"]) -> np.ndarray:
        return self.valid if split == "valid" else self.test


def windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Left-padded (R, length) windows holding the last ``length`` items of ``items[starts:ends]``."""
    starts = np.maximum(starts, ends - length)
    n = ends - starts  # (R,)
    col = np.arange(length)[None, :]  # (1, L)
    pad = length - n[:, None]  # (R, 1)
    mask = col >= pad
    idx = starts[:, None] + col - pad  # index into items where mask holds
    out = np.zeros((len(starts), length), dtype=np.int64)
    out[mask] = items[idx[mask]]
    return out


def history_windows(
    offsets: np.ndarray, items: np.ndarray, rows: np.ndarray, length: int
) -> np.ndarray:
    """The last ``length`` items of each row (evaluation inputs)."""
    return windows(items, offsets[rows], offsets[rows + 1], length)


def train_batches(
    data: SplitData, length: int, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (input, target) batches: input = train[:-1], target = train[1:], last L positions.

    Users with fewer than two train items have no (input, target) pair and are skipped.
    """
    lengths = np.diff(data.offsets)
    users = np.flatnonzero(lengths >= 2)
    order = users[torch.randperm(len(users), generator=generator).numpy()]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        s, e = data.offsets[rows], data.offsets[rows + 1]
        inp = windows(data.items, s, e - 1, length)
        tgt = windows(data.items, s + 1, e, length)
        yield torch.from_numpy(inp), torch.from_numpy(tgt)
