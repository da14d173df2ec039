"""Can a calibration of text-only items lift cold targets without costing warm ones?

For a text-pathway run of the cold-start suite, the held-out items' embeddings are
γ · s·φ(t_v) + e (e: their ID part, zero or the learned e_∅), and their scores are then offset
by b: γ widens the spread of the text-only scores, b moves their mean. For each (γ, b) on a
grid, on a seeded sample of test users (``exclude_history``): NDCG@10 on cold and warm targets,
and the per-user gap between the mean cold and mean warm score and the two score spreads. The
grid is fixed in advance and nothing is chosen from it: it maps the trade-off.

    python bench/cold_calibration.py --artifacts artifacts --runs NAME [NAME ...]

Writes bench/results/cold_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, git_rev, write_json  # noqa: E402

RUNS = RESULTS / "runs"
DEFAULT = [
    "cold-beauty-fame-h2-facetpath-g10-iddrop03-e0-s1",
    "cold-beauty-sasrec-textpath-g10-iddrop03-e0-s1",
]
GRID = [(1.0, 0.0), (1.25, -1.0), (1.5, -1.5), (1.5, -2.5), (1.5, -3.5), (2.0, -4.0), (2.0, -5.0)]


def _ndcg(rank: np.ndarray) -> np.ndarray:
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
    """Yield (users, rank of each target, scores) per batch, ``exclude_history``: the valid
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
        yield u, (ranked > ranked[np.arange(len(u)), t][:, None]).sum(1), scores


def calibration(run, users: int, seed: int) -> list[dict]:
    """One row per (γ, b) of GRID: cold / warm NDCG@10 and the score statistics."""
    held = held_out_mask(run)
    warm = ~held
    warm[0] = False
    target = run._sequences["test_item"].to_numpy()
    sample = sample_users(run, users, seed)
    table = run.model.text_items
    semantic = table.semantic.clone()
    rows = []
    for gamma, b in GRID:
        table.semantic.copy_(semantic)
        table.semantic[torch.from_numpy(held)] *= gamma

        def offset(scores: np.ndarray, b: float = b) -> None:
            scores[:, held] += b

        gain, is_cold, gap, sd_cold, sd_warm = [], [], [], [], []
        for u, rank, scores in target_ranks(run, sample, "test", offset):
            gap.append(scores[:, held].mean(1) - scores[:, warm].mean(1))
            sd_cold.append(scores[:, held].std(1))
            sd_warm.append(scores[:, warm].std(1))
            gain.append(_ndcg(rank))
            is_cold.append(held[target[u]])
        g, c = np.concatenate(gain), np.concatenate(is_cold)
        rows.append(
            {
                "gamma": gamma,
                "offset": b,
                "cold": float(g[c].mean()),
                "warm": float(g[~c].mean()),
                "all": float(g.mean()),
                "cold_users": int(c.sum()),
                "mean_gap": float(np.concatenate(gap).mean()),
                "sd_cold": float(np.concatenate(sd_cold).mean()),
                "sd_warm": float(np.concatenate(sd_warm).mean()),
            }
        )
    table.semantic.copy_(semantic)
    return rows


def main() -> None:
    from app import api

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--runs", nargs="*", default=DEFAULT, help="record names in bench/results/runs")
    ap.add_argument("--users", type=int, default=6000, help="test users sampled")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = {}
    for name in args.runs:
        record = json.loads((RUNS / f"{name}.json").read_text())
        rows = calibration(
            api.open_run(record["run_id"], artifacts=args.artifacts), args.users, args.seed
        )
        out[name] = {"variant": record["variant"], "git": git_rev(), "grid": rows}
        for r in rows:
            print(
                f"{name} γ={r['gamma']} b={r['offset']}: cold {r['cold']:.4f} warm {r['warm']:.4f} "
                f"all {r['all']:.4f} | gap {r['mean_gap']:.2f} sd {r['sd_cold']:.2f}/{r['sd_warm']:.2f}",
                flush=True,
            )
    write_json("cold_calibration.json", {"args": vars(args), "runs": out})


if __name__ == "__main__":
    main()
