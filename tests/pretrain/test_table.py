"""The initial item table assembled from the pretrain stage's vectors."""

import numpy as np
import pytest
import torch

from pretrain.table import initial_item_table


def _vectors(n=6, heads=2, d_prime=3, seed=0):
    rng = np.random.default_rng(seed)
    # slice 0 ten times the scale of slice 1, as PCA leaves it
    vec = rng.normal(size=(n, heads, d_prime)) * np.array([10.0, 1.0])[None, :, None]
    return (vec.reshape(n, -1) * 0.02 / vec.std()).astype(np.float32)


def test_rows_from_vectors_the_rest_random_padding_zero():
    ids, vec = np.array([1, 3, 4, 6, 7, 9]), _vectors()
    table = initial_item_table(ids, vec, 10, 0.02, 2, "table", seed=5)
    assert table.shape == (11, 6)
    np.testing.assert_array_equal(table[ids].numpy(), vec)
    assert torch.count_nonzero(table[0]) == 0
    others = table[[2, 5, 8, 10]]
    gen = torch.Generator().manual_seed(5)
    want = torch.randn(11, 6, generator=gen) * 0.02  # the rows random init would have drawn
    torch.testing.assert_close(others, want[[2, 5, 8, 10]])
    again = initial_item_table(ids, vec, 10, 0.02, 2, "table", seed=5)
    assert torch.equal(table, again)


def test_slice_scale_gives_each_head_the_init_std():
    ids, vec = np.arange(1, 7), _vectors()
    whole = initial_item_table(ids, vec, 6, 0.02, 2, "table", seed=0)[1:].reshape(6, 2, 3)
    assert whole.std(dim=(0, 2), correction=0)[0] > 5 * whole.std(dim=(0, 2), correction=0)[1]
    sliced = initial_item_table(ids, vec, 6, 0.02, 2, "slice", seed=0)[1:].reshape(6, 2, 3)
    np.testing.assert_allclose(sliced.std(dim=(0, 2), correction=0).numpy(), 0.02, rtol=1e-5)
    # directions within a slice are kept: a per-slice rescale, nothing else
    ratio = (sliced / whole).numpy()
    assert np.allclose(ratio, ratio[:1, :, :1], rtol=1e-4)


def test_bad_ids_fail():
    with pytest.raises(IndexError):
        initial_item_table(np.array([1, 99]), _vectors(n=2), 5, 0.02, 2, "table", seed=0)
