"""Sampled softmax with logQ correction: a hand-computed reference, and the property the
correction exists for (its gradient tends to full-softmax CE's as k grows; without it, not)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fame.config import TrainConfig
from fame.losses import SampledSoftmax, make_loss


def _reference(u, targets, E, neg, q, k, logq):
    """Per position: -corrected s_y + log Σ exp(corrected logits), sampled hits removed; mean."""
    losses = []
    for i in range(len(targets)):
        y = int(targets[i])
        shift = (lambda j: math.log(k * float(q[j]))) if logq else (lambda j: 0.0)
        pos = float(u[i] @ E[y]) - shift(y)
        terms = [pos] + [float(u[i] @ E[j]) - shift(int(j)) for j in neg if int(j) != y]
        m = max(terms)
        losses.append(-pos + m + math.log(sum(math.exp(t - m) for t in terms)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("sampler", ["popularity", "in_batch"])
@pytest.mark.parametrize("logq", [True, False])
def test_equals_hand_computed_reference(sampler, logq):
    torch.manual_seed(0)
    V, d, k = 6, 3, 5
    E = torch.randn(V + 1, d, dtype=torch.float64)
    u = torch.randn(4, d, dtype=torch.float64)
    targets = torch.tensor([1, 3, 3, 6])
    counts = np.array([0, 5, 1, 8, 2, 3, 1])
    loss_fn = SampledSoftmax(k, torch.Generator().manual_seed(7), sampler, counts, 0.75, logq)
    # the same draw the loss makes, from a generator in the same state
    replay = SampledSoftmax(k, torch.Generator().manual_seed(7), sampler, counts, 0.75, logq)
    neg = replay.negatives(targets, V)
    q = (counts**0.75) / (counts**0.75).sum()
    if sampler == "in_batch":
        assert set(neg.tolist()) <= set(targets.tolist())
    got = loss_fn(u, targets, E).item()
    assert got == pytest.approx(_reference(u, targets, E, neg, q, k, logq), rel=1e-6)


def test_uniform_is_the_plain_sampled_softmax():
    """Under a uniform proposal the correction is a constant shift: the uncorrected formula."""
    torch.manual_seed(1)
    V, d, k = 9, 4, 6
    E, u = torch.randn(V + 1, d, dtype=torch.float64), torch.randn(5, d, dtype=torch.float64)
    targets = torch.tensor([1, 2, 9, 4, 4])
    got = SampledSoftmax(k, torch.Generator().manual_seed(3))(u, targets, E).item()
    neg = SampledSoftmax(k, torch.Generator().manual_seed(3)).negatives(targets, V)
    assert torch.all((neg >= 1) & (neg <= V))
    assert got == pytest.approx(_reference(u, targets, E, neg, None, k, logq=False), rel=1e-6)


def _grad_u(loss_fn, u, targets, E):
    u = u.clone().requires_grad_(True)
    loss_fn(u, targets, E).backward()
    return u.grad


def test_logq_gradient_tends_to_full_softmax():
    """Importance sampling: Σ_samples exp(s_j - log k q_j) estimates Σ_j exp(s_j), so with many
    popularity-drawn negatives the corrected loss has full CE's gradient; uncorrected, it
    learns the softmax of s_j + log q_j instead and stays far off."""
    torch.manual_seed(2)
    V, d = 50, 8
    E = torch.randn(V + 1, d, dtype=torch.float64)
    u = torch.randn(6, d, dtype=torch.float64)
    targets = torch.tensor([1, 5, 7, 20, 33, 50])
    counts = np.r_[0, np.random.default_rng(0).zipf(1.5, V).clip(max=1000)]

    def full(uu, tt, EE):
        logits = uu @ EE[1:].T
        return F.cross_entropy(logits, tt - 1)

    ref = _grad_u(full, u, targets, E)

    def err(logq):
        loss = SampledSoftmax(
            200_000, torch.Generator().manual_seed(5), "popularity", counts, 1.0, logq
        )
        return ((_grad_u(loss, u, targets, E) - ref).norm() / ref.norm()).item()

    assert err(logq=True) < 0.05
    assert err(logq=False) > 0.3


def test_make_loss_reads_the_sampler_fields():
    cfg = TrainConfig(loss="sampled_softmax", negatives=4, sampler="popularity", sampler_power=0.5)
    loss = make_loss(cfg, torch.Generator(), np.array([0, 1, 4, 9]))
    assert isinstance(loss, SampledSoftmax) and loss.sampler == "popularity"
    assert torch.allclose(loss.q, torch.tensor([0, 1, 2, 3]) / 6.0)
    with pytest.raises(ValueError, match="counts"):
        make_loss(cfg, torch.Generator())


@pytest.mark.parametrize("sampler", ["popularity", "in_batch"])
def test_trainer_feeds_the_train_counts(cyclic, tmp_path, sampler):
    """fit builds the proposal from the data's train items and learns the cyclic sequences."""
    from support import popularity_ndcg10

    from fame.config import ModelConfig
    from fame.model import SeqRecModel
    from fame.trainer import fit

    torch.manual_seed(0)
    model = SeqRecModel(
        ModelConfig(d=32, heads=2, experts=2, max_len=12, dropout=0.1), cyclic.num_items
    )
    cfg = TrainConfig(
        loss="sampled_softmax",
        negatives=8,
        sampler=sampler,
        epochs=6,
        patience=3,
        batch_size=32,
        lr=3e-3,
        seed=7,
        device="cpu",
    )
    res = fit(model, cyclic, cfg, tmp_path, progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.best_valid["ndcg@10"] > popularity_ndcg10(cyclic) + 0.1
    counts = cyclic.item_counts()
    assert counts.sum() == len(cyclic.items) and counts[0] == 0


def test_a_sampler_without_sampled_softmax_is_an_error():
    with pytest.raises(ValueError, match="train.sampler = 'popularity' needs train.loss"):
        TrainConfig(loss="ce", sampler="popularity")


@pytest.mark.parametrize("chunk", [2, 1000])
def test_fused_gradients_equal_autograd_of_the_plain_formula(chunk):
    """The chunked loss computes its gradients in the forward pass: they equal autograd's of
    the textbook formula (cat, mask, cross_entropy), across chunk boundaries, with the target
    drawn among the negatives and repeated targets (index_add paths)."""
    from fame.losses import chunked_sampled

    torch.manual_seed(4)
    V, d = 12, 5
    E = torch.randn(V + 1, d)
    u = torch.randn(7, d)
    targets = torch.tensor([3, 3, 1, 12, 5, 3, 7])
    neg = torch.tensor([3, 8, 8, 1, 11, 2])
    bias = torch.rand(V + 1)

    def plain(uu, EE):
        pos = (uu * EE[targets]).sum(-1, keepdim=True) - bias[targets][:, None]
        logits = torch.cat([pos, uu @ EE[neg].T - bias[neg]], 1)
        hit = torch.cat(
            [torch.zeros(len(targets), 1, dtype=torch.bool), neg == targets[:, None]], 1
        )
        return F.cross_entropy(logits.masked_fill(hit, -torch.inf), torch.zeros_like(targets))

    uu, EE = u.clone().requires_grad_(True), E.clone().requires_grad_(True)
    ref = plain(uu, EE)
    ref.backward()
    loss, grad_u, grad_E = chunked_sampled(u, E, targets, neg, bias, chunk, grads=True)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(grad_u, uu.grad, atol=1e-6)
    assert torch.allclose(grad_E, EE.grad, atol=1e-6)


def test_popularity_draws_follow_q():
    """Inverse-CDF draws: frequencies match q_j ∝ count_j^power; unseen items never drawn."""
    counts = np.array([0, 10, 0, 30, 60, 0, 100])
    loss = SampledSoftmax(200_000, torch.Generator().manual_seed(0), "popularity", counts, 0.5)
    neg = loss.negatives(torch.tensor([1]), 6)
    freq = np.bincount(neg.numpy(), minlength=7) / len(neg)
    q = counts**0.5 / (counts**0.5).sum()
    assert freq[[0, 2, 5]].sum() == 0
    assert np.abs(freq - q).max() < 0.005
