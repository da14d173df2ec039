"""Dense vectors in Parquet: a (n, d) float32 matrix <-> a fixed-size-list column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) -> fixed_size_list<float32>[d] (queryable in DuckDB as FLOAT[d])."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def from_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """fixed_size_list column -> (n, d) float32 matrix (a copy, writable)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    dim = column.type.list_size if pa.types.is_fixed_size_list(column.type) else -1
    if len(column) == 0:  # reshape(0, -1) is ambiguous: the type knows d
        return np.zeros((0, max(dim, 0)), dtype=np.float32)
    return np.array(flat, dtype=np.float32).reshape(len(column), dim)
