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
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_eval import held_out_mask, ndcg, open_recorded, sample_users, target_ranks  # noqa: E402
from common import git_rev, write_json  # noqa: E402

DEFAULT = [
    "cold-beauty-fame-h2-facetpath-g10-iddrop03-e0-s1",
    "cold-beauty-sasrec-textpath-g10-iddrop03-e0-s1",
]
GRID = [(1.0, 0.0), (1.25, -1.0), (1.5, -1.5), (1.5, -2.5), (1.5, -3.5), (2.0, -4.0), (2.0, -5.0)]


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
        for u, rank, scores, _ in target_ranks(run, sample, "test", offset):
            gap.append(scores[:, held].mean(1) - scores[:, warm].mean(1))
            sd_cold.append(scores[:, held].std(1))
            sd_warm.append(scores[:, warm].std(1))
            gain.append(ndcg(rank))
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--runs", nargs="*", default=DEFAULT, help="record names in bench/results/runs")
    ap.add_argument("--users", type=int, default=6000, help="test users sampled")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = {}
    for name in args.runs:
        record, run = open_recorded(name, args.artifacts)
        rows = calibration(run, args.users, args.seed)
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
