"""Training and evaluation streamed from Parquet row groups, against the split held whole."""

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support import cyclic_split

from fame.config import EvalConfig, ModelConfig, TrainConfig
from fame.data import SplitData, num_batches, train_batches, windows
from fame.evaluate import evaluate, rank_chunks
from fame.model import SeqRecModel
from fame.streaming import ParquetSequences
from fame.trainer import fit

BLOCK = 16  # users per row group / block in these tests


def _ragged(num_users: int = 150, num_items: int = 60, seed: int = 3) -> SplitData:
    """Users of 1..20 train items (some too short to train on), blocks of ``BLOCK`` users."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 21, num_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SplitData(
        user_ids=np.arange(101, 101 + num_users, dtype=np.int64),
        offsets=offsets,
        items=rng.integers(1, num_items + 1, int(lengths.sum())).astype(np.int64),
        valid=rng.integers(1, num_items + 1, num_users).astype(np.int64),
        test=rng.integers(1, num_items + 1, num_users).astype(np.int64),
        num_items=num_items,
        block_users=BLOCK,
    )


def _write(data: SplitData, path, row_group_size: int = BLOCK) -> ParquetSequences:
    """``data`` as an ingest ``sequences`` file (its column names and types)."""
    train = [
        data.items[a:b].tolist() for a, b in zip(data.offsets[:-1], data.offsets[1:], strict=True)
    ]
    table = pa.table(
        {
            "user_id": data.user_ids,
            "train_items": pa.array(train, pa.list_(pa.int64())),
            "valid_item": data.valid,
            "test_item": data.test,
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return ParquetSequences(path, data.num_items)


def _epoch(data, window, seed=5, length=8, batch=10):
    gen = torch.Generator().manual_seed(seed)
    return list(train_batches(data, length, batch, gen, window=window))


@pytest.mark.parametrize("window", [16, 40, 64, 10_000])  # 1, 2 and 4 blocks, and all of them
def test_streamed_batches_equal_the_in_memory_batches(tmp_path, window):
    data = _ragged()
    streamed = _write(data, tmp_path / "sequences.parquet")
    assert streamed.block_bounds().tolist() == data.block_bounds().tolist()
    assert streamed.train_lengths().tolist() == data.train_lengths().tolist()
    assert streamed.item_counts().tolist() == data.item_counts().tolist()
    a, b = _epoch(data, window), _epoch(streamed, window)
    assert len(a) == len(b) == num_batches(data, 10)
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)


@pytest.mark.parametrize("window", [16, 40, 10_000])
def test_an_epoch_trains_every_user_once_in_full_batches_but_the_last(window):
    data = _ragged()
    batches = _epoch(data, window)
    assert [len(t) for t, _ in batches[:-1]] == [10] * (len(batches) - 1)
    got = torch.cat([torch.cat([i, t], 1) for i, t in batches]).numpy()
    users = np.flatnonzero(data.train_lengths() >= 2)
    s, e = data.offsets[users], data.offsets[users + 1]
    want = np.concatenate([windows(data.items, s, e - 1, 8), windows(data.items, s + 1, e, 8)], 1)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))


def test_block_shuffling_reads_one_window_at_a_time_and_varies_by_seed():
    data = _ragged()
    held = []
    take = data.take_blocks

    class Spy:  # the same split, recording how many users each read holds
        num_items, num_users = data.num_items, data.num_users
        train_lengths, block_bounds, item_counts = (
            data.train_lengths,
            data.block_bounds,
            data.item_counts,
        )

        def take_blocks(self, blocks):
            part = take(blocks)
            held.append(part.num_users)
            return part

    _epoch(Spy(), window=40)
    assert held and max(held) <= 40 and sum(held) == data.num_users
    first = [t for _, t in _epoch(data, 40, seed=1)]
    other = [t for _, t in _epoch(data, 40, seed=2)]
    assert not all(torch.equal(x, y) for x, y in zip(first, other, strict=True))


def test_one_window_is_the_plain_shuffle_of_every_user():
    """Data that fits in a window trains in exactly the order it always did (bench records of
    Beauty and Sports stay comparable): a reference of the plain shuffle, written out."""
    data = _ragged()
    gen = torch.Generator().manual_seed(5)
    users = np.flatnonzero(data.train_lengths() >= 2)
    order = users[torch.randperm(len(users), generator=gen).numpy()]
    for k, (_, tgt) in enumerate(_epoch(data, window=10_000)):
        rows = order[k * 10 : (k + 1) * 10]
        s, e = data.offsets[rows], data.offsets[rows + 1]
        assert tgt.numpy().tolist() == windows(data.items, s + 1, e, 8).tolist()


def test_take_gathers_users_in_the_order_given():
    data = _ragged()
    rows = np.array([7, 0, 149, 3])
    part = data.take(rows)
    for k, r in enumerate(rows):
        want = data.items[data.offsets[r] : data.offsets[r + 1]]
        assert part.items[part.offsets[k] : part.offsets[k + 1]].tolist() == want.tolist()
    assert part.user_ids.tolist() == data.user_ids[rows].tolist()
    assert part.valid.tolist() == data.valid[rows].tolist()


def test_streamed_fit_and_evaluation_equal_the_in_memory_ones(tmp_path):
    """The whole loop (batches, validation, early stopping) on the Parquet source, with windows
    smaller than the data, gives the in-memory run's losses, metrics and ranks."""
    data = replace(cyclic_split(num_users=120), block_users=BLOCK)
    streamed = _write(data, tmp_path / "sequences.parquet")
    cfg = TrainConfig(epochs=2, batch_size=32, seed=7, device="cpu", shuffle_window=48)
    spec = EvalConfig(batch_size=20)
    runs = []
    for source, work in ((data, "a"), (streamed, "b")):
        torch.manual_seed(0)
        model = SeqRecModel(ModelConfig(d=16, heads=2, experts=2, max_len=12), data.num_items)
        res = fit(model, source, cfg, tmp_path / work, progress=False, spec=spec)
        runs.append((res, evaluate(model, source, "test", spec)))
    (ra, ea), (rb, eb) = runs
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]
    assert ra.best_valid == rb.best_valid
    for p in ea:
        assert np.array_equal(ea[p].ranks, eb[p].ranks)
        assert np.array_equal(ea[p].topk_items, eb[p].topk_items)


def test_a_file_with_other_row_groups_still_streams(tmp_path):
    data = _ragged()
    streamed = _write(data, tmp_path / "sequences.parquet", row_group_size=50)
    assert streamed.block_bounds().tolist() == [0, 50, 100, 150]
    whole = streamed.whole()
    assert whole.items.tolist() == data.items.tolist()
    assert whole.offsets.tolist() == data.offsets.tolist()
    assert len(_epoch(streamed, window=50)) == num_batches(data, 10)


def test_a_file_without_the_sequences_columns_is_named(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"user_id": [1]}), path)
    with pytest.raises(ValueError, match=r"other\.parquet.*train_items"):
        ParquetSequences(path, 3)


def test_ranking_a_window_at_a_time_equals_ranking_everyone_at_once(tmp_path):
    data = replace(cyclic_split(num_users=120), block_users=BLOCK)
    streamed = _write(data, tmp_path / "sequences.parquet")
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(d=16, heads=2, experts=2, max_len=12), data.num_items).eval()
    spec = EvalConfig(batch_size=20, topk=5)

    def ranked(source, window):
        out = {}
        with torch.inference_mode():
            for c in rank_chunks(model, source, "test", spec, window=window):
                for k, r in enumerate(c.rows):
                    out[int(r)] = (
                        int(c.user_ids[k]),
                        int(c.targets[k]),
                        {p: (int(c.ranks[p][k]), c.topk_items[p][k].tolist()) for p in c.ranks},
                    )
        return out

    whole, windowed = ranked(data, 10_000), ranked(streamed, 32)
    assert sorted(whole) == list(range(data.num_users))
    assert whole == windowed
    assert whole[5][:2] == (int(data.user_ids[5]), int(data.test[5]))
