"""Attention masks and the standard post-LN Transformer block of the SASRec backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_mask(seq: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, T, T) boolean mask, True = may attend: causal, within the query's own segment.

    ``segments`` (B, T) numbers the sequences packed in a row (0 = padding); without it every row
    is one left-padded sequence. Padding keys are masked. A position may always attend to itself,
    so padding queries get a defined output instead of NaN; they carry no loss and no prediction.
    """
    T = seq.shape[1]
    seg = (seq != 0).long() if segments is None else segments
    causal = torch.ones(T, T, dtype=torch.bool, device=seq.device).tril()
    same = (seg[:, :, None] == seg[:, None, :]) & (seg != 0)[:, None, :]  # (B, T, T)
    eye = torch.eye(T, dtype=torch.bool, device=seq.device)
    return ((same & causal) | eye)[:, None]


class FeedForward(nn.Module):
    """Position-wise FFN: width -> 4 width -> width with GELU."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with W_Q, W_K, W_V, W_O (heads batched, no loop)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Attention output at every position, or only at the last one (``last_only``)."""
        B, T, d = x.shape
        q, k, v = (
            self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )  # (B, H, T, d')
        if last_only:
            q, mask = q[:, :, -1:], mask[:, :, -1:]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, q.shape[2], d))


class TransformerBlock(nn.Module):
    """x <- LN(x + Drop(MHA(x))); x <- LN(x + Drop(FFN(x)))  (FAME_SPEC §1.3)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.attn = SelfAttention(d, heads)
        self.ln1 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, dropout)
        self.ln2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, T, d), or (B, 1, d) for the last position only (prediction needs no more)."""
        y = self.attn(x, mask, last_only)
        x = self.ln1((x[:, -1:] if last_only else x) + self.drop(y))
        return self.ln2(x + self.drop(self.ffn(x)))
