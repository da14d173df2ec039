"""Training and evaluation speed of SASRec and FAME on Beauty (one epoch each, fresh process).

    python bench/train_speed.py [--epochs 1] [--models sasrec,fame]

Reports training sequences/s, evaluation users/s (full ranking of all users), peak RSS, and the
achieved GFLOP/s of an epoch's logits work (forward + two backward products, 6·P·|V|·d for P
non-padding positions) next to a plain torch.matmul GFLOP/s of the same shape measured in the
same process. Targets: FAME's epoch <= 1.3x SASRec's; full evaluation < 10 s; peak < 3 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

CHILD = r"""
import json, sys, time, tempfile
import numpy as np, torch
from common import peak_rss_mb
from fame.evaluate import evaluate
from fame.model import SeqRecModel
from fame.trainer import fit
from pipeline.config import load_config
from pipeline.runner import run_pipeline
from pipeline.artifacts import split_data

model_name, epochs, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = load_config("beauty", {"paths.artifacts": store, "model.name": model_name, "train.epochs": epochs,
                             "train.device": "cpu"})
ing = run_pipeline(cfg, ["ingest"], progress=False).results["ingest"].artifact
data = split_data(ing)
torch.manual_seed(0)
model = SeqRecModel(cfg.model, data.num_items)
lengths = np.diff(data.offsets)
seqs = int((lengths >= 2).sum())
positions = int(np.minimum(lengths[lengths >= 2] - 1, cfg.model.max_len).sum())
res = fit(model, data, cfg.train, tempfile.mkdtemp(), progress=False, spec=cfg.evaluate)
epoch_s = float(np.mean([h["train_seconds"] for h in res.history]))
t = time.perf_counter()
evaluate(model, data, "test", cfg.evaluate, "cpu")
eval_s = time.perf_counter() - t
V, d = data.num_items + 1, cfg.model.d
flops = 6.0 * positions * V * d
a, b = torch.randn(cfg.train.logit_chunk, d), torch.randn(V, d)
for _ in range(3):
    a @ b.T
t = time.perf_counter()
for _ in range(20):
    a @ b.T
mm = 2.0 * cfg.train.logit_chunk * V * d * 20 / (time.perf_counter() - t) / 1e9
print(json.dumps({"model": model_name, "epoch_seconds": epoch_s, "train_sequences_per_s": seqs / epoch_s,
                  "positions": positions, "eval_seconds": eval_s, "eval_users_per_s": data.num_users / eval_s,
                  "logits_gflop_per_epoch": flops / 1e9, "achieved_gflops": flops / epoch_s / 1e9,
                  "matmul_gflops": mm, "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", default="sasrec,fame")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as store:
        for name in args.models.split(","):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, name, str(args.epochs), store],
                check=True,
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[name] = r
            print(
                f"{name:6s} epoch {r['epoch_seconds']:.1f} s ({r['train_sequences_per_s']:.0f} seq/s, "
                f"{r['achieved_gflops']:.1f} GFLOP/s vs matmul {r['matmul_gflops']:.1f}), "
                f"eval {r['eval_seconds']:.2f} s ({r['eval_users_per_s']:.0f} users/s), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB"
            )
    ratio = None
    if {"sasrec", "fame"} <= results.keys():
        ratio = results["fame"]["epoch_seconds"] / results["sasrec"]["epoch_seconds"]
        print(f"FAME / SASRec epoch time: {ratio:.2f}x")
    write_json(
        "train_speed.json",
        {
            "dataset": "beauty",
            "results": results,
            "fame_over_sasrec_epoch": ratio,
            "targets": {
                "fame_over_sasrec_epoch_max": 1.3,
                "eval_seconds_max": 10,
                "peak_rss_mb_max": 3072,
            },
        },
    )


if __name__ == "__main__":
    main()
