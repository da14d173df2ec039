"""Supervised contrastive loss (Khosla et al. 2020, the L_out form)."""

from __future__ import annotations

import torch

__all__ = ["supcon_loss"]


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Mean over anchors i with a positive of -1/|P(i)| Σ_{p∈P(i)} log softmax_{a≠i}(z_i·z_a/τ)_p.

    ``z`` (B, d) unit-norm, ``labels`` (B,). Positives of i: the other items with its label;
    every other in-batch item is in the softmax. A negative label means "no label": such an item
    is neither an anchor nor a positive, only a negative. Anchors without a positive are
    ignored; a batch with none gives a zero loss that still backpropagates (zero gradients).
    """
    n = z.shape[0]
    sim = (z @ z.T) / temperature  # (B, B)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, -torch.inf)  # an anchor is never its own candidate
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    labelled = labels >= 0
    pos = (labels[:, None] == labels[None, :]) & labelled[:, None] & ~self_mask
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not has.any():
        return z.sum() * 0.0
    per_anchor = log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has]
    return -per_anchor.mean()
