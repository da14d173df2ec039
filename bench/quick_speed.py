"""Quick speed check of fame/ on synthetic data shaped like Amazon Beauty (no data files read).

    python bench/quick_speed.py [--models sasrec,fame] [--epochs 1] [--threads N]

22,363 users, 12,101 items, 5-core-like lengths (train part ~7 on average), Zipf item
popularity. Reports per model: seconds per training epoch (full CE, d=64, default configs) and
seconds for a full-ranking test evaluation of every user, each as wall and process CPU time, plus
a plain matmul GFLOP/s of the logits shape measured in the same process (how busy the machine was).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from fame.config import EvalConfig, ModelConfig, TrainConfig
from fame.data import SplitData
from fame.evaluate import evaluate
from fame.losses import make_loss
from fame.model import SeqRecModel
from fame.trainer import train_epoch

USERS, ITEMS = 22_363, 12_101


def beauty_like(seed: int = 0) -> SplitData:
    """Per user 5 + Geometric interactions (mean ~8.9, so train ~6.9), items ~ Zipf(1)."""
    rng = np.random.default_rng(seed)
    total = np.minimum(5 + rng.geometric(1 / 4.9, USERS) - 1, 200)
    p = 1.0 / np.arange(1, ITEMS + 1)
    items = rng.choice(ITEMS, size=int(total.sum()), p=p / p.sum()) + 1
    ends = np.cumsum(total)
    train_len = total - 2
    keep = np.ones(len(items), dtype=bool)
    keep[ends - 1] = keep[ends - 2] = False
    return SplitData(
        user_ids=np.arange(1, USERS + 1, dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(train_len)]).astype(np.int64),
        items=items[keep].astype(np.int64),
        valid=items[ends - 2].astype(np.int64),
        test=items[ends - 1].astype(np.int64),
        num_items=ITEMS,
    )


def matmul_gflops(rows: int, d: int) -> float:
    a, b = torch.randn(rows, d), torch.randn(ITEMS + 1, d)
    for _ in range(3):
        a @ b.T
    t = time.perf_counter()
    for _ in range(10):
        a @ b.T
    return 2.0 * rows * (ITEMS + 1) * d * 10 / (time.perf_counter() - t) / 1e9


class Clock:
    """Wall and process CPU seconds of a block (CPU time is what a busy machine distorts least)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sasrec,fame")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = beauty_like()
    lengths = np.diff(data.offsets)
    positions = int(np.minimum(lengths[lengths >= 2] - 1, 50).sum())
    print(
        f"users {USERS}, items {ITEMS}, mean train length {lengths.mean():.2f}, "
        f"positions/epoch {positions}, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    cfg = TrainConfig(device="cpu")
    out = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = SeqRecModel(ModelConfig(name=name), data.num_items)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        loss_fn = make_loss(cfg, torch.Generator().manual_seed(1))
        shuffle = torch.Generator().manual_seed(0)
        epochs = []
        for _ in range(args.epochs):
            with Clock() as c, tqdm(disable=True) as bar:
                loss = train_epoch(
                    model, data, cfg, opt, loss_fn, shuffle, torch.device("cpu"), bar
                )
            epochs.append(c)
        evals = []
        for _ in range(2):
            with Clock() as c:
                evaluate(model, data, "test", EvalConfig(), "cpu")
            evals.append(c)
        ep, ev = min(epochs, key=lambda c: c.wall), min(evals, key=lambda c: c.wall)
        out[name] = {
            "epoch_wall_s": ep.wall,
            "epoch_cpu_s": ep.cpu,
            "eval_wall_s": ev.wall,
            "eval_cpu_s": ev.cpu,
            "loss": loss,
        }
        print(
            f"{name:6s} epoch {ep.wall:6.2f} s wall, {ep.cpu:6.2f} s CPU "
            f"({positions / ep.wall:,.0f} positions/s)   full evaluation {ev.wall:5.2f} s wall, "
            f"{ev.cpu:5.2f} s CPU   (matmul {matmul_gflops(4096, 64):.0f} GFLOP/s)"
        )
    if {"sasrec", "fame"} <= out.keys():
        wall = out["fame"]["epoch_wall_s"] / out["sasrec"]["epoch_wall_s"]
        cpu = out["fame"]["epoch_cpu_s"] / out["sasrec"]["epoch_cpu_s"]
        print(f"FAME / SASRec epoch: {wall:.2f}x wall, {cpu:.2f}x CPU")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
