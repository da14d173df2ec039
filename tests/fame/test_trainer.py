"""Training, evaluation, resumption and checkpoints on small data."""

import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import popularity_ndcg10

from fame.checkpoint import load_checkpoint, save_checkpoint
from fame.config import EvalConfig, ModelConfig, TrainConfig
from fame.epoch_hook import Pruned
from fame.evaluate import evaluate, recommend_topk
from fame.model import SeqRecModel
from fame.trainer import InjectedFailure, _rng_state, _set_rng_state, fit


def _cfg(**kw):
    base = dict(epochs=6, patience=3, batch_size=32, lr=3e-3, seed=7, device="cpu")
    return TrainConfig(**{**base, **kw})


SPEC = EvalConfig(batch_size=50)


def _model(name, data, **kw):
    torch.manual_seed(0)
    return SeqRecModel(
        ModelConfig(name=name, d=32, heads=2, experts=2, max_len=12, dropout=0.1, **kw),
        data.num_items,
    )


@pytest.mark.parametrize("name", ["fame", "sasrec"])
def test_training_lowers_loss_and_beats_popularity(cyclic, tmp_path, name):
    model = _model(name, cyclic)
    res = fit(model, cyclic, _cfg(), tmp_path, progress=False)
    assert all({"epoch", "loss", "valid", "seconds"} <= h.keys() for h in res.history)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0] * 0.8
    assert res.best_valid["ndcg@10"] > popularity_ndcg10(cyclic) + 0.1
    # the returned model holds the best epoch's weights
    again = evaluate(model, cyclic, "valid", SPEC, "cpu")["exclude_history"].metrics
    assert again["ndcg@10"] == pytest.approx(res.best_valid["ndcg@10"])


@pytest.mark.parametrize("loss", ["bce", "sampled_softmax"])
def test_alternative_losses_train(cyclic, tmp_path, loss):
    res = fit(
        _model("fame", cyclic),
        cyclic,
        _cfg(loss=loss, negatives=8, epochs=4),
        tmp_path,
        progress=False,
    )
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_resume_gives_identical_run(cyclic, tmp_path):
    cfg = _cfg(epochs=5, patience=10)
    straight = fit(_model("fame", cyclic), cyclic, cfg, tmp_path / "a", progress=False)
    with pytest.raises(InjectedFailure):
        fit(_model("fame", cyclic), cyclic, cfg, tmp_path / "b", progress=False, fail_at_epoch=2)
    resumed = fit(_model("fame", cyclic), cyclic, cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from == 2
    strip = [{k: v for k, v in h.items() if "seconds" not in k} for h in straight.history]
    assert strip == [{k: v for k, v in h.items() if "seconds" not in k} for h in resumed.history]
    assert resumed.best_valid == straight.best_valid
    # a finished run called again returns at once with the same result
    done = fit(_model("fame", cyclic), cyclic, cfg, tmp_path / "b", progress=False)
    assert done.best_valid == straight.best_valid and done.epochs_run == straight.epochs_run


def test_an_epoch_hook_prunes_leaving_a_state_that_resumes_to_the_same_end(cyclic, tmp_path):
    cfg = _cfg(epochs=5, patience=10)
    seen = []

    def prune_at_2(epoch, valid):
        seen.append((epoch, valid["ndcg@10"]))
        return epoch == 2

    with pytest.raises(Pruned) as info:
        fit(
            _model("fame", cyclic), cyclic, cfg, tmp_path / "b", progress=False, on_epoch=prune_at_2
        )
    assert info.value.epoch == 2 and [e for e, _ in seen] == [1, 2]
    assert info.value.valid["ndcg@10"] == seen[-1][1]
    # a hook that never prunes changes nothing: the same curve as the pruned fit up to epoch 2
    straight = fit(
        _model("fame", cyclic),
        cyclic,
        cfg,
        tmp_path / "a",
        progress=False,
        on_epoch=lambda e, v: None,
    )
    assert [h["valid"]["ndcg@10"] for h in straight.history[:2]] == [v for _, v in seen]
    # the pruned fit's state is an epoch-2 state, not a finished one: without the hook it resumes
    resumed = fit(_model("fame", cyclic), cyclic, cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from == 2 and resumed.epochs_run == 5 and resumed.epochs_trained == 3
    assert resumed.best_valid == straight.best_valid
    # resumed again, the hook is shown the restored epochs; a finished state is never pruned
    replayed = []
    again = fit(
        _model("fame", cyclic),
        cyclic,
        cfg,
        tmp_path / "b",
        progress=False,
        on_epoch=lambda e, v: replayed.append(e) or True,
    )
    assert replayed == [1, 2, 3, 4, 5] and again.best_valid == straight.best_valid


def test_same_seed_same_metrics(cyclic, tmp_path):
    a = fit(_model("sasrec", cyclic), cyclic, _cfg(epochs=2), tmp_path / "a", progress=False)
    b = fit(_model("sasrec", cyclic), cyclic, _cfg(epochs=2), tmp_path / "b", progress=False)
    assert a.best_valid == b.best_valid


def test_evaluate_matches_brute_force(cyclic):
    """Both protocols from one pass equal a per-user loop over all candidates."""
    model = _model("fame", cyclic).eval()
    spec = EvalConfig(batch_size=17, topk=5)  # chunks that do not divide the users
    res = evaluate(model, cyclic, "test", spec, "cpu")
    assert set(res) == {"exclude_history", "keep_history"}
    offsets, items = cyclic.inputs("test")
    with torch.no_grad():
        for u in range(cyclic.num_users):
            hist = items[offsets[u] : offsets[u + 1]]
            seq = torch.tensor([[0] * (12 - min(12, len(hist))) + hist[-12:].tolist()])
            s = model.score(seq)[0]
            t = int(cyclic.test[u])
            seen = set(hist.tolist())
            for protocol, removed in (("exclude_history", seen), ("keep_history", set())):
                cand = [v for v in range(1, cyclic.num_items + 1) if v == t or v not in removed]
                want = 1 + sum(1 for v in cand if v != t and s[v] >= s[t])
                assert res[protocol].ranks[u] == want
                best = sorted(
                    (v for v in range(1, cyclic.num_items + 1) if v not in removed),
                    key=lambda v: -float(s[v]),
                )[:5]
                assert set(res[protocol].topk_items[u].tolist()) == set(best)
    # the metrics are those of the ranks, per protocol
    excl = res["exclude_history"]
    assert excl.metrics["hr@10"] == pytest.approx(float((excl.ranks <= 10).mean()))


def test_recommend_topk_matches_brute_force(cyclic):
    """Top-k of arbitrary CSR histories (one shared exclusion with the evaluator)."""
    model = _model("sasrec", cyclic).eval()
    histories = [[1, 2, 3], [5], [9, 8, 7, 6, 5, 4, 3, 2, 1, 10, 11, 12, 13, 14]]
    offsets = np.cumsum([0, *map(len, histories)])
    flat = np.concatenate(histories)
    for protocol in ("exclude_history", "keep_history"):
        top, scores = recommend_topk(model, offsets, flat, 4, protocol, batch_size=2)
        for r, hist in enumerate(histories):
            window = hist[-12:]
            seq = torch.tensor([[0] * (12 - len(window)) + window])
            with torch.no_grad():
                s = model.score(seq)[0]
            removed = set(hist) if protocol == "exclude_history" else set()
            cand = [v for v in range(1, cyclic.num_items + 1) if v not in removed]
            best = sorted(cand, key=lambda v: -float(s[v]))[:4]
            assert top[r].tolist() == best
            assert np.allclose(scores[r], [float(s[v]) for v in best], atol=1e-5)


def test_checkpoint_roundtrip(cyclic, tmp_path):
    model = _model("fame", cyclic).eval()
    save_checkpoint(tmp_path / "ckpt", model, model.cfg, cyclic.num_items, extra={"note": "x"})
    loaded, extra = load_checkpoint(tmp_path / "ckpt")
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        assert torch.equal(model.score(seq), loaded.score(seq))
    assert extra == {"note": "x"}


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.save(_rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.random(3), [random.random() for _ in range(3)])
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.random(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_freeze_item_epochs_keeps_E_then_trains_it(cyclic, tmp_path):
    """E is bit-identical after the frozen epochs while the rest moved; it trains afterwards;
    a run killed in the frozen phase resumes to the same weights as an uninterrupted one."""
    cfg = _cfg(epochs=2, patience=5)
    model = _model("fame", cyclic)
    e0 = model.item_emb.weight.detach().clone()
    other0 = model.pos_emb.weight.detach().clone()
    fit(model, cyclic, _cfg(epochs=1), tmp_path / "a", progress=False, freeze_item_epochs=1)
    assert torch.equal(model.item_emb.weight, e0)
    assert not torch.equal(model.pos_emb.weight, other0)
    model = _model("fame", cyclic)
    res = fit(model, cyclic, cfg, tmp_path / "b", progress=False, freeze_item_epochs=1)
    last = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert res.epochs_run == 2 and not torch.equal(last["item_emb.weight"], e0)
    # killed after the frozen epoch, resumed: the same end state
    resumed = _model("fame", cyclic)
    with pytest.raises(InjectedFailure):
        fit(resumed, cyclic, cfg, tmp_path / "c", progress=False, fail_at_epoch=1,
            freeze_item_epochs=1)  # fmt: skip
    fit(_model("fame", cyclic), cyclic, cfg, tmp_path / "c", progress=False, freeze_item_epochs=1)
    again = torch.load(tmp_path / "c" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(last[k], again[k]) for k in last)


TWIN = """
import json, sys, time
from pathlib import Path
import torch
sys.path.append({tests!r})
from support import cyclic_split
from fame.config import ModelConfig, TrainConfig
from fame.model import SeqRecModel
from fame.trainer import fit

torch.set_num_threads(1)
data = cyclic_split(num_users=24, num_items=16, length=8)
torch.manual_seed(0)
model = SeqRecModel(ModelConfig(d=16, heads=2, experts=2, max_len=8), data.num_items)
cfg = TrainConfig(epochs=30, patience=100, eval_every=30, batch_size=64, seed=3, device="cpu")
print("ready", flush=True)
while not Path({go!r}).exists():  # both processes start training together
    time.sleep(0.01)
res = fit(model, data, cfg, {work!r}, progress=False)
print(json.dumps([res.best_valid, res.epochs_run, getattr(res, "epochs_trained", None)]))
"""


def test_two_identical_trains_on_one_work_dir_both_finish(tmp_path):
    """Two processes fitting one config into one work_dir at once: neither crashes on the
    other's files, one trains while the other waits, and both return the same result."""
    go = tmp_path / "go"
    tests = Path(__file__).parents[1]
    code = TWIN.format(tests=str(tests), go=str(go), work=str(tmp_path / "w"))
    run = [sys.executable, "-c", code]
    procs = [
        subprocess.Popen(run, cwd=tests.parent, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        go.touch()
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    (valid_a, run_a, trained_a), (valid_b, run_b, trained_b) = (json.loads(o) for o in outs)
    assert valid_a == valid_b and run_a == run_b == 30
    assert sorted([trained_a, trained_b]) == [0, 30]  # the second resumed the finished state


@pytest.mark.parametrize("spoil", ["truncated", "garbage", "empty", "other_model"])
def test_unloadable_resume_state_is_discarded_with_a_warning(cyclic, tmp_path, caplog, spoil):
    cfg = _cfg(epochs=2)
    clean = fit(_model("sasrec", cyclic), cyclic, cfg, tmp_path / "clean", progress=False)
    last = tmp_path / "w" / "last.pt"
    if spoil == "other_model":  # a state of another architecture (d=16) in the same folder
        other = SeqRecModel(ModelConfig(name="sasrec", d=16, heads=2, max_len=12), cyclic.num_items)
        fit(other, cyclic, cfg, last.parent, progress=False)
    else:
        last.parent.mkdir()
        data = (tmp_path / "clean" / "last.pt").read_bytes()
        spoilt = {"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 99, "empty": b""}
        last.write_bytes(spoilt[spoil])
    with caplog.at_level(logging.WARNING, logger="fame.trainer"):
        res = fit(_model("sasrec", cyclic), cyclic, cfg, last.parent, progress=False)
    assert any(r.levelno == logging.WARNING and str(last) in r.getMessage() for r in caplog.records)
    assert res.resumed_from is None and res.best_valid == clean.best_valid
