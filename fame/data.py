"""Sequences as CSR arrays and vectorised construction of left-padded windows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

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

    def item_counts(self) -> np.ndarray:
        """(|V|+1,) occurrences of each item in the train parts: a sampled softmax's proposal."""
        return np.bincount(self.items, minlength=self.num_items + 1)


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
    """Shuffled left-padded (input, target) windows: input = train[:-1], target = train[1:].

    Each example is one user's train sequence, cut to its last ``length`` positions; users with
    fewer than two train items have no (input, target) pair and are skipped. (B, length) each.
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


class Packed(NamedTuple):
    """Several sequences per row, each in its own segment: (R, W) tensors.

    A sequence of n items sits in consecutive columns of one row with positions L-n .. L-1 (the
    same right-aligned positions it has in a left-padded window) and a segment id that is unique
    in the batch; 0 marks padding. Attention never crosses segments, so the model computes exactly
    what it computes on the padded windows, without spending most of its work on padding.
    """

    items: torch.Tensor  # (R, W) input items
    targets: torch.Tensor  # (R, W) next items, 0 = no loss
    positions: torch.Tensor  # (R, W) position ids in [0, L)
    segments: torch.Tensor  # (R, W) segment ids, 0 = padding


def first_fit_rows(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """First-fit-decreasing bin packing: (row, first column) of each sequence in rows of ``width``.

    Bin packing is sequential by nature; the loop runs over one batch (a few hundred small ints).
    """
    row = np.empty(len(lengths), dtype=np.int64)
    col = np.empty(len(lengths), dtype=np.int64)
    room = np.empty(len(lengths), dtype=np.int64)  # free columns of each opened row
    opened = 0
    for b in np.argsort(-lengths, kind="stable").tolist():
        n = lengths[b]
        fits = np.flatnonzero(room[:opened] >= n)
        r = int(fits[0]) if len(fits) else opened
        if r == opened:
            room[r] = width
            opened += 1
        row[b], col[b] = r, width - room[r]
        room[r] -= n
    return row, col


def pack(inp: torch.Tensor, tgt: torch.Tensor, max_len: int) -> Packed:
    """Pack left-padded (B, T) windows into as few rows as first-fit-decreasing allows."""
    inp_np, tgt_np = inp.numpy(), tgt.numpy()
    B, T = tgt_np.shape
    lengths = (tgt_np > 0).sum(1)  # (B,) inputs and targets have the same padding
    width = max(int(lengths.max(initial=0)), 1)
    row, col = first_fit_rows(lengths, width)
    b, j = np.nonzero(tgt_np > 0)  # real positions, row-major: in order within each sequence
    k = j - (T - lengths[b])  # index inside the sequence
    r, c = row[b], col[b] + k
    R = int(row.max(initial=-1)) + 1
    out = np.zeros((4, R, width), dtype=np.int64)
    out[0, r, c] = inp_np[b, j]
    out[1, r, c] = tgt_np[b, j]
    out[2, r, c] = max_len - lengths[b] + k
    out[3, r, c] = b + 1
    return Packed(*torch.from_numpy(out))
