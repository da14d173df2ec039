"""Supervised contrastive loss (Khosla et al. 2020, the L_out form) and label-balanced batches."""

from __future__ import annotations

import numpy as np
import torch


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Mean over anchors with a positive of -mean_p log softmax_{j != i}(z_i·z_j / τ)[p]."""
    n = z.shape[0]
    sim = (z @ z.T) / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, -torch.inf)  # an anchor is never its own candidate
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not has.any():
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has])
    return per_anchor.mean()


class BalancedSampler:
    """Batches of m labels × k items: every anchor has positives (labels with >= 2 items only)."""

    def __init__(self, labels: np.ndarray, labels_per_batch: int, items_per_label: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.m, self.k = labels_per_batch, items_per_label
        valid = np.flatnonzero(labels >= 0)
        order = valid[np.argsort(labels[valid], kind="stable")]
        uniq, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        keep = counts >= 2
        self.groups = [order[s : s + c] for s, c in zip(starts[keep], counts[keep], strict=True)]
        if not self.groups:
            raise ValueError("no label is held by at least 2 items")

    def sample(self) -> np.ndarray:
        chosen = self.rng.choice(
            len(self.groups), size=min(self.m, len(self.groups)), replace=False
        )
        parts = []
        for g in chosen:
            items = self.groups[g]
            parts.append(self.rng.choice(items, size=min(self.k, len(items)), replace=False))
        return np.concatenate(parts)
