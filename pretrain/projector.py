"""φ_k: one 2-layer MLP per facet mapping the frozen text vector to its facet sub-space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FacetProjector"]


class FacetProjector(nn.Module):
    """z_v^k = normalize(φ_k(t_v)), φ_k = Linear(D, hidden) -> GELU -> Linear(hidden, d').

    Each facet owns separate parameters, so an alternating step that trains facet k leaves
    every other φ_j untouched (no gradient, hence no optimiser moment or weight-decay update).
    ``forward`` still evaluates all facets in one batched op by stacking their weights.
    """

    def __init__(self, facets: int, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))
            for _ in range(facets)
        )

    def project(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Facet k only: (n, D) -> (n, d')."""
        return F.normalize(self.mlps[k](x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All facets: (n, D) -> (n, H, d')."""
        w1 = torch.stack([m[0].weight for m in self.mlps])  # (H, hidden, D)
        b1 = torch.stack([m[0].bias for m in self.mlps])  # (H, hidden)
        w2 = torch.stack([m[2].weight for m in self.mlps])  # (H, d', hidden)
        b2 = torch.stack([m[2].bias for m in self.mlps])  # (H, d')
        h = F.gelu(torch.einsum("nd,khd->nkh", x, w1) + b1)  # (n, H, hidden)
        return F.normalize(torch.einsum("nkh,koh->nko", h, w2) + b2, dim=-1)
