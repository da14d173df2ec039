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
from common import RESULTS, git_rev, write_json  # noqa: E402

RUNS = Path(__file__).parent / "results" / "runs"
DEFAULT = [
    "cold-beauty-sasrec-text-g10-s1",
    "cold-beauty-sasrec-textpath-g10-s1",
    "cold-beauty-fame-h2-facetpath-g10-s1",
    "cold-beauty-sasrec-textpath-g10-iddrop03-s1",
    "cold-beauty-fame-h2-facetpath-g10-iddrop03-s1",
    "cold-beauty-fame-h2-facetpath-g10-pcakeep-s1",
    "cold-beauty-sasrec-textpath-g10-iddrop03-e0-s1",
    "cold-beauty-fame-h2-facetpath-g10-iddrop03-e0-s1",
]
OFFSETS = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0)


def _ndcg(rank: np.ndarray) -> np.ndarray:
    return np.where(rank < 10, 1 / np.log2(rank + 2), 0.0)


def cold_ranks(run, batch: int = 1024) -> dict:
    """Rank statistics of the cold test targets of one run and its offset trade-off."""
    from fame.data import history_windows

    items, seq = run.items, run._sequences
    held = np.zeros(len(items) + 1, dtype=bool)
    held[1:] = items["held_out"].to_numpy(zero_copy_only=False)
    target, valid = seq["test_item"].to_numpy(), seq["valid_item"].to_numpy()
    train = seq["train_items"].combine_chunks()
    offsets, flat = train.offsets.to_numpy(), train.values.to_numpy()
    model, sd = run.model.eval(), None
    rank, cold_rank, shifted = [], [], {b: [] for b in OFFSETS}
    for s in range(0, len(target), batch):
        u = np.arange(s, min(s + batch, len(target)))
        hist = [np.append(flat[offsets[i] : offsets[i + 1]], valid[i]) for i in u]
        offs = np.zeros(len(u) + 1, dtype=np.int64)
        np.cumsum([len(h) for h in hist], out=offs[1:])
        cat = np.concatenate(hist).astype(np.int64)
        width = min(int(np.diff(offs).max()), run.config.model.max_len)
        win = torch.from_numpy(history_windows(offs, cat, np.arange(len(u)), width))
        with torch.inference_mode():
            scores = model.score(win).float().numpy()  # (b, |V|+1)
        if sd is None:
            sd = float(scores[:, 1:].std())
        scores[:, 0] = -np.inf
        scores[np.repeat(np.arange(len(u)), np.diff(offs)), cat] = -np.inf  # exclude_history
        t = target[u]
        ts = scores[np.arange(len(u)), t][:, None]
        cold = held[t]
        above = scores[cold] > ts[cold]
        rank.append(above.sum(1))
        cold_rank.append((above & held[None]).sum(1))
        for b in OFFSETS:  # the cold items' scores (targets' too) raised by b·sd
            lifted = ts + b * sd * cold[:, None]
            r = (scores + (b * sd) * held[None] > lifted).sum(1)
            shifted[b].append(np.stack([_ndcg(r), cold]))
    rank, cold_rank = np.concatenate(rank), np.concatenate(cold_rank)
    trade = []
    for b in OFFSETS:
        g, c = np.concatenate(shifted[b], axis=1)
        c = c.astype(bool)
        trade.append({"offset_sd": b, "cold": float(g[c].mean()), "warm": float(g[~c].mean())})
    return {
        "cold_users": int(len(rank)),
        "cold_items": int(held.sum()),
        "ndcg@10": float(_ndcg(rank).mean()),
        "recall@100": float((rank < 100).mean()),
        "median_rank": float(np.median(rank)),
        "median_rank_among_cold": float(np.median(cold_rank)),
        "ndcg@10_among_cold": float(_ndcg(cold_rank).mean()),
        "score_sd": sd,
        "offset_tradeoff": trade,
    }


def main() -> None:
    from app import api

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
        record = json.loads(path.read_text())
        stats = cold_ranks(api.open_run(record["run_id"], artifacts=args.artifacts))
        rows[name] = {"variant": record["variant"], "git": git_rev(), **stats}
        flat = " ".join(f"{k} {v:.4g}" for k, v in stats.items() if isinstance(v, float))
        trade = " ".join(
            f"b={r['offset_sd']}: {r['cold']:.4f}/{r['warm']:.4f}" for r in stats["offset_tradeoff"]
        )
        print(f"{name}: {flat}\n  cold/warm NDCG@10 with cold scores + b·sd: {trade}", flush=True)
    write_json("cold_ranks.json", {"runs": rows})


if __name__ == "__main__":
    main()
