"""Facet pre-training settings on real data, judged without training a recommender.

    python bench/pretrain_sweep.py [--config beauty] [--artifacts DIR]

What temperature, steps, label balance, the §6.9 alternatives (PCA start,
an information-keeping term) and the facet choice do. Training FAME takes minutes per setting;
this sweep measures in seconds what each setting does to the initial table:

- ``own`` / ``text``: each facet's kNN label accuracy from its own slice and from the raw text
  vector (the `facet_report` of §6.8), averaged over facets;
- ``text_recall@10``: how often an item's nearest neighbour by text is among its 10 nearest by
  the table: how much of what the title says (beyond the facet labels) the table keeps; the
  plain PCA projection of ``init=text`` is the reference row.

Reads the ingest and encode artifacts of the config from the store (run `fame encode -c NAME`
first); writes ``bench/results/pretrain_sweep_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

SETTINGS: list[tuple[str, dict]] = [
    ("spec defaults (τ 0.07, 2000 steps, 16 labels × 8)", {}),
    ("τ 0.2", {"temperature": 0.2}),
    ("τ 0.5", {"temperature": 0.5}),
    ("500 steps", {"steps": 500}),
    ("8000 steps", {"steps": 8000}),
    ("32 labels × 4 items", {"labels_per_batch": 32, "items_per_label": 4}),
    ("joint schedule", {"schedule": "joint"}),
    ("PCA start", {"start": "pca"}),
    ("keep_text 2", {"keep_text": 2.0}),
    ("PCA start + keep_text 2", {"start": "pca", "keep_text": 2.0}),
]


def text_recall(text: np.ndarray, table: np.ndarray, k: int = 10, chunk: int = 2048) -> float:
    """Fraction of items whose nearest text neighbour is among their k nearest table rows."""
    t = F.normalize(torch.from_numpy(np.ascontiguousarray(text)).float(), dim=-1)
    e = F.normalize(torch.from_numpy(np.ascontiguousarray(table)).float(), dim=-1)
    hits = 0
    for s in range(0, len(t), chunk):
        rows = torch.arange(s, min(s + chunk, len(t)))
        ts, es = t[rows] @ t.T, e[rows] @ e.T  # (c, n) each
        ts[torch.arange(len(rows)), rows] = -torch.inf
        es[torch.arange(len(rows)), rows] = -torch.inf
        nearest = ts.argmax(1)
        hits += int((es.topk(k, dim=1).indices == nearest[:, None]).any(1).sum())
    return hits / len(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="beauty")
    parser.add_argument("--artifacts", default=None)
    args = parser.parse_args()
    from pipeline.artifacts import facet_labels, text_vectors
    from pipeline.config import load_config
    from pipeline.runner import plan_keys
    from pretrain.config import PretrainConfig
    from pretrain.train import initial_embeddings, knn_report, plain_projection, pretrain_facets
    from storage import ArtifactStore

    cfg = load_config(args.config, {"paths.artifacts": args.artifacts} if args.artifacts else {})
    keys = plan_keys(cfg)
    store = ArtifactStore(cfg.artifacts_dir())
    ingest, encode = store.get("ingest", keys["ingest"]), store.get("encode", keys["encode"])
    if ingest is None or encode is None:
        sys.exit(f"no ingest/encode artifact for {args.config}: run `fame encode -c {args.config}`")
    items = ingest.table("items")
    ids, text = text_vectors(encode)
    labels = facet_labels(cfg, items)[:, np.searchsorted(items["item_id"].to_numpy(), ids)]
    names = [f.name for f in cfg.facets]
    d_prime = cfg.model.d // cfg.model.heads
    base = dataclasses.asdict(cfg.pretrain)
    pca = plain_projection(text, cfg.model.d, cfg.model.init_std, cfg.train.seed)
    rows = [{"setting": "init=text (PCA, no facets)", "text_recall@10": text_recall(text, pca)}]
    print(f"{rows[0]['setting']:<52} text_recall@10 {rows[0]['text_recall@10']:.3f}")
    for label, over in SETTINGS:
        pcfg = PretrainConfig(**{**base, **over})
        t0 = time.perf_counter()
        result = pretrain_facets(text, labels, d_prime, pcfg, progress=False)
        seconds = time.perf_counter() - t0
        report = knn_report(text, result.z, labels, names, k=pcfg.knn_k, seed=pcfg.seed)
        acc = {(r["facet"], r["representation"]): r["accuracy"] for r in report}
        row = {
            "setting": label,
            "overrides": over,
            "pretrain_seconds": seconds,
            "own": {f: acc[(f, f"slice:{f}")] for f in names},
            "text": {f: acc[(f, "text")] for f in names},
            "best_other": {f: max(acc[(f, f"slice:{g}")] for g in names if g != f) for f in names},
            "text_recall@10": text_recall(text, initial_embeddings(result.z, cfg.model.init_std)),
        }
        rows.append(row)
        print(
            f"{label:<52} own {statistics.mean(row['own'].values()):.3f} "
            f"text {statistics.mean(row['text'].values()):.3f} "
            f"other {statistics.mean(row['best_other'].values()):.3f} "
            f"text_recall@10 {row['text_recall@10']:.3f} ({seconds:.0f} s)",
            flush=True,
        )
    write_json(
        f"pretrain_sweep_{cfg.data.name}.json",
        {"config": args.config, "facets": names, "rows": rows},
    )


if __name__ == "__main__":
    main()
