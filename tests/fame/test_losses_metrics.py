"""Losses and metrics against straightforward references."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fame.config import TrainConfig
from fame.data import windows
from fame.losses import BCEOneNegative, FullCE, SampledSoftmax
from fame.metrics import metrics_from_ranks, rank_targets


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_ce_matches_cross_entropy(chunk):
    torch.manual_seed(0)
    u0, E0 = torch.randn(50, 16, dtype=torch.float64), torch.randn(21, 16, dtype=torch.float64)
    t = torch.randint(1, 21, (50,))
    u, E = u0.clone().requires_grad_(), E0.clone().requires_grad_()
    logits = u @ E.T
    logits = torch.cat(
        [torch.full_like(logits[:, :1], -math.inf), logits[:, 1:]], 1
    )  # item 0 never a candidate
    ref = F.cross_entropy(logits, t)
    ref.backward()
    u2, E2 = u0.clone().requires_grad_(), E0.clone().requires_grad_()
    loss = FullCE(chunk)(u2, t, E2)
    loss.backward()
    assert (
        torch.allclose(loss, ref)
        and torch.allclose(u2.grad, u.grad)
        and torch.allclose(E2.grad, E.grad)
    )
    with torch.no_grad():
        assert torch.allclose(FullCE(chunk)(u0, t, E0), ref)


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


@pytest.mark.parametrize("exclude", [True, False])
def test_ranks_and_metrics_match_naive_reference(exclude):
    rng = random.Random(0)
    B, V = 40, 25
    scores = torch.randint(0, 6, (B, V + 1)).double()  # many ties on purpose
    targets = torch.randint(1, V + 1, (B,))
    hist = [set(rng.sample(range(1, V + 1), rng.randint(0, 8))) for _ in range(B)]
    hist[0].add(int(targets[0]))  # a target inside the history stays a candidate
    pairs = torch.tensor([(r, v) for r, h in enumerate(hist) for v in sorted(h)]).T
    ranks = rank_targets(scores.clone(), targets, pairs if exclude else None)
    expected = [naive_rank(scores[r].tolist(), int(targets[r]), hist[r], exclude) for r in range(B)]
    assert ranks.tolist() == expected
    m = metrics_from_ranks(ranks, (5, 10, 20))
    for k in (5, 10, 20):
        assert m[f"hr@{k}"] == pytest.approx(sum(r <= k for r in expected) / B)
        assert m[f"ndcg@{k}"] == pytest.approx(
            sum(1 / math.log2(r + 1) for r in expected if r <= k) / B
        )
    assert m["mrr"] == pytest.approx(sum(1 / r for r in expected) / B)


def test_constant_scorer_ranks_last():
    scores = torch.zeros(3, 11)
    ranks = rank_targets(scores, torch.tensor([1, 5, 10]))
    assert ranks.tolist() == [10, 10, 10]


def test_windows_left_pad_and_truncate():
    items = np.array([1, 2, 3, 4, 5, 6, 7])
    out = windows(items, np.array([0, 3, 5]), np.array([3, 5, 7]), 2)
    assert out.tolist() == [[2, 3], [4, 5], [6, 7]]
    out = windows(items, np.array([0, 3]), np.array([3, 4]), 4)
    assert out.tolist() == [[0, 1, 2, 3], [0, 0, 0, 4]]


def test_train_config_needs_ndcg10():
    with pytest.raises(ValueError):
        TrainConfig(ks=(5, 20))
