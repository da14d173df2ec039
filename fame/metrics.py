"""Ranks with the pessimistic tie rule and the top-k metrics computed from them (FAME_SPEC §5)."""

from __future__ import annotations

import numpy as np
import torch


def rank_targets(
    scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None
) -> torch.Tensor:
    """1 + number of other candidates scoring >= the target, per row. Modifies ``scores``.

    scores: (B, |V|+1); targets: (B,); history: (2, n) [row, item] pairs to exclude (the target
    itself is never excluded). Item 0 (padding) is never a candidate.
    """
    rows = torch.arange(len(targets), device=scores.device)
    target_scores = scores[rows, targets].clone()
    scores[:, 0] = -torch.inf
    if history is not None and history.numel():
        scores[history[0], history[1]] = -torch.inf
    scores[rows, targets] = target_scores
    return (scores >= target_scores[:, None]).sum(dim=1)  # the target counts itself once


def metrics_from_ranks(
    ranks: np.ndarray | torch.Tensor, ks: tuple[int, ...] = (5, 10, 20)
) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1/log2(rank+1) inside the top k) and MRR, user means."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = (
            torch.where(hit, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)).mean().item()
        )
    out["mrr"] = (1.0 / r).mean().item()
    return out
