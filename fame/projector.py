"""φ_k: one 2-layer MLP per facet mapping the frozen text vector to its facet sub-space.

Shared by the facet pre-training (which shapes it) and the model's text pathway (which keeps
it, so that an item's embedding stays a function of its text)."""

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

    def __init__(
        self,
        facets: int,
        dim_in: int,
        hidden: int,
        dim_out: int,
        base: tuple[torch.Tensor, torch.Tensor] | None = None,
        normalize: bool = True,
    ):
        """``base`` = (mean (D,), axes (H, D, d')): a fixed linear start, z^k = normalize((t - μ)
        A_k + φ_k(t)) with φ_k's last layer at zero, so training begins from the projection.
        ``normalize=False`` drops the unit norm: with a base, the plain PCA projection of
        ``init = text`` (one "facet" of d dims) plus a residual MLP."""
        super().__init__()
        self.normalize = normalize
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))
            for _ in range(facets)
        )
        self.register_buffer("mean", None if base is None else base[0].clone())
        self.register_buffer("axes", None if base is None else base[1].clone())
        if base is not None:
            for m in self.mlps:
                nn.init.zeros_(m[2].weight)
                nn.init.zeros_(m[2].bias)

    def project(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Facet k only: (n, D) -> (n, d')."""
        out = self.mlps[k](x)
        if self.axes is not None:
            out = out + (x - self.mean) @ self.axes[k]
        return F.normalize(out, dim=-1) if self.normalize else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All facets: (n, D) -> (n, H, d')."""
        w1 = torch.stack([m[0].weight for m in self.mlps])  # (H, hidden, D)
        b1 = torch.stack([m[0].bias for m in self.mlps])  # (H, hidden)
        w2 = torch.stack([m[2].weight for m in self.mlps])  # (H, d', hidden)
        b2 = torch.stack([m[2].bias for m in self.mlps])  # (H, d')
        h = F.gelu(torch.einsum("nd,khd->nkh", x, w1) + b1)  # (n, H, hidden)
        out = torch.einsum("nkh,koh->nko", h, w2) + b2  # (n, H, d')
        if self.axes is not None:
            out = out + torch.einsum("nd,kdo->nko", x - self.mean, self.axes)
        return F.normalize(out, dim=-1) if self.normalize else out
