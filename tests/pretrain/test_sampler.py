"""Label-balanced batches: m labels × k items, every anchor has a positive, seeded."""

import numpy as np
import pytest

from pretrain.sampler import BalancedSampler

# label 0: 5 items, 1: 4, 2: singleton, 3: 6, 4: 4, 5: 2 ; -1: missing
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, -1, -1, 5, 5])


def test_batches_are_m_labels_by_k_items_with_positives():
    s = BalancedSampler(LABELS, labels_per_batch=3, items_per_label=2, seed=0)
    assert s.batch_size == 6
    seen = set()
    for _ in range(200):
        batch = s.sample()
        assert len(batch) == 6 and len(set(batch.tolist())) == 6  # no item twice
        lab = LABELS[batch]
        assert lab.reshape(3, 2).tolist() == [[x, x] for x in lab[::2]]  # grouped by label
        assert len(set(lab.tolist())) == 3
        assert all((lab == x).sum() >= 2 for x in lab)  # every anchor has a positive
        assert not set(lab.tolist()) & {-1, 2}  # missing and singleton labels never drawn
        seen.update(lab.tolist())
    assert seen == {0, 1, 3, 4, 5}  # every usable label takes part


def test_seeded():
    a, b, c = (BalancedSampler(LABELS, 2, 3, seed=s) for s in (7, 7, 8))
    runs_a = [a.sample() for _ in range(10)]
    assert all(np.array_equal(x, b.sample()) for x in runs_a)
    assert not all(np.array_equal(x, c.sample()) for x in runs_a)


def test_small_labels_and_few_labels():
    s = BalancedSampler(LABELS, labels_per_batch=10, items_per_label=8, seed=0)
    batch = s.sample()
    # only 5 usable labels; a label with fewer than k items gives all of its items
    assert sorted(batch.tolist()) == sorted(np.flatnonzero(np.isin(LABELS, [0, 1, 3, 4, 5])))


def test_errors():
    with pytest.raises(ValueError, match="no label is held by at least 2 items"):
        BalancedSampler(np.array([0, 1, 2, -1]), 2, 2, seed=0)
    with pytest.raises(ValueError, match="items_per_label >= 2"):
        BalancedSampler(LABELS, 2, 1, seed=0)
