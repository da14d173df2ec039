"""CSR windows, training batches and packing."""

import numpy as np
import torch

from fame.data import SplitData, first_fit_rows, pack, train_batches, windows


def _split() -> SplitData:
    train = [[1, 2, 3, 4], [5], [6, 7], [8, 9, 10, 11, 12, 13]]
    return SplitData(
        user_ids=np.arange(1, 5),
        offsets=np.cumsum([0] + [len(t) for t in train]),
        items=np.concatenate(train),
        valid=np.array([14, 15, 16, 17]),
        test=np.array([18, 19, 20, 21]),
        num_items=21,
    )


def test_windows_left_pad_and_truncate():
    items = np.array([1, 2, 3, 4, 5, 6, 7])
    out = windows(items, np.array([0, 3, 5]), np.array([3, 5, 7]), 2)
    assert out.tolist() == [[2, 3], [4, 5], [6, 7]]
    out = windows(items, np.array([0, 3]), np.array([3, 4]), 4)
    assert out.tolist() == [[0, 1, 2, 3], [0, 0, 0, 4]]


def test_split_inputs_add_the_valid_item_for_test():
    data = _split()
    offsets, items = data.inputs("valid")
    assert items[offsets[3] : offsets[4]].tolist() == [8, 9, 10, 11, 12, 13]
    offsets, items = data.inputs("test")
    rows = [items[offsets[u] : offsets[u + 1]].tolist() for u in range(4)]
    assert rows == [[1, 2, 3, 4, 14], [5, 15], [6, 7, 16], [8, 9, 10, 11, 12, 13, 17]]
    assert data.targets("test").tolist() == [18, 19, 20, 21]


def test_train_batches_shift_by_one_skip_short_users_and_are_seeded():
    data = _split()
    batches = list(train_batches(data, 4, 2, torch.Generator().manual_seed(0)))
    pairs = {
        tuple(i.tolist()): t.tolist() for inp, tgt in batches for i, t in zip(inp, tgt, strict=True)
    }
    assert pairs == {  # user 2 (one train item) has no pair; windows keep the last 4 positions
        (0, 1, 2, 3): [0, 2, 3, 4],
        (0, 0, 0, 6): [0, 0, 0, 7],
        (9, 10, 11, 12): [10, 11, 12, 13],
    }
    again = list(train_batches(data, 4, 2, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


def test_first_fit_rows_never_overflow():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 31, 300)
    row, col = first_fit_rows(lengths, 30)
    used = np.zeros((row.max() + 1, 30), dtype=int)
    for r, c, n in zip(row, col, lengths, strict=True):
        used[r, c : c + n] += 1
    assert (used <= 1).all() and used.sum() == lengths.sum() and (col + lengths <= 30).all()
    assert row.max() + 1 <= int(np.ceil(lengths.sum() / 30 * 1.25))  # close to the lower bound


def test_pack_keeps_every_sequence_whole_with_right_aligned_positions():
    data = _split()
    inp, tgt = next(train_batches(data, 5, 8, torch.Generator().manual_seed(1)))
    p = pack(inp, tgt, max_len=5)
    assert p.items.shape == (2, 5)  # rows as wide as the longest sequence (5 pairs): 5 + 3 + 1
    seqs = {}
    for r in range(p.items.shape[0]):
        for c in range(p.items.shape[1]):
            s = int(p.segments[r, c])
            if s:
                seqs.setdefault(s, []).append(
                    (int(p.items[r, c]), int(p.targets[r, c]), int(p.positions[r, c]))
                )
    for b in range(len(inp)):
        real = tgt[b] > 0
        n = int(real.sum())
        expect = list(
            zip(inp[b][real].tolist(), tgt[b][real].tolist(), range(5 - n, 5), strict=True)
        )
        assert seqs[b + 1] == expect
    assert ((p.segments == 0) == (p.targets == 0)).all()
