"""Scoring a cold-start run's users outside the evaluate stage, for the bench scripts that
look into its ranking (cold_ranks, cold_calibration, cold_ridge): the same histories and
``exclude_history`` masking, one batched ``score`` call per batch of users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

RUNS = Path(__file__).resolve().parent / "results" / "runs"


def open_recorded(name: str, artifacts: str):
    """(record, opened run) of the bench record ``RUNS/<name>.json``, from its artifacts."""
    from app import api

    record = json.loads((RUNS / f"{name}.json").read_text())
    return record, api.open_run(record["run_id"], artifacts=artifacts)


def ndcg(rank: np.ndarray) -> np.ndarray:
    return np.where(rank < 10, 1 / np.log2(rank + 2), 0.0)


def sample_users(run, users: int, seed: int) -> np.ndarray:
    """A seeded sample of row indices of the run's sequences."""
    n = run._sequences.num_rows
    return np.random.default_rng(seed).choice(n, min(users, n), False)


def held_out_mask(run) -> np.ndarray:
    """(|V| + 1,) True for the items the cold-start protocol held out of training."""
    held = np.zeros(len(run.items) + 1, dtype=bool)
    held[1:] = run.items["held_out"].to_numpy(zero_copy_only=False)
    return held


def target_ranks(run, sample: np.ndarray, split: str = "test", adjust=None, batch: int = 1024):
    """Yield (users, rank of each target, raw scores, ranked scores) per batch, ranked scores
    being the raw ones with padding and history at -inf (``exclude_history``): the valid
    target after the training history, or the test target after training + valid.
    ``adjust(scores)`` edits the raw scores (b, |V| + 1) in place before ranking."""
    from fame.data import history_windows

    seq = run._sequences
    target = seq[f"{split}_item"].to_numpy()
    valid = seq["valid_item"].to_numpy()
    train = seq["train_items"].combine_chunks()
    offsets, flat = train.offsets.to_numpy(), train.values.to_numpy()
    model = run.model.eval()
    for s in range(0, len(sample), batch):
        u = sample[s : s + batch]
        hist = [flat[offsets[i] : offsets[i + 1]] for i in u]
        if split == "test":
            hist = [np.append(h, valid[i]) for h, i in zip(hist, u, strict=True)]
        offs = np.zeros(len(u) + 1, dtype=np.int64)
        np.cumsum([len(h) for h in hist], out=offs[1:])
        cat = np.concatenate(hist).astype(np.int64)
        width = min(int(np.diff(offs).max()), run.config.model.max_len)
        win = torch.from_numpy(history_windows(offs, cat, np.arange(len(u)), width))
        with torch.inference_mode():
            scores = model.score(win).float().numpy()  # (b, |V|+1)
        if adjust is not None:
            adjust(scores)
        ranked = scores.copy()
        ranked[:, 0] = -np.inf
        ranked[np.repeat(np.arange(len(u)), np.diff(offs)), cat] = -np.inf  # exclude_history
        t = target[u]
        yield u, (ranked > ranked[np.arange(len(u)), t][:, None]).sum(1), scores, ranked
