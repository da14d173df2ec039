"""Text-encoder speed on this machine and the cache-hit path of the encode stage.

    python bench/encode_speed.py [--config ml-100k]

First run: a fresh store, every item text encoded by the default encoder (items/s). Second run:
the encode stage forced again over the same store, so every text is a cache hit; target: under
5% of the first run's time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ml-100k")
    args = parser.parse_args()
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, {"paths.artifacts": tmp})
        run_pipeline(cfg, ["ingest"], progress=False)
        t = time.perf_counter()
        first = run_pipeline(cfg, ["encode"], progress=False).results["encode"]
        cold = time.perf_counter() - t
        t = time.perf_counter()
        second = run_pipeline(cfg, ["encode"], force=["encode"], progress=False).results["encode"]
        warm = time.perf_counter() - t
    n = first.rows["text_embeddings"]
    meta1, meta2 = first.artifact.manifest, second.artifact.manifest
    print(f"cold: {n} items in {cold:.2f} s = {n / cold:.0f} items/s (encoded {meta1['encoded']})")
    print(
        f"warm: {warm:.3f} s = {100 * warm / cold:.1f}% of cold (encoded {meta2['encoded']}, "
        f"cache hits {meta2['cache_hits']})"
    )
    write_json(
        "encode_speed.json",
        {
            "config": args.config,
            "encoder": meta1["encoder"],
            "items": n,
            "cold_seconds": cold,
            "items_per_second": n / cold,
            "cache_seconds": warm,
            "cache_ratio": warm / cold,
            "encoded_second_run": meta2["encoded"],
            "peak_rss_mb": peak_rss_mb(),
            "target": {"cache_ratio_max": 0.05},
        },
    )


if __name__ == "__main__":
    main()
