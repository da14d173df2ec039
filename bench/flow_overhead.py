"""Orchestration overhead of the Prefect flow: a run of ml-100k with every stage cached.

    python bench/flow_overhead.py

Runs the ``fame`` flow in Prefect's ephemeral mode (PREFECT_HOME and the artifact store in a
temporary directory) on ml-100k with small settings: once to fill the store, then again with
every stage cached. For the cached run it reports the flow's total wall time and, per stage, the
task's wall time (Prefect's task machinery plus the store lookup, which the runner reports as
the stage's own seconds). Target: under 10 s per stage. The plain runner
(``run_pipeline``, no Prefect) on the same cached store is measured for comparison.
Writes ``bench/results/flow_overhead.json``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

SMALL = {"train.epochs": 2, "pretrain.steps": 50, "model.d": 32, "model.max_len": 50}
TARGET_PER_STAGE_S = 10.0


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fame-flow-bench-"))
    # before prefect is imported: it reads its settings at import
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)  # ephemeral mode
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"  # new DB: migrations
    from flows.flow import fame
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    overrides = {"paths.artifacts": str(tmp / "artifacts"), **SMALL}
    t = time.perf_counter()
    first = fame(config="ml-100k", overrides=overrides)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    cached = fame(config="ml-100k", overrides=overrides)
    cached_s = time.perf_counter() - t
    assert all(s["skipped"] for s in cached["stages"].values()), cached
    t = time.perf_counter()
    run_pipeline(load_config("ml-100k", overrides), progress=False)
    plain_s = time.perf_counter() - t

    stages = cached["stages"]
    per_stage = {k: v["wall_seconds"] for k, v in stages.items()}
    worst = max(per_stage.values())
    print(f"first run (computes every stage): {first_s:.1f} s")
    print(f"cached flow run: {cached_s:.2f} s total for {len(stages)} stages")
    for name, r in stages.items():
        print(f"  {name:9s} task {r['wall_seconds']:.3f} s  (store lookup {r['seconds']:.3f} s)")
    print(f"plain runner, cached: {plain_s:.2f} s")
    mean = cached_s / len(stages)
    verdict = "within" if max(worst, mean) < TARGET_PER_STAGE_S else "OVER"
    print(
        f"per stage: mean {mean:.2f} s (flow total / stages), worst task {worst:.2f} s: "
        f"{verdict} the {TARGET_PER_STAGE_S:.0f} s target"
    )
    write_json(
        "flow_overhead.json",
        {
            "dataset": "ml-100k",
            "overrides": SMALL,
            "mode": "prefect ephemeral",
            "first_run_seconds": round(first_s, 3),
            "first_run_stage_seconds": {k: v["seconds"] for k, v in first["stages"].items()},
            "stages": len(stages),
            # the cached run: total, mean per stage (read by bench/experiments.py), and per stage
            "cached_flow_seconds": round(cached_s, 3),
            "per_stage_overhead_seconds": round(cached_s / len(stages), 3),
            "cached_stage_task_seconds": per_stage,
            "cached_stage_lookup_seconds": {k: v["seconds"] for k, v in stages.items()},
            "plain_runner_cached_seconds": round(plain_s, 3),
            "target_per_stage_seconds": TARGET_PER_STAGE_S,
            "within_target": max(worst, mean) < TARGET_PER_STAGE_S,
        },
    )


if __name__ == "__main__":
    main()
