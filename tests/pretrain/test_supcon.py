import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.supcon import BalancedSampler, supcon_loss


def naive_supcon(z, labels, t):
    z, labels = z.tolist(), labels.tolist()
    n, total, anchors = len(z), 0.0, 0
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        sims = {
            j: sum(a * b for a, b in zip(z[i], z[j], strict=True)) / t for j in range(n) if j != i
        }
        denom = np.log(sum(np.exp(v) for v in sims.values()))
        total += -sum(sims[p] - denom for p in pos) / len(pos)
        anchors += 1
    return total / anchors


def test_supcon_matches_naive_loop():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(12, 5, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 0, 2, 5])  # labels 4 and 5 have no positive
    assert supcon_loss(z, labels, 0.07).item() == pytest.approx(
        naive_supcon(z, labels, 0.07), rel=1e-9
    )


def test_supcon_prefers_clustered_labels():
    labels = torch.tensor([0, 0, 1, 1])
    good = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]), dim=-1)
    bad = good[[0, 2, 1, 3]]
    assert supcon_loss(good, labels) < supcon_loss(bad, labels)


def test_balanced_sampler():
    labels = np.array([0, 0, 0, 1, 1, 2, -1, 3, 3, 3, 3, 4])  # 2 and 4 are singletons, -1 missing
    a = BalancedSampler(labels, labels_per_batch=2, items_per_label=2, seed=3)
    b = BalancedSampler(labels, labels_per_batch=2, items_per_label=2, seed=3)
    for _ in range(20):
        batch = a.sample()
        assert np.array_equal(batch, b.sample())  # seeded
        assert len(batch) == 4 and len(set(batch.tolist())) == 4
        lab = labels[batch]
        assert all((lab == x).sum() >= 2 for x in lab)  # every anchor has a positive
        assert not set(lab) & {-1, 2, 4}
