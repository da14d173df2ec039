"""Full-ranking evaluation and top-k recommendation over all items, in chunks of users
(FAME_SPEC §5). One scoring pass serves every protocol and the top-k lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fame.config import PROTOCOL_ORDER, WINDOW_USERS, EvalConfig, Protocol
from fame.data import Sequences, history_windows, parts
from fame.losses import MAX_LOGITS
from fame.metrics import exclude, metrics_from_ranks, rank_targets
from fame.model import SeqRecModel


@dataclass
class EvalResult:
    ranks: np.ndarray  # (U,) int64, 1 = best
    topk_items: np.ndarray  # (U, topk) int64, after the protocol's exclusion
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


def score_chunks(
    model: SeqRecModel,
    offsets: np.ndarray,
    items: np.ndarray,
    batch_size: int,
    device: torch.device | str = "cpu",
    Et: torch.Tensor | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(rows, scores (b, |V|+1), history pairs (2, n)) per chunk of the CSR histories
    ``items[offsets[r]:offsets[r+1]]``: the last ``max_len`` items of each scored through one
    matmul with E. ``scores`` is a reused buffer: consume it before the next chunk.

    ``Et``: ``item_table_t(model)`` computed once by a caller that scores many times (a server).
    """
    Et = item_table_t(model) if Et is None else Et
    n = len(offsets) - 1
    chunk = max(1, min(batch_size, MAX_LOGITS // Et.shape[1], n))
    # reused: a fresh allocation this large is page-faulted in on every chunk
    buf = torch.empty(chunk, Et.shape[1], dtype=Et.dtype, device=device)
    # rows in order of history length, so each chunk is only as wide as its longest window
    lengths = np.minimum(np.diff(offsets), model.cfg.max_len)
    order = np.argsort(lengths, kind="stable")
    for s in range(0, n, chunk):
        rows = order[s : s + chunk]
        width = max(int(lengths[rows].max()), 1)
        seq = torch.from_numpy(history_windows(offsets, items, rows, width)).to(device)
        u = model(seq, last_only=True)[:, -1]  # (b, d)
        scores = torch.mm(u.to(Et.dtype), Et, out=buf[: len(rows)])  # (b, |V|+1)
        yield rows, scores, history_pairs(offsets, items, rows).to(device)


def item_table_t(model: SeqRecModel) -> torch.Tensor:
    """E^T (d, |V|+1), contiguous: the fastest layout for u @ E^T."""
    return model.item_embeddings().detach().T.contiguous()


def match_cold_scores(scores: torch.Tensor, cold: torch.Tensor) -> None:
    """In place: each user's scores of the ``cold`` items (ids, no padding, no repeats) moved to
    the mean and spread of that user's scores of every other item, s' = μ_w + (s - μ_c)·σ_w/σ_c.

    Why: training shrinks the text part of a warm item's embedding and lets its ID part carry the
    spread of its scores, so an item without an ID part scores like a narrower copy of a warm one
    and rarely reaches a top 10 however well its text orders it among the new items. Matching
    the two distributions states the prior that a new item is as likely the target as a warm
    one (true of a random held-out share); order within the cold and within the warm items is
    unchanged. ``scores``: (b, |V| + 1), column 0 padding (left out of both statistics).
    """
    n_c = len(cold)
    n_w = scores.shape[1] - 1 - n_c
    if n_c < 2 or n_w < 2:  # no spread to match
        return
    body = scores[:, 1:]
    s_c = scores[:, cold].double()  # (b, n_c)
    sum_c, sq_c = s_c.sum(1), s_c.square().sum(1)
    # over the whole row without a temporary of its size; float32 sums are pairwise (exact enough)
    sum_all = body.sum(1).double()
    sq_all = torch.linalg.vector_norm(body, dim=1).double().square()
    mu_c, mu_w = sum_c / n_c, (sum_all - sum_c) / n_w
    sd_c = (sq_c / n_c - mu_c.square()).clamp_min(0).sqrt()
    sd_w = ((sq_all - sq_c) / n_w - mu_w.square()).clamp_min(0).sqrt()
    ratio = torch.where(sd_c > 0, sd_w / sd_c.clamp_min(1e-12), torch.ones_like(sd_c))
    moved = mu_w[:, None] + (s_c - mu_c[:, None]) * ratio[:, None]
    scores[:, cold] = moved.to(scores.dtype)


@dataclass
class RankChunk:
    """One chunk of users' results: ``rows`` index the split's users (``user_ids`` and
    ``targets`` are theirs); per protocol, the held-out item's rank (b,) and the top-k items
    (b, topk) after the protocol's exclusion."""

    rows: np.ndarray
    user_ids: np.ndarray
    targets: np.ndarray
    ranks: dict[Protocol, np.ndarray]
    topk_items: dict[Protocol, np.ndarray]


def rank_chunks(
    model: SeqRecModel,
    data: Sequences,
    split: Literal["valid", "test"],
    spec: EvalConfig,
    device: torch.device | str = "cpu",
    protocols: Sequence[Protocol] | None = None,
    topk: int | None = None,
    window: int = WINDOW_USERS,
    cold: np.ndarray | None = None,
) -> Iterator[RankChunk]:
    """Rank every user's held-out item among all items under each protocol (default: the
    spec's), ``spec.batch_size`` users at a time, from one forward pass and one matmul per
    chunk: memory is one chunk's scores and one ``window`` of users' sequences whatever the
    number of users (the evaluate stage writes each chunk's rankings as it comes). Within a
    window, users come in order of history length.

    ``cold``: item ids whose scores ``match_cold_scores`` moves before ranking (none: raw).

    ``topk`` defaults to ``spec.topk``; 0 skips the top-k lists (early stopping needs only ranks).
    Call under ``torch.inference_mode()`` with the model in eval mode (``evaluate`` does).
    """
    protocols = [p for p in PROTOCOL_ORDER if p in (protocols or spec.protocols)]
    topk = min(spec.topk if topk is None else topk, data.num_items)
    cold_ids = None if cold is None or not len(cold) else torch.from_numpy(cold).to(device)
    for first, part in parts(data, window):
        offsets, items = part.inputs(split)
        targets = part.targets(split)
        for rows, scores, hist in score_chunks(model, offsets, items, spec.batch_size, device):
            if cold_ids is not None:
                match_cold_scores(scores, cold_ids)
            tgt = torch.from_numpy(targets[rows]).to(device)
            ranks, top = {}, {}
            for p in protocols:  # each removes at least what the one before it removed
                h = hist if p == "exclude_history" else None
                ranks[p] = rank_targets(scores, tgt, h).cpu().numpy()
                top[p] = np.empty((len(rows), 0), dtype=np.int64)
                if topk:  # the target was kept for ranking; the top-k lists exclude it as well
                    exclude(scores, h)
                    top[p] = torch.topk(scores, topk, dim=1).indices.cpu().numpy()
            yield RankChunk(first + rows, part.user_ids[rows], targets[rows], ranks, top)


@torch.inference_mode()
def evaluate(
    model: SeqRecModel,
    data: Sequences,
    split: Literal["valid", "test"],
    spec: EvalConfig,
    device: torch.device | str = "cpu",
    protocols: Sequence[Protocol] | None = None,
    topk: int | None = None,
) -> dict[Protocol, EvalResult]:
    """``rank_chunks`` gathered into whole-split arrays (rows in user order) and metrics."""
    was_training = model.training
    model.eval()
    ranks: dict[Protocol, np.ndarray] = {}
    top: dict[Protocol, np.ndarray] = {}
    for c in rank_chunks(model, data, split, spec, device, protocols, topk):
        for p in c.ranks:
            if p not in ranks:
                ranks[p] = np.empty(data.num_users, dtype=np.int64)
                top[p] = np.empty((data.num_users, c.topk_items[p].shape[1]), dtype=np.int64)
            ranks[p][c.rows], top[p][c.rows] = c.ranks[p], c.topk_items[p]
    model.train(was_training)
    return {p: EvalResult(ranks[p], top[p], metrics_from_ranks(ranks[p], spec.ks)) for p in ranks}


@torch.inference_mode()
def recommend_topk(
    model: SeqRecModel,
    offsets: np.ndarray,
    items: np.ndarray,
    k: int,
    protocol: Protocol,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    Et: torch.Tensor | None = None,
    cold: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(items (n, k), scores (n, k)) of the next item after each CSR history, best first; under
    ``exclude_history`` the history's own items are not candidates (item 0 never is), and
    where fewer than k remain the tail scores are -inf. ``Et`` as in ``score_chunks``;
    ``cold``: item ids whose scores ``match_cold_scores`` moves first (the scores returned are
    the moved ones), as the evaluate stage ranks them under ``cold_scores = "matched"``."""
    was_training = model.training
    model.eval()
    n = len(offsets) - 1
    k = min(k, model.num_items)
    top_items = np.empty((n, k), dtype=np.int64)
    top_scores = np.empty((n, k), dtype=np.float32)
    for rows, scores, hist in score_chunks(model, offsets, items, batch_size, device, Et):
        if cold is not None:
            match_cold_scores(scores, cold)
        exclude(scores, hist if protocol == "exclude_history" else None)
        best = torch.topk(scores, k, dim=1)
        top_items[rows] = best.indices.cpu().numpy()
        top_scores[rows] = best.values.float().cpu().numpy()
    model.train(was_training)
    return top_items, top_scores
