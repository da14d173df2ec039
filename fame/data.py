"""Sequences as CSR arrays, read whole or block by block, and vectorised construction of
left-padded windows.

Users come in blocks (``BLOCK_USERS`` consecutive users; a streamed source's blocks are the row
groups of its Parquet file). Training and evaluation hold a window of whole blocks at a time, so
their memory is set by ``window`` users, not by the number of users; data that fits in one window
is shuffled and ranked as a whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np
import torch

from fame.config import BLOCK_USERS, WINDOW_USERS


class Sequences(Protocol):
    """What training and evaluation read: the split whole (``SplitData``) or streamed
    (``fame.streaming.ParquetSequences``); both give the same batches for the same blocks."""

    num_items: int
    held_out: np.ndarray  # item ids kept out of training (cold-start protocol): no candidates

    @property
    def num_users(self) -> int: ...

    def train_lengths(self) -> np.ndarray:
        """(U,) length of each user's train part."""
        ...

    def block_bounds(self) -> np.ndarray:
        """(K+1,) first user of each block, then U."""
        ...

    def take_blocks(self, blocks: np.ndarray) -> SplitData:
        """The users of ``blocks``, block after block in the order given."""
        ...

    def item_counts(self) -> np.ndarray:
        """(|V|+1,) occurrences of each item in the train parts: a sampled softmax's proposal."""
        ...


@dataclass
class SplitData:
    """Chronological leave-one-out split; ``items[offsets[u]:offsets[u+1]]`` is u's train part."""

    user_ids: np.ndarray  # (U,) int64
    offsets: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (sum,) int64 in 1..num_items
    valid: np.ndarray  # (U,) int64
    test: np.ndarray  # (U,) int64
    num_items: int
    block_users: int = BLOCK_USERS
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.user_ids) + 1:
            raise ValueError("offsets must have one more entry than user_ids")

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def train_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def block_bounds(self) -> np.ndarray:
        return np.append(np.arange(0, self.num_users, self.block_users), self.num_users)

    def take_blocks(self, blocks: np.ndarray) -> SplitData:
        bounds = self.block_bounds()
        if np.array_equal(blocks, np.arange(len(bounds) - 1)):
            return self  # every block in order: no copy
        return self.take(ranges(bounds[blocks], bounds[blocks + 1]))

    def take(self, rows: np.ndarray) -> SplitData:
        """The users ``rows``, in that order (one gather, no per-user loop)."""
        starts, lengths = self.offsets[rows], np.diff(self.offsets)[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = self.items[ranges(starts, starts + lengths)]
        sub = (self.user_ids[rows], offsets, items, self.valid[rows], self.test[rows])
        return SplitData(*sub, num_items=self.num_items, block_users=self.block_users)

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
        return np.bincount(self.items, minlength=self.num_items + 1)


def ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, e) for s, e in zip(starts, ends)])`` without the loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    return np.arange(total) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)


def parts(data: Sequences, window: int = WINDOW_USERS) -> Iterator[tuple[int, SplitData]]:
    """(first user, part) over consecutive runs of whole blocks of about ``window`` users."""
    bounds = data.block_bounds()
    per = _blocks_per_window(bounds, window)
    for b in range(0, len(bounds) - 1, per):
        yield int(bounds[b]), data.take_blocks(np.arange(b, min(b + per, len(bounds) - 1)))


def _blocks_per_window(bounds: np.ndarray, window: int) -> int:
    return max(1, window // max(int(np.diff(bounds).max(initial=1)), 1))


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


def num_batches(data: Sequences, batch_size: int) -> int:
    """Batches of ``train_batches`` per epoch: every batch is full but the last."""
    return -(-int((data.train_lengths() >= 2).sum()) // batch_size)


def train_batches(
    data: Sequences,
    length: int,
    batch_size: int,
    generator: torch.Generator,
    window: int = WINDOW_USERS,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled left-padded (input, target) windows: input = train[:-1], target = train[1:].

    Each example is one user's train sequence, cut to its last ``length`` positions; users with
    fewer than two train items have no (input, target) pair and are skipped. (B, length) each.
    Data of at most ``window`` users is shuffled as a whole; larger data is block-shuffled:
    the blocks in random order, ``window`` users of them read at a time and shuffled among
    themselves, batches running on across windows (only the epoch's last batch is short).
    """
    bounds = data.block_bounds()
    n_blocks, per = len(bounds) - 1, _blocks_per_window(bounds, window)
    if n_blocks <= per:  # one window: a plain shuffle of every user
        groups = [np.arange(n_blocks)]
    else:
        order = torch.randperm(n_blocks, generator=generator).numpy()
        groups = [order[b : b + per] for b in range(0, n_blocks, per)]
    pending: list[tuple[np.ndarray, np.ndarray]] = []  # fewer than batch_size rows in all
    held = 0
    for group in groups:
        part = data.take_blocks(group)
        users = np.flatnonzero(np.diff(part.offsets) >= 2)
        order = users[torch.randperm(len(users), generator=generator).numpy()]
        start = 0
        while start < len(order):  # the part's last rows open the next window's first batch
            rows = order[start : start + batch_size - held]
            start += len(rows)
            s, e = part.offsets[rows], part.offsets[rows + 1]
            inp, tgt = windows(part.items, s, e - 1, length), windows(part.items, s + 1, e, length)
            pending.append((inp, tgt))
            held += len(rows)
            if held == batch_size:
                yield _batch(pending)
                pending, held = [], 0
    if pending:
        yield _batch(pending)


def _batch(pending: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(pending) == 1:
        inp, tgt = pending[0]
    else:
        inp, tgt = (np.concatenate([p[i] for p in pending]) for i in (0, 1))
    return torch.from_numpy(inp), torch.from_numpy(tgt)


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
