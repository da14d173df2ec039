"""Full-ranking evaluation over all items, in chunks of users (FAME_SPEC §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fame.config import TrainConfig
from fame.data import SplitData, history_windows
from fame.losses import MAX_LOGITS
from fame.metrics import exclude, metrics_from_ranks, rank_targets
from fame.model import SeqRecModel


@dataclass
class EvalResult:
    ranks: np.ndarray  # (U,) int64, 1 = best
    topk_items: np.ndarray  # (U, topk) int64, after exclusion
    metrics: dict[str, float]


def history_pairs(offsets: np.ndarray, items: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """(2, n) [row-in-chunk, item] pairs of the chunk users' whole input histories."""
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    chunk_row = np.repeat(np.arange(len(rows)), lengths)
    pos = (
        np.arange(lengths.sum())
        - np.repeat(np.cumsum(lengths) - lengths, lengths)
        + np.repeat(starts, lengths)
    )
    return torch.from_numpy(np.stack([chunk_row, items[pos]]))


@torch.inference_mode()
def evaluate(
    model: SeqRecModel,
    data: SplitData,
    split: Literal["valid", "test"],
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    topk: int = 20,
) -> EvalResult:
    """Rank every user's held-out item among all items; history excluded per ``cfg``.

    ``topk=0`` skips the top-k lists (early stopping needs only the ranks).
    """
    was_training = model.training
    model.eval()
    offsets, items = data.inputs(split)
    targets = data.targets(split)
    topk = min(topk, data.num_items)
    Et = model.item_embeddings().T.contiguous()  # (d, |V|+1): the fastest layout for u @ E^T
    chunk = max(1, min(cfg.eval_batch_size, MAX_LOGITS // Et.shape[1], data.num_users))
    # reused: a fresh allocation this large is page-faulted in on every chunk
    scores_buf = torch.empty(chunk, Et.shape[1], dtype=Et.dtype, device=device)
    ranks = np.empty(data.num_users, dtype=np.int64)
    top = np.empty((data.num_users, topk), dtype=np.int64)
    L = model.cfg.max_len
    # users in order of history length, so each chunk is only as wide as its longest window
    lengths = np.minimum(np.diff(offsets), L)
    order = np.argsort(lengths, kind="stable")
    for s in range(0, data.num_users, chunk):
        rows = order[s : s + chunk]
        width = max(int(lengths[rows].max()), 1)
        seq = torch.from_numpy(history_windows(offsets, items, rows, width)).to(device)
        u = model(seq, last_only=True)[:, -1]  # (b, d)
        scores = torch.mm(u.to(Et.dtype), Et, out=scores_buf[: len(rows)])  # (b, |V|+1)
        hist = history_pairs(offsets, items, rows).to(device) if cfg.exclude_history else None
        tgt = torch.from_numpy(targets[rows]).to(device)
        ranks[rows] = rank_targets(scores, tgt, hist).cpu().numpy()
        if topk:  # the target was kept for ranking; the top-k lists exclude the whole history
            exclude(scores, hist)
            top[rows] = torch.topk(scores, topk, dim=1).indices.cpu().numpy()
    model.train(was_training)
    return EvalResult(ranks, top, metrics_from_ranks(ranks, tuple(cfg.ks)))
