"""supcon_loss against a per-anchor Python loop (values and gradients)."""

import pytest
import torch
import torch.nn.functional as F

from pretrain.supcon import supcon_loss


def naive_terms(z: torch.Tensor, labels: list[int], t: float) -> dict[int, torch.Tensor]:
    """Khosla et al. (2020) L_out of each anchor that has a positive; label < 0 = no label."""
    n, terms = len(labels), {}
    for i in range(n):
        if labels[i] < 0:
            continue
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        others = [a for a in range(n) if a != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[a] / t for a in others]), 0)
        terms[i] = -sum(z[i] @ z[p] / t - denom for p in pos) / len(pos)
    return terms


def naive_supcon(z: torch.Tensor, labels: list[int], t: float) -> torch.Tensor:
    return torch.stack(list(naive_terms(z, labels, t).values())).mean()


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_supcon_matches_naive_loop_in_value_and_gradient(temperature):
    torch.manual_seed(0)
    raw = torch.randn(12, 5, dtype=torch.float64)
    labels = [0, 0, 1, 1, 1, 2, 3, 3, 4, 0, 2, 5]  # 4 and 5 have no positive: ignored
    a = raw.clone().requires_grad_()
    b = raw.clone().requires_grad_()
    fast = supcon_loss(F.normalize(a, dim=-1), torch.tensor(labels), temperature)
    slow = naive_supcon(F.normalize(b, dim=-1), labels, temperature)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-12)
    fast.backward()
    slow.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-12)


def test_anchors_without_positive_do_not_change_the_loss_as_anchors():
    torch.manual_seed(1)
    z = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    labels = [0, 0, 1, 1, 7, -1]  # 7: singleton; -1: missing label, a negative only
    got = supcon_loss(z, torch.tensor(labels)).item()
    terms = naive_terms(z, labels, 0.07)
    assert sorted(terms) == [0, 1, 2, 3]  # the singleton and the unlabelled item anchor nothing
    # the mean runs over the four anchors with a positive, not over six
    assert got == pytest.approx(sum(v.item() for v in terms.values()) / 4, rel=1e-12)
    assert got != pytest.approx(sum(v.item() for v in terms.values()) / 6, rel=1e-3)
    # ... but both stay in every anchor's denominator: dropping them changes the loss
    assert got != pytest.approx(supcon_loss(z[:4], torch.tensor(labels[:4])).item(), rel=1e-6)


def test_batch_without_positives_is_zero_and_differentiable():
    z = F.normalize(torch.randn(4, 3), dim=-1).requires_grad_()
    loss = supcon_loss(z, torch.tensor([0, 1, 2, -1]))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(z.grad) == 0


def test_supcon_prefers_clustered_labels():
    labels = torch.tensor([0, 0, 1, 1])
    good = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]), dim=-1)
    bad = good[[0, 2, 1, 3]]
    assert supcon_loss(good, labels) < supcon_loss(bad, labels)
