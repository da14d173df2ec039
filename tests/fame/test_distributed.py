"""Data-parallel training: 2 gloo processes under torchrun take the same steps as one process
on the whole global batch, and a killed job resumes to the same end."""

import dataclasses

import numpy as np
import pytest
import torch

from fame.config import EvalConfig, ModelConfig, TrainConfig
from fame.distributed import fit_distributed
from fame.model import SeqRecModel
from fame.shard import Shard
from fame.trainer import InjectedFailure, fit

pytestmark = pytest.mark.timeout(600)
SPEC = EvalConfig(batch_size=64)


@pytest.fixture
def ragged(cyclic):
    """The cyclic users with train sequences cut to random lengths (2..12): ranks hold unequal
    numbers of positions, which a plain average of per-rank means would get wrong."""

    rng = np.random.default_rng(0)
    lengths = np.diff(cyclic.offsets)
    keep = rng.integers(2, lengths + 1)
    parts = [cyclic.items[a : a + k] for a, k in zip(cyclic.offsets[:-1], keep, strict=True)]
    offsets = np.concatenate([[0], np.cumsum(keep)]).astype(np.int64)
    return dataclasses.replace(cyclic, offsets=offsets, items=np.concatenate(parts))


def _model(data, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(name="fame", d=16, heads=2, experts=2, max_len=10, dropout=0.0, **kw)
    return SeqRecModel(cfg, data.num_items)


def _cfg(**kw):
    # 120 users in batches of 51: odd batches split unevenly across the ranks
    base = dict(epochs=3, patience=10, eval_every=3, batch_size=51, lr=3e-3, seed=7, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_shard_rows_cover_the_batch_once():
    for n in (1, 7, 50):
        parts = [Shard(r, 3).rows(n) for r in range(3)]
        got = np.concatenate([np.arange(n)[p] for p in parts])
        assert got.tolist() == list(range(n))


def test_two_processes_equal_one_process_on_the_global_batch(ragged, tmp_path):
    single = _model(ragged)
    one = fit(single, ragged, _cfg(), tmp_path / "one", progress=False, spec=SPEC)
    ddp = _model(ragged)
    two = fit_distributed(ddp, ragged, _cfg(nproc=2), tmp_path / "two", spec=SPEC, progress=False)
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4, msg=name)
    losses = [h["loss"] for h in one.history]
    assert [h["loss"] for h in two.history] == pytest.approx(losses, rel=1e-4)
    assert two.best_valid["ndcg@10"] == pytest.approx(one.best_valid["ndcg@10"], abs=1e-4)
    assert two.epochs_run == one.epochs_run == 3


def test_killed_job_resumes_to_the_same_end(cyclic, tmp_path):
    """With dropout (drawn per rank) and sampled negatives: the generators of every rank are in
    the resume state, so a job killed after epoch 1 ends exactly as an uninterrupted one."""
    cfg = _cfg(nproc=2, loss="sampled_softmax", negatives=8)

    def model():
        m = _model(cyclic)
        return SeqRecModel(dataclasses.replace(m.cfg, dropout=0.3), cyclic.num_items)

    torch.manual_seed(0)
    straight_model = model()
    straight = fit_distributed(
        straight_model, cyclic, cfg, tmp_path / "a", spec=SPEC, progress=False
    )
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="distributed training failed"):
        fit_distributed(
            model(), cyclic, cfg, tmp_path / "b", spec=SPEC, progress=False, fail_at_epoch=1
        )
    torch.manual_seed(0)
    resumed_model = model()
    resumed = fit_distributed(resumed_model, cyclic, cfg, tmp_path / "b", spec=SPEC, progress=False)
    assert resumed.resumed_from == 1
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for a, b in zip(
        straight_model.state_dict().values(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert InjectedFailure  # raised inside the ranks; the launcher reports the failed job


def test_pipeline_train_stage_runs_data_parallel(tmp_path):
    """``train.nproc = 2`` through the pipeline: its own key (results depend on the world
    size), a stored checkpoint that evaluates, the resume folder removed once published."""
    from pipeline.config import load_config
    from pipeline.runner import plan_keys, run_pipeline

    over = {
        "data.synth.users": 200, "data.synth.items": 100, "data.synth.interactions": 2500,
        "model.name": "sasrec", "init.method": "random", "model.d": 16, "train.epochs": 2,
        "paths.artifacts": str(tmp_path / "a"),
    }  # fmt: skip
    one, two = load_config("synthetic", over), load_config("synthetic", {**over, "train.nproc": 2})
    assert plan_keys(one)["train"] != plan_keys(two)["train"]
    assert plan_keys(one)["ingest"] == plan_keys(two)["ingest"]
    ctx = run_pipeline(two, progress=False)
    train = ctx.results["train"].artifact
    assert train.manifest["epochs_run"] == 2 and len(train.table("history")) == 2
    assert ctx.results["evaluate"].artifact.rows["metrics"] > 0
    assert not (tmp_path / "a" / "_work" / "train" / ctx.keys["train"]).exists()
