"""Peak memory of ``read_movielens`` on an ML-20m-sized ``ratings.csv``, in a fresh process.

    python bench/movielens_read.py [--rows 20000263] [--file /tmp/ratings-20m.csv]

The file is generated (random ids, ratings and timestamps in ml-20m's ranges and header), not
downloaded, and kept at ``--file`` for reruns. Target: under 2 GB peak RSS for 20M rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

CHILD = """
import json, sys, time
from pathlib import Path
from common import peak_rss_mb
base = peak_rss_mb()
from sources.readers import read_movielens
t = time.perf_counter()
raw = read_movielens(Path(sys.argv[1]), None)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb(),
                  "start_rss_mb": base, "rows": raw.interactions.num_rows,
                  "table_mb": raw.interactions.nbytes / 2**20}))
"""


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """ml-20m's shape: 138,493 users in id order, movie ids up to 131,262, half-star ratings."""
    rng = np.random.default_rng(seed)
    chunk = 2_000_000
    stars = pa.array([f"{r / 2:.1f}" for r in range(1, 11)])
    opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as fh:
        fh.write(b"userId,movieId,rating,timestamp\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            users = np.sort(rng.integers(1, 138_494, n)) + 0
            table = pa.table(
                {
                    "userId": users,
                    "movieId": rng.integers(1, 131_263, n),
                    "rating": stars.take(pa.array(rng.integers(0, 10, n))),
                    "timestamp": rng.integers(789_652_009, 1_427_784_002, n),
                }
            )
            pacsv.write_csv(table, fh, opts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_263)
    parser.add_argument("--file", type=Path, default=Path("/tmp/ratings-20m.csv"))
    args = parser.parse_args()
    if not args.file.exists():
        generate(args.file, args.rows)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.file)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["file_mb"] = args.file.stat().st_size / 2**20
    print(
        f"{r['rows']:,} rows ({r['file_mb']:.0f} MB CSV): {r['seconds']:.1f} s, peak RSS "
        f"{r['peak_rss_mb']:.0f} MB (table {r['table_mb']:.0f} MB)"
    )
    write_json("movielens_read.json", {"result": r, "target_peak_rss_mb": 2048})


if __name__ == "__main__":
    main()
