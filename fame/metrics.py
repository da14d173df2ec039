"""Ranks with the pessimistic tie rule and the top-k metrics computed from them (FAME_SPEC §5)."""

from __future__ import annotations

import numpy as np
import torch

_INT16_BLOCK = 32767  # columns per int16 partial count: exact, and ~5x faster than an int64 sum


def exclude(scores: torch.Tensor, history_mask: torch.Tensor | None) -> None:
    """Set padding item 0 and the history items to -inf in place.

    ``history_mask``: (B, |V|+1) bool, True = in the user's input history, or the same set as a
    (2, n) [row, item] index tensor (what ``evaluate`` builds: no dense mask needed).
    """
    scores[:, 0] = -torch.inf
    if history_mask is None or not history_mask.numel():
        return
    if history_mask.dtype == torch.bool:
        scores.masked_fill_(history_mask, -torch.inf)
    else:
        scores[history_mask[0], history_mask[1]] = -torch.inf


def count_at_least(scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Per row, the number of entries >= ``threshold`` (B, 1): (B,) int64."""
    hits = scores >= threshold
    total = torch.zeros(len(scores), dtype=torch.int64, device=scores.device)
    for c in range(0, scores.shape[1], _INT16_BLOCK):
        total += hits[:, c : c + _INT16_BLOCK].sum(dim=1, dtype=torch.int16)
    return total


def rank_targets(
    scores: torch.Tensor, targets: torch.Tensor, history_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1 + number of other candidates scoring >= the target, per row (B,). Modifies ``scores``.

    scores: (B, |V|+1); targets: (B,). Item 0 (padding) is never a candidate; history items
    (see ``exclude``) are not candidates, but the target itself always is.
    """
    rows = torch.arange(len(targets), device=scores.device)
    target_scores = scores[rows, targets].clone()
    exclude(scores, history_mask)
    scores[rows, targets] = target_scores
    return count_at_least(scores, target_scores[:, None])  # the target counts itself once


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
