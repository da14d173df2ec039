"""The leave-one-out split streamed from a ``sequences`` Parquet file, one window of row groups
at a time: what training and evaluation hold is set by the window, not by the number of users.

A row group is a block (``fame.data``); ingest writes ``BLOCK_USERS`` users per row group, so a
streamed source and the same split held whole (``SplitData``) cut the same blocks and give the
same batches. A file with other row groups still streams, block = row group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fame.data import SplitData

COLUMNS = ["user_id", "train_items", "valid_item", "test_item"]


def split_from_table(table: pa.Table, num_items: int) -> SplitData:
    """A ``sequences`` table as CSR arrays: one copy of the train items, flattened straight
    from the Arrow chunks (no combine, no astype), offsets from the list lengths."""
    train = table["train_items"]
    lengths = pc.list_value_length(train).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return SplitData(
        user_ids=_int64(table["user_id"]),
        offsets=offsets,
        items=_int64(pc.list_flatten(train)),
        valid=_int64(table["valid_item"]),
        test=_int64(table["test_item"]),
        num_items=num_items,
    )


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy().astype(np.int64, copy=False)


class ParquetSequences:
    """``fame.data.Sequences`` over a Parquet file; opening it reads the train lengths and the
    item counts in one pass over the row groups (memory: one row group)."""

    def __init__(
        self, path: str | Path, num_items: int, held_out: np.ndarray | None = None
    ) -> None:
        """``held_out``: items kept out of training (the cold-start protocol), never a
        training candidate."""
        self.path, self.num_items = Path(path), num_items
        self.held_out = np.zeros(0, np.int64) if held_out is None else np.asarray(held_out)
        self._file = pq.ParquetFile(self.path)
        missing = set(COLUMNS) - set(self._file.schema_arrow.names)
        if missing:
            raise ValueError(f"{self.path}: no column(s) {sorted(missing)} in a sequences file")
        meta = self._file.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._bounds = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._bounds[1:])
        lengths, self._counts = [], np.zeros(num_items + 1, dtype=np.int64)
        for g in range(meta.num_row_groups):
            train = self._file.read_row_group(g, columns=["train_items"])["train_items"]
            lengths.append(pc.list_value_length(train).to_numpy(zero_copy_only=False))
            self._counts += np.bincount(_int64(pc.list_flatten(train)), minlength=num_items + 1)
        self._lengths = np.concatenate(lengths or [np.zeros(0, np.int64)]).astype(np.int64)
        pa.default_memory_pool().release_unused()

    @property
    def num_users(self) -> int:
        return int(self._bounds[-1])

    def train_lengths(self) -> np.ndarray:
        return self._lengths

    def block_bounds(self) -> np.ndarray:
        return self._bounds

    def item_counts(self) -> np.ndarray:
        return self._counts

    def take_blocks(self, blocks: np.ndarray) -> SplitData:
        groups = [self._file.read_row_group(int(b), columns=COLUMNS) for b in blocks]
        table = pa.concat_tables(groups) if groups else self._file.schema_arrow.empty_table()
        data = split_from_table(table.select(COLUMNS), self.num_items)
        del table, groups
        pa.default_memory_pool().release_unused()  # the allocator keeps freed blocks otherwise
        return data

    def whole(self) -> SplitData:
        """Every block at once (what needs the whole split: reports, a data-parallel job)."""
        return self.take_blocks(np.arange(len(self._bounds) - 1))
