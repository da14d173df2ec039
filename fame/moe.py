"""FAME's last block: a mixture of query experts inside every head, heads kept apart (§2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fame.attention import FeedForward


class MoEHeadBlock(nn.Module):
    """Per head h: shared K^h, V^h; N expert queries; dense router; own residual stream.

    Returns F of shape (B, H, T, d'): head h's view of the user at every position.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        experts: int,
        dropout: float,
        residual: str = "slice",
        top_k: int = 0,
    ):
        super().__init__()
        self.H, self.N, self.dh = heads, experts, d // heads
        self.top_k = top_k if 0 < top_k < experts else 0  # k = N is the dense router
        # "proj": X W_R with W_R = [W_R^1 ‖ … ‖ W_R^H] (d × d); None: the slices X^{[h]}
        self.res = nn.Linear(d, d, bias=False) if residual == "proj" else None
        self.kv = nn.Linear(d, 2 * d)  # [W_K^1..W_K^H | W_V^1..W_V^H]
        self.q = nn.Linear(d, heads * experts * self.dh)  # W_Q^{h,n}
        self.router = nn.Parameter(torch.empty(heads, experts * self.dh, experts))  # W_r^h
        self.ln1 = nn.LayerNorm(self.dh)
        self.ffn = FeedForward(self.dh, dropout)  # FFN' shared by all heads
        self.ln2 = nn.LayerNorm(self.dh)
        self.drop = nn.Dropout(dropout)

    def expert_outputs(
        self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """f^{h,n} for all heads and experts: (B, H, N, Tq, d'), Tq = T or 1 (``last_only``)."""
        B, T, _ = x.shape
        H, N, dh = self.H, self.N, self.dh
        k, v = self.kv(x).view(B, T, 2, H, dh).permute(2, 0, 3, 1, 4)  # (B, H, T, d')
        xq = x[:, -1:] if last_only else x
        mask = mask[:, :, -1:] if last_only else mask
        Tq = xq.shape[1]
        q = self.q(xq).view(B, Tq, H, N, dh).permute(0, 2, 3, 1, 4)  # (B, H, N, Tq, d')
        # experts share K and V: fold N into the query axis, one attention call for everything
        q = q.reshape(B, H, N * Tq, dh)
        m = mask.repeat(1, 1, N, 1)  # (B, 1, N*Tq, T)
        f = F.scaled_dot_product_attention(q, k, v, attn_mask=m)  # (B, H, N*Tq, d')
        return f.view(B, H, N, Tq, dh)

    @torch.no_grad()
    def reset_residual(self) -> None:
        """W_R^h starts as the selector of slice h: "proj" begins equal to "slice"."""
        if self.res is not None:
            nn.init.eye_(self.res.weight)

    def route(self, f: torch.Tensor) -> torch.Tensor:
        """β^h = softmax(W_r^h [f^{h,1} ‖ … ‖ f^{h,N}]) per position: (B, H, T, N).

        With ``top_k`` the softmax runs over each position's k largest logits, the rest get 0.
        """
        B, H, N, T, dh = f.shape
        cat = f.permute(0, 1, 3, 2, 4).reshape(B, H, T, N * dh)
        logits = torch.einsum("bhtc,hcn->bhtn", cat, self.router)
        if self.top_k:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        f = self.expert_outputs(x, mask, last_only)  # (B, H, N, Tq, d')
        beta = self.route(f)  # (B, H, Tq, N)
        fh = torch.einsum("bhtn,bhntk->bhtk", beta, f)  # (B, H, Tq, d')
        xq = x[:, -1:] if last_only else x
        B, Tq, _ = xq.shape
        if self.res is not None:
            xq = self.res(xq)
        xh = xq.reshape(B, Tq, self.H, self.dh).transpose(1, 2)  # X^{[h]}: (B, H, Tq, d')
        fh = self.ln1(xh + self.drop(fh))
        return self.ln2(fh + self.drop(self.ffn(fh)))
