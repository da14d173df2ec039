"""Ingest speed and memory: Beauty and Sports (S3-Rec files), each in a fresh process.

    python bench/ingest.py [--data-dir ../shared/data]

Targets: Beauty in under 10 s on a 2-core machine, peak memory under 1 GB.
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

CHILD = """
import json, sys, time
from common import peak_rss_mb
from pipeline.config import load_config
from pipeline.runner import run_pipeline
cfg = load_config(sys.argv[1], {"paths.artifacts": sys.argv[2]}, sys.argv[3] or None)
t = time.perf_counter()
ctx = run_pipeline(cfg, ["ingest"], progress=False)
res = ctx.results["ingest"]
print(json.dumps({"seconds": time.perf_counter() - t, "stage_seconds": res.seconds,
                  "peak_rss_mb": peak_rss_mb(), "rows": res.rows}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--datasets", default="beauty,sports")
    args = parser.parse_args()
    results = {}
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, name, tmp, args.data_dir],
                check=True,
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent,
            )
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[name]
        print(
            f"{name:8s} ingest {r['seconds']:.2f} s (stage {r['stage_seconds']:.2f} s), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, rows {r['rows']}"
        )
    write_json(
        "ingest.json", {"results": results, "targets": {"beauty_seconds": 10, "peak_rss_mb": 1024}}
    )


if __name__ == "__main__":
    main()
