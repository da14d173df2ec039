"""Orchestration overhead: the Prefect flow with every stage cached, against the plain runner.

    python bench/flow_overhead.py

Runs the ``fame`` flow (Prefect ephemeral mode, state in a temp dir) on ml-100k with small
settings once to fill the store, then again with everything cached; per-stage overhead is the
cached flow's wall time divided by its stages. Target: under 10 s per stage.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

SMALL = {"train.epochs": 2, "pretrain.steps": 50, "model.d": 32}


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="fame-flow-bench-")
    os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)
    from flows.flow import fame
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    overrides = {"paths.artifacts": str(Path(tmp) / "artifacts"), **SMALL}
    t = time.perf_counter()
    fame(config="ml-100k", overrides=overrides)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    cached = fame(config="ml-100k", overrides=overrides)
    cached_s = time.perf_counter() - t
    assert all(s["skipped"] for s in cached["stages"].values()), cached
    t = time.perf_counter()
    run_pipeline(load_config("ml-100k", overrides), progress=False)
    plain_s = time.perf_counter() - t
    n = len(cached["stages"])
    print(
        f"first run (computes): {first_s:.1f} s; cached flow: {cached_s:.2f} s for {n} stages "
        f"= {cached_s / n:.2f} s/stage; plain runner cached: {plain_s:.2f} s"
    )
    write_json(
        "flow_overhead.json",
        {
            "first_run_seconds": first_s,
            "cached_flow_seconds": cached_s,
            "stages": n,
            "per_stage_overhead_seconds": cached_s / n,
            "plain_runner_cached_seconds": plain_s,
            "stage_seconds_cached": {k: v["seconds"] for k, v in cached["stages"].items()},
            "target": {"per_stage_overhead_seconds_max": 10},
        },
    )


if __name__ == "__main__":
    main()
