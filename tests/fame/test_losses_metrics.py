"""Losses and metrics against straightforward references."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from fame import metrics
from fame.config import EvalConfig
from fame.losses import BCEOneNegative, FullCE, SampledSoftmax
from fame.metrics import count_at_least, metrics_from_ranks, rank_targets


def _reference_ce(u0, E0, t):
    """F.cross_entropy over the unchunked logits, item 0 masked, and its gradients."""
    u, E = u0.clone().requires_grad_(), E0.clone().requires_grad_()
    logits = u @ E.T
    logits = torch.cat([torch.full_like(logits[:, :1], -math.inf), logits[:, 1:]], 1)
    loss = F.cross_entropy(logits, t)
    loss.backward()
    return loss, u.grad, E.grad


def _fullce(loss_fn, u0, E0, t):
    u, E = u0.clone().requires_grad_(), E0.clone().requires_grad_()
    loss = loss_fn(u, t, E)
    loss.backward()
    return loss, u.grad, E.grad


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_ce_matches_cross_entropy(chunk):
    torch.manual_seed(0)
    u0, E0 = torch.randn(50, 16, dtype=torch.float64), torch.randn(21, 16, dtype=torch.float64)
    t = torch.randint(1, 21, (50,))
    ref = _reference_ce(u0, E0, t)
    got = _fullce(FullCE(chunk), u0, E0, t)
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a, b)
    assert got[2][0].abs().max() == 0  # the padding row gets no gradient
    with torch.no_grad():
        assert torch.allclose(FullCE(chunk)(u0, t, E0), ref[0])


def test_chunked_ce_bounds_logits_and_reuses_its_workspace(monkeypatch):
    monkeypatch.setattr(FullCE, "MAX_LOGITS", 21 * 4)  # at most 4 rows whatever logit_chunk says
    torch.manual_seed(0)
    E0 = torch.randn(21, 8)
    loss_fn = FullCE(4096)
    for P in (30, 3, 17):  # the workspace is sliced for smaller batches, never reallocated
        u0, t = torch.randn(P, 8), torch.randint(1, 21, (P,))
        for a, b in zip(_fullce(loss_fn, u0, E0, t), _reference_ce(u0, E0, t), strict=True):
            assert torch.allclose(a, b, atol=1e-6)
        assert loss_fn.buf.numel() == 4 * 21


def test_chunked_ce_under_bf16_autocast_stays_close():
    torch.manual_seed(0)
    u0, E0 = torch.randn(40, 32), torch.randn(101, 32) * 0.3
    t = torch.randint(1, 101, (40,))
    ref = _reference_ce(u0, E0, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the CUDA amp path, run on the CPU
        got = _fullce(FullCE(16), u0, E0, t)
    assert got[1].dtype == torch.float32 and got[2].dtype == torch.float32
    assert torch.allclose(got[0], ref[0], rtol=2e-2)
    assert torch.allclose(got[1], ref[1], atol=2e-3) and torch.allclose(got[2], ref[2], atol=2e-3)


def test_sampled_losses_are_finite_and_decrease_for_better_scores():
    gen = torch.Generator().manual_seed(0)
    E = torch.randn(50, 8)
    t = torch.randint(1, 50, (64,))
    good, bad = E[t] * 5, -E[t] * 5
    for loss in (BCEOneNegative(gen), SampledSoftmax(10, gen)):
        assert loss(good, t, E) < loss(bad, t, E)


def naive_rank(scores, target, history, exclude):
    cand = [v for v in range(1, len(scores)) if v == target or not (exclude and v in history)]
    return 1 + sum(1 for v in cand if v != target and scores[v] >= scores[target])


@pytest.mark.parametrize("form", ["none", "pairs", "mask"])
def test_ranks_and_metrics_match_naive_reference(form):
    rng = random.Random(0)
    B, V = 40, 25
    scores = torch.randint(0, 6, (B, V + 1)).double()  # many ties on purpose
    targets = torch.randint(1, V + 1, (B,))
    hist = [set(rng.sample(range(1, V + 1), rng.randint(0, 8))) for _ in range(B)]
    hist[0].add(int(targets[0]))  # a target inside the history stays a candidate
    pairs = torch.tensor([(r, v) for r, h in enumerate(hist) for v in sorted(h)]).T
    mask = torch.zeros(B, V + 1, dtype=torch.bool)
    mask[pairs[0], pairs[1]] = True
    history = {"none": None, "pairs": pairs, "mask": mask}[form]
    ranks = rank_targets(scores.clone(), targets, history)
    expected = [
        naive_rank(scores[r].tolist(), int(targets[r]), hist[r], form != "none") for r in range(B)
    ]
    assert ranks.tolist() == expected
    m = metrics_from_ranks(ranks, (5, 10, 20))
    for k in (5, 10, 20):
        assert m[f"hr@{k}"] == pytest.approx(sum(r <= k for r in expected) / B)
        assert m[f"ndcg@{k}"] == pytest.approx(
            sum(1 / math.log2(r + 1) for r in expected if r <= k) / B
        )
    assert m["mrr"] == pytest.approx(sum(1 / r for r in expected) / B)


def test_counts_are_exact_across_int16_blocks(monkeypatch):
    monkeypatch.setattr(metrics, "_INT16_BLOCK", 7)
    scores = torch.randn(5, 60)
    threshold = scores[:, 3:4]
    assert count_at_least(scores, threshold).tolist() == (scores >= threshold).sum(1).tolist()


def test_constant_scorer_ranks_last():
    scores = torch.zeros(3, 11)
    ranks = rank_targets(scores, torch.tensor([1, 5, 10]))
    assert ranks.tolist() == [10, 10, 10]


def test_eval_config_needs_ndcg10():
    with pytest.raises(ValueError, match="must include 10"):
        EvalConfig(ks=(5, 20))
