"""One short device check, for a session lent a GPU: CUDA training with bf16 autocast on Beauty
(or its synthetic stand-in) and one sampled-softmax epoch at ML-20m's shape, with epoch times
and peak GPU memory.

    python bench/gpu.py                        # on the device machine: cuda, bf16
    python bench/gpu.py --device cpu --quick   # the same path on a CPU, tiny sizes (a dry run)

Each case is a normal pipeline run (ingest -> train, init=random) in a fresh store under
``--artifacts``; figures come from the train stage's history. Results: bench/results/gpu.json,
written after each case, so a run cut short keeps what finished.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cases(quick: bool, data_dir: Path) -> dict[str, tuple[str, dict]]:
    """name -> (config, overrides). Beauty when its files are there, else synthetic at its shape."""
    beauty = (data_dir / "amazon-s3rec").is_dir()
    small = {"data.synth.users": 500, "data.synth.items": 300, "data.synth.interactions": 8000}
    out = {
        "beauty-fame": (
            "beauty" if beauty and not quick else "synthetic",
            {"model.name": "fame", "train.epochs": 1 if quick else 3, "data.item_text": ""}
            if beauty and not quick
            else {
                "train.epochs": 1,
                **(
                    small
                    if quick
                    else {
                        "data.synth.users": 22363,
                        "data.synth.items": 12101,
                        "data.synth.interactions": 198502,
                    }
                ),
            },
        ),
        "ml20m-shape-sampled": (
            "synthetic-20m",
            # min_len 20 there: fewer users for the same interactions
            {"train.epochs": 1, **({**small, "data.synth.users": 300} if quick else {})},
        ),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a dry run of the path)")
    ap.add_argument("--artifacts", type=Path, default=Path("/tmp/fame-gpu"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from pipeline.config import default_data_dir, load_config
    from pipeline.runner import run_pipeline

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a dry run")
    info = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "bf16": cuda,
        "quick": args.quick,
    }
    results: dict[str, dict] = {}
    for name, (config, over) in cases(args.quick, default_data_dir()).items():
        over = {
            **over,
            "init.method": "random",
            "train.device": args.device,
            "train.amp": cuda,
            "paths.artifacts": str(args.artifacts / name),
        }
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        ctx = run_pipeline(load_config(config, over), stages=["ingest", "train"], progress=False)
        history = ctx.results["train"].artifact.table("history").to_pylist()
        results[name] = {
            "config": config,
            "overrides": over,
            "wall_seconds": time.perf_counter() - t,
            "epoch_train_seconds": [h["train_seconds"] for h in history],
            "epoch_valid_seconds": [h.get("eval_seconds") for h in history],
            "valid_ndcg@10": [h.get("valid_ndcg@10") for h in history],
            "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        }
        print(name, results[name]["epoch_train_seconds"], flush=True)
        write_json(
            "gpu.json" if not args.quick else "gpu_dry_run.json", {**info, "results": results}
        )


if __name__ == "__main__":
    main()
