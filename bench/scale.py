"""Scale on one machine: wall time and peak RSS of every stage on synthetic data at 1M, 5M and
20M interactions (ML-20m's shape: 26,744 items, users in proportion), and the fitted growth
exponent of time vs interactions.

    python bench/scale.py [--sizes 1000000,5000000,20000263] [--artifacts /tmp/fame-scale]

Each stage runs forced (recomputed) in a fresh process of its own, so its peak RSS is its own
and includes the interpreter and torch (about 350 MB). Config: configs/synthetic-20m.toml with
train.epochs = 1 (one epoch, then one valid evaluation for early stopping; the epoch's
training and validation seconds are reported apart). The synthetic files are generated before
the timed ingest (generation is the data source, like a download: bench/synth.py). Results go
to bench/results/scale.json after every stage (each row with its git revision), and a rerun
skips the stages already measured (``--redo encode,evaluate`` measures those again, ``--fresh``
all; the 20M run takes most of an hour on 2 cores). ``--env KEY=VALUE --out NAME.json``
measures under another process environment, e.g. glibc's allocator settings:

    python bench/scale.py --sizes 1000000,5000000 --stages train \
        --env MALLOC_MMAP_THRESHOLD_=1048576 --out scale-malloc.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, git_rev, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "synthetic-20m.toml"
ML20M = {"users": 138_493, "items": 26_744, "interactions": 20_000_263}
STAGES = ("ingest", "encode", "pretrain", "train", "evaluate")
TARGETS = {
    "ingest_20m": {"seconds": 60, "peak_rss_mb": 4096},
    "train_epoch_20m": {"seconds": 900, "peak_rss_mb": 6144},
    "evaluate_20m": {"seconds": 180},
    "growth_exponent_max": 1.1,
    "pipeline_20m_seconds": 3600,
}

CHILD = """
import json, resource, sys
from pipeline.config import load_config
from pipeline.runner import run_pipeline
stage, overrides = sys.argv[1], json.loads(sys.argv[2])
cfg = load_config(sys.argv[3], overrides)
ctx = run_pipeline(cfg, stages=[stage], force=[] if stage == "generate" else [stage],
                   progress=False)
res = ctx.results.get(stage) or ctx.results["ingest"]
out = {"stage_seconds": res.seconds, "rows": res.rows}
if stage == "train":
    h = res.artifact.table("history").to_pylist()[0]
    out["epoch_train_seconds"] = h["train_seconds"]
    out["epoch_valid_seconds"] = h.get("eval_seconds")
    out["loss"] = h["loss"]
    out["valid_ndcg@10"] = h.get("valid_ndcg@10")
print("RESULT " + json.dumps(out, default=str))
"""


def overrides(n: int, root: Path) -> dict:
    users = round(ML20M["users"] * n / ML20M["interactions"])
    return {
        "data.synth.users": users,
        "data.synth.items": ML20M["items"],
        "data.synth.interactions": n,
        "train.epochs": 1,
        "paths.artifacts": str(root),
    }


def run_child(stage: str, over: dict, env_extra: dict | None = None) -> dict:
    """One stage in a fresh process: its wall time, its peak RSS (wait4) and what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-c", CHILD, "ingest" if stage == "generate" else stage]
    args += [json.dumps(over), str(CONFIG)]
    t = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{stage} failed (exit {proc.returncode}):\n{out[-3000:]}")
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, **json.loads(line[7:])}


def exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(seconds) on log(interactions)."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(s, 1e-9)) for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def summarise(results: dict) -> dict:
    sizes = sorted(int(n) for n in results)
    growth = {}
    # encode depends on the items alone, which every size shares: after the first size the
    # text cache serves it, so its times are no growth measure
    for stage in (*(s for s in STAGES if s != "encode"), "train_epoch"):
        pts = []
        for n in sizes:
            row = results[str(n)].get(stage if stage != "train_epoch" else "train")
            if row:
                pts.append(
                    (
                        n,
                        row["epoch_train_seconds"]
                        if stage == "train_epoch"
                        else row["stage_seconds"],
                    )
                )
        growth[stage] = exponent(pts)
    return growth


def save(results: dict, name: str = "scale.json", env: dict | None = None) -> None:
    """Everything measured so far, with the exponents fitted to it (after every stage)."""
    payload = {"config": str(CONFIG.relative_to(REPO)), "env": env or {}, "results": results}
    write_json(name, payload | {"growth_exponent": summarise(results), "targets": TARGETS})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000,20000263")
    ap.add_argument("--artifacts", type=Path, default=Path("/tmp/fame-scale"))
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--set", action="append", default=[], help="extra override key=value (JSON)")
    ap.add_argument("--redo", default="", help="stages to measure again though recorded")
    ap.add_argument("--fresh", action="store_true", help="forget every recorded measurement")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        help="KEY=VALUE set in every stage's process (e.g. MALLOC_MMAP_THRESHOLD_=1048576)",
    )
    ap.add_argument("--out", default="scale.json", help="results file under bench/results")
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    extra = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        try:
            extra[k] = json.loads(v)
        except json.JSONDecodeError:
            extra[k] = v
    path = RESULTS / args.out
    previous = json.loads(path.read_text()) if path.is_file() else {}
    results = {} if args.fresh else previous.get("results", {})
    redo = set(filter(None, args.redo.split(",")))
    for n in (int(s) for s in args.sizes.split(",")):
        over = overrides(n, args.artifacts) | extra
        row = results.setdefault(str(n), {"users": over["data.synth.users"]})
        if "generate" not in row:
            row["generate"] = run_child("generate", over, env)  # generation + a first ingest
        for stage in args.stages.split(","):
            if stage in row and stage not in redo:
                continue
            print(f"== {n:,} interactions: {stage}", flush=True)
            row[stage] = run_child(stage, over, env) | {"git": git_rev()}
            print(json.dumps(row[stage], default=str), flush=True)
            save(results, args.out, env)


if __name__ == "__main__":
    main()
