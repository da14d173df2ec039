"""Evaluation at scale: chunked ranking equals unchunked and a brute-force reference, and the
evaluate stage streams ``rankings`` in Parquet row groups with the same rows as one chunk."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fame.config import EvalConfig, ModelConfig
from fame.evaluate import evaluate, rank_chunks
from fame.model import SeqRecModel
from pipeline.config import load_config
from pipeline.runner import run_pipeline

SYNTH = {"data.synth.users": 300, "data.synth.items": 150, "data.synth.interactions": 4000}
SMALL = {"train.epochs": 2, "init.method": "random", "model.d": 32, **SYNTH}


def _model(data):
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(d=16, heads=2, experts=2, max_len=8), data.num_items)
    return model.eval()


@pytest.mark.parametrize("split", ["valid", "test"])
def test_chunked_equals_unchunked_and_brute_force(cyclic, split):
    model = _model(cyclic)
    whole = evaluate(model, cyclic, split, EvalConfig(batch_size=100_000, topk=5))
    small = evaluate(model, cyclic, split, EvalConfig(batch_size=3, topk=5))
    for p in whole:
        assert np.array_equal(whole[p].ranks, small[p].ranks)
        assert np.array_equal(whole[p].topk_items, small[p].topk_items)
        assert whole[p].metrics == small[p].metrics
    # brute force, one user at a time: 1 + items scoring above the target (ties pessimistic)
    offsets, items = cyclic.inputs(split)
    targets = cyclic.targets(split)
    with torch.inference_mode():
        for user in range(0, cyclic.num_users, 7):
            hist = items[offsets[user] : offsets[user + 1]][-8:]
            scores = model.score(torch.from_numpy(hist)[None])[0].numpy()
            scores[0] = -np.inf
            t = targets[user]
            keep = scores.copy()
            excl = scores.copy()
            excl[np.setdiff1d(items[offsets[user] : offsets[user + 1]], [t])] = -np.inf
            assert whole["keep_history"].ranks[user] == 1 + (np.delete(keep, t) >= keep[t]).sum()
            assert whole["exclude_history"].ranks[user] == 1 + (np.delete(excl, t) >= excl[t]).sum()


def _matched_reference(scores: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """One user's scores with the cold items' moved to the others' mean and spread (numpy)."""
    out = scores.astype(np.float64)
    warm = np.setdiff1d(np.arange(1, len(scores)), cold)
    c, w = out[cold], out[warm]
    out[cold] = w.mean() + (c - c.mean()) * w.std() / c.std()
    return out


def test_matched_cold_scores_equal_a_per_user_reference(cyclic):
    """``rank_chunks(cold=...)`` ranks as if each user's cold-item scores had been moved, one
    user at a time in float64, to the warm items' mean and spread; without ``cold`` it is raw."""
    model = _model(cyclic)
    cold = np.array([2, 5, 7, 11, 13, 17, 19])
    spec = EvalConfig(batch_size=5, topk=5)
    offsets, items = cyclic.inputs("test")
    targets = cyclic.targets("test")
    with torch.inference_mode():
        chunks = list(rank_chunks(model, cyclic, "test", spec, cold=cold))
        raw = list(rank_chunks(model, cyclic, "test", spec))
        ranks = {p: np.empty(cyclic.num_users, np.int64) for p in chunks[0].ranks}
        raw_ranks = np.empty(cyclic.num_users, np.int64)
        for c, r in zip(chunks, raw, strict=True):
            for p in ranks:
                ranks[p][c.rows] = c.ranks[p]
            raw_ranks[r.rows] = r.ranks["keep_history"]
        moved = 0
        for user in range(cyclic.num_users):
            hist = items[offsets[user] : offsets[user + 1]]
            scores = model.score(torch.from_numpy(hist[-8:])[None])[0].numpy()
            ref = _matched_reference(scores, cold)
            ref[0] = -np.inf
            t = targets[user]
            near = np.abs(np.delete(ref, t) - ref[t]) < 1e-4  # float32 vs float64 ties
            above = (np.delete(ref, t) >= ref[t]).sum()
            assert abs(ranks["keep_history"][user] - 1 - above) <= near.sum()
            excl = ref.copy()
            excl[np.setdiff1d(hist, [t])] = -np.inf
            above = (np.delete(excl, t) >= excl[t]).sum()
            near = np.abs(np.delete(excl, t) - excl[t]) < 1e-4
            assert abs(ranks["exclude_history"][user] - 1 - above) <= near.sum()
            moved += ranks["keep_history"][user] != raw_ranks[user]
    assert moved > 0  # the matching did change ranks


def test_rank_chunks_cover_each_user_once(cyclic):
    model = _model(cyclic)
    with torch.inference_mode():
        chunks = list(rank_chunks(model, cyclic, "valid", EvalConfig(batch_size=4)))
    rows = np.concatenate([c.rows for c in chunks])
    assert len(chunks) == -(-cyclic.num_users // 4)
    assert np.array_equal(np.sort(rows), np.arange(cyclic.num_users))


def _rankings(root, batch_size):
    cfg = load_config(
        "synthetic", {**SMALL, "paths.artifacts": str(root), "evaluate.batch_size": batch_size}
    )
    ctx = run_pipeline(cfg, progress=False)
    art = ctx.results["evaluate"].artifact
    return art, pq.read_table(art.file("rankings.parquet"))


def test_stage_streams_rankings_in_row_groups(tmp_path):
    """batch_size only changes speed: the key is shared, so the second config is evaluated in
    a second store and the two rankings tables hold the same rows."""
    big, one = _rankings(tmp_path / "a", 100_000)
    small, many = _rankings(tmp_path / "b", 16)
    assert big.key == small.key
    users = one.num_rows // 4
    assert pq.ParquetFile(small.file("rankings.parquet")).num_row_groups == 4 * -(-users // 16)
    order = [("split", "ascending"), ("protocol", "ascending"), ("user_id", "ascending")]
    a, b = one.drop_columns(["run_id"]), many.drop_columns(["run_id"])
    assert a.sort_by(order).equals(b.sort_by(order))
    assert small.rows["rankings"] == many.num_rows == 4 * users
    assert small.manifest["schema"]["rankings"]["topk"].startswith("fixed_size_list")
    assert not list((tmp_path / "b" / "_work" / "publish").iterdir())  # scratch removed


def test_a_killed_evaluations_scratch_is_swept(tmp_path):
    """The scratch folder carries its writer's pid: once that process is gone, the store's
    sweep (run at every pipeline start) removes it; a live writer's stays."""
    from types import SimpleNamespace

    from support import dead_pid

    from pipeline.stages.evaluate import scratch_dir
    from storage import ArtifactStore

    store = ArtifactStore(tmp_path)
    ctx = SimpleNamespace(store=store, keys={"evaluate": "abc123"})
    live = scratch_dir(ctx)
    dead = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{dead_pid()}-"))
    live.rename(dead)
    (dead / "rankings.parquet").write_bytes(b"half")
    live = scratch_dir(ctx)
    assert store.sweep()["removed"] == 1
    assert not dead.exists() and live.is_dir()


def test_split_data_reads_many_row_groups_as_one_csr(tmp_path):
    """split_data flattens the Parquet chunks without combining them: the CSR equals the
    per-user lists, whatever the row groups (an empty train part included)."""
    import pyarrow as pa

    from pipeline.artifacts import split_data
    from storage import Artifact

    lists = [[1, 2, 3], [], [4], [2, 2, 5, 1], [3, 1]]
    table = pa.table(
        {
            "user_id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "train_items": pa.array(lists, pa.list_(pa.int64())),
            "valid_item": pa.array([4, 1, 2, 3, 5], pa.int64()),
            "test_item": pa.array([5, 3, 1, 4, 2], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "sequences.parquet", row_group_size=2)
    art = Artifact("ingest", "k", tmp_path, {"rows": {"items": 5, "sequences": 5}})
    data = split_data(art)
    bounds = zip(data.offsets[:-1], data.offsets[1:], strict=True)
    assert [data.items[a:b].tolist() for a, b in bounds] == lists
    assert data.valid.tolist() == [4, 1, 2, 3, 5] and data.test.tolist() == [5, 3, 1, 4, 2]
    assert data.num_items == 5 and data.items.dtype == np.int64
