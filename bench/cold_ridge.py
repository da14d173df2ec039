"""How much does the ridge λ of the regressed ID part matter, and which λ does valid pick?

For a run trained with ``model.id_fallback = "regress"``, the map t -> ID part is refitted at
each λ of a grid fixed in advance (training does not depend on λ: the map is used only at
evaluation), and NDCG@10 (``exclude_history``) is measured on cold, warm and all targets of a
seeded sample of users, on valid and on test. λ is chosen on valid (all targets); test is
reported beside it, never used to pick.

    python bench/cold_ridge.py --artifacts artifacts --runs NAME [NAME ...]

Writes bench/results/cold_ridge.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_eval import held_out_mask, ndcg, open_recorded, sample_users, target_ranks  # noqa: E402
from common import git_rev, write_json  # noqa: E402

DEFAULT = [
    "cold-beauty-fame-h2-facetpath-g10-regress-s1",
    "cold-beauty-sasrec-textpath-g10-regress-s1",
]
GRID = [0.01, 0.1, 1.0, 10.0]


def ridge_grid(run, users: int, seed: int) -> list[dict]:
    """One row per λ of GRID: cold / warm / all NDCG@10 on valid and on test."""
    held = held_out_mask(run)
    sample = sample_users(run, users, seed)
    table = run.model.text_items
    base = table.cfg
    rows = []
    for lam in GRID:
        table.cfg = dataclasses.replace(base, id_ridge=lam)
        table.fit_id_map()
        row = {"ridge": lam}
        for split in ("valid", "test"):
            target = run._sequences[f"{split}_item"].to_numpy()
            gain, cold = [], []
            for u, rank, _, _ in target_ranks(run, sample, split):
                gain.append(ndcg(rank))
                cold.append(held[target[u]])
            g, c = np.concatenate(gain), np.concatenate(cold)
            row[split] = {
                "cold": float(g[c].mean()),
                "warm": float(g[~c].mean()),
                "all": float(g.mean()),
                "cold_users": int(c.sum()),
            }
        rows.append(row)
    table.cfg = base
    table.fit_id_map()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--runs", nargs="*", default=DEFAULT, help="record names in bench/results/runs")
    ap.add_argument("--users", type=int, default=4000, help="users sampled")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = {}
    for name in args.runs:
        record, run = open_recorded(name, args.artifacts)
        rows = ridge_grid(run, args.users, args.seed)
        best = max(rows, key=lambda r: r["valid"]["all"])
        out[name] = {
            "variant": record["variant"],
            "git": git_rev(),
            "grid": rows,
            "chosen_on_valid": best["ridge"],
        }
        for r in rows:
            v, t = r["valid"], r["test"]
            print(
                f"{name} λ={r['ridge']}: valid cold {v['cold']:.4f} all {v['all']:.4f} | "
                f"test cold {t['cold']:.4f} warm {t['warm']:.4f} all {t['all']:.4f}",
                flush=True,
            )
        print(f"{name}: valid picks λ = {best['ridge']}", flush=True)
    write_json("cold_ridge.json", {"args": vars(args), "runs": out})


if __name__ == "__main__":
    main()
