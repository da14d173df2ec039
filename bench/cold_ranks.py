"""Where the cold targets of the cold-start suite land in the ranking, and what it costs to lift them.

NDCG@10 on cold targets says only whether a cold item reaches the top 10, against every warm
item. This script scores each recorded run's test users with its model (``exclude_history``)
and reports, for the users whose target was held out of training (``data.cold_items``):
NDCG@10 (as the evaluate stage), recall@100, the target's median rank, and its rank and NDCG@10
among the cold items alone: how well the text part orders the items it alone embeds, whatever
the warm items score. Then the trade-off of one score offset b added to every cold item
(b in units of the score's standard deviation over the catalogue): cold and warm NDCG@10 on
test at each b, so that two representations can be compared at the same cost to warm users.
Nothing here is chosen: b = 0 is what every run reports.

    python bench/cold_ranks.py --artifacts artifacts   # the beauty-cold records, seed 1
    python bench/cold_ranks.py --artifacts artifacts --runs cold-beauty-sasrec-text-g10-s2
    python bench/cold_ranks.py --artifacts artifacts --merge --runs NAME   # add rows, keep the rest

Writes bench/results/cold_ranks.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_eval import RUNS, held_out_mask, ndcg, open_recorded, target_ranks  # noqa: E402
from common import RESULTS, git_rev, write_json  # noqa: E402

DEFAULT = [
    "cold-beauty-sasrec-text-g10-s1",
    "cold-beauty-sasrec-textpath-g10-s1",
    "cold-beauty-fame-h2-facetpath-g10-s1",
    "cold-beauty-sasrec-textpath-g10-iddrop03-s1",
    "cold-beauty-fame-h2-facetpath-g10-iddrop03-s1",
    "cold-beauty-fame-h2-facetpath-g10-pcakeep-s1",
    "cold-beauty-sasrec-textpath-g10-iddrop03-e0-s1",
    "cold-beauty-fame-h2-facetpath-g10-iddrop03-e0-s1",
    "cold-beauty-sasrec-textpath-g10-regress-s1",
    "cold-beauty-fame-h2-facetpath-g10-regress-s1",
]
OFFSETS = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0)


def cold_ranks(run, batch: int = 1024) -> dict:
    """Rank statistics of the cold test targets of one run and its offset trade-off."""
    held = held_out_mask(run)
    target = run._sequences["test_item"].to_numpy()
    sd = None
    rank, cold_rank, shifted = [], [], {b: [] for b in OFFSETS}
    for u, _, raw, scores in target_ranks(run, np.arange(len(target)), "test", batch=batch):
        if sd is None:
            sd = float(raw[:, 1:].std())
        t = target[u]
        ts = scores[np.arange(len(u)), t][:, None]
        cold = held[t]
        above = scores[cold] > ts[cold]
        rank.append(above.sum(1))
        cold_rank.append((above & held[None]).sum(1))
        for b in OFFSETS:  # the cold items' scores (targets' too) raised by b·sd
            lifted = ts + b * sd * cold[:, None]
            r = (scores + (b * sd) * held[None] > lifted).sum(1)
            shifted[b].append(np.stack([ndcg(r), cold]))
    rank, cold_rank = np.concatenate(rank), np.concatenate(cold_rank)
    trade = []
    for b in OFFSETS:
        g, c = np.concatenate(shifted[b], axis=1)
        c = c.astype(bool)
        trade.append({"offset_sd": b, "cold": float(g[c].mean()), "warm": float(g[~c].mean())})
    return {
        "cold_users": int(len(rank)),
        "cold_items": int(held.sum()),
        "ndcg@10": float(ndcg(rank).mean()),
        "recall@100": float((rank < 100).mean()),
        "median_rank": float(np.median(rank)),
        "median_rank_among_cold": float(np.median(cold_rank)),
        "ndcg@10_among_cold": float(ndcg(cold_rank).mean()),
        "score_sd": sd,
        "offset_tradeoff": trade,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--runs", nargs="*", default=DEFAULT, help="record names in bench/results/runs")
    ap.add_argument(
        "--merge", action="store_true", help="keep the rows of cold_ranks.json not rerun here"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    old = RESULTS / "cold_ranks.json"
    rows = json.loads(old.read_text())["runs"] if args.merge and old.exists() else {}
    for name in args.runs:
        path = RUNS / f"{name}.json"
        if not path.exists():
            print(f"{name}: no record, skipped")
            continue
        record, run = open_recorded(name, args.artifacts)
        stats = cold_ranks(run)
        rows[name] = {"variant": record["variant"], "git": git_rev(), **stats}
        flat = " ".join(f"{k} {v:.4g}" for k, v in stats.items() if isinstance(v, float))
        trade = " ".join(
            f"b={r['offset_sd']}: {r['cold']:.4f}/{r['warm']:.4f}" for r in stats["offset_tradeoff"]
        )
        print(f"{name}: {flat}\n  cold/warm NDCG@10 with cold scores + b·sd: {trade}", flush=True)
    write_json("cold_ranks.json", {"runs": rows})


if __name__ == "__main__":
    main()
