"""Synthetic dataset generation: seconds and peak memory at ML-1m and ML-20m shapes.

    python bench/synth.py [--sizes ml-1m,ml-20m]

Each size runs in a fresh process that reports its own peak RSS, so one size's memory never
hides in another's. Targets (docs/synthetic.md): ML-20m shape in under 2 minutes and 2 GB.
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

SIZES = {  # users, items, interactions of the MovieLens releases
    "ml-1m": {"users": 6040, "items": 3706, "interactions": 1_000_209},
    "ml-20m": {"users": 138_493, "items": 26_744, "interactions": 20_000_263},
}
TARGETS = {"ml-20m": {"seconds": 120, "peak_rss_mb": 2048}}

CHILD = """
import json, sys, time
from pathlib import Path
from common import peak_rss_mb
from pipeline.config import SynthConfig
from sources.synth import generate
t = time.perf_counter()
result = generate(SynthConfig(**json.loads(sys.argv[1])), Path(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb(),
                  "rows": result.rows,
                  "bytes": {k: p.stat().st_size for k, p in result.files.items()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    args = parser.parse_args()
    results = {}
    for name in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(SIZES[name]), tmp],
                check=True,
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent,
            )
        r = results[name] = {"params": SIZES[name], **json.loads(out.stdout.splitlines()[-1])}
        mb = sum(r["bytes"].values()) / 2**20
        print(
            f"{name:7s} {r['rows']['interactions']:>11,} interactions in {r['seconds']:6.1f} s, "
            f"peak RSS {r['peak_rss_mb']:5.0f} MB, files {mb:.0f} MiB"
        )
    write_json("synth.json", {"results": results, "targets": TARGETS})


if __name__ == "__main__":
    main()
