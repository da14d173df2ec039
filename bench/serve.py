"""Latency and throughput of the recommendation service (``fame serve-model``) over HTTP.

Builds (or reuses, under --artifacts) two synthetic runs the size of the usual item tables,
Beauty (12,101 items, max_len 50) and ML-20m (26,744 items, max_len 200); model quality is
irrelevant here (1 epoch, random init). For each run and each serving setting (serial or
thread pool, 1 or 2 torch threads) it starts the real server in its own process, then this
process posts sequences of max_len items (k = 10) at concurrency 1 and 16, with and without
explanations, and records p50/p99 latency and requests/s. The settings' servers run side by
side and get their requests in interleaved rounds, so that a change in the background load
hits them alike; a setting gets at most 15 s per cell (the slow ones answer fewer requests).

    python bench/serve.py                 # the full matrix (~7 min on 2 cores, +8 to build)
    python bench/serve.py --quick         # fewer requests; no thread pool with 2 threads
    python bench/serve.py --add-items RUN --artifacts artifacts   # new items on a text run

``--add-items RUN``: a trained text-pathway run (``model.item_repr = "text"``, e.g. Beauty's
from the beauty-pathway suite) served as ``fame serve-model`` does (serial, 1 thread): p50/p99
of one max_len request before, the time of one ``POST /items`` of 1,000 new items (copies of
existing items' fields under new ids, with their titles changed so that each is encoded anew),
then p50/p99 again with the new items in the requests -> serve_add_items.json.

The client shares the machine with the server: on 2 cores its own CPU time is part of what a
request waits for, so the figures are an upper bound on the server's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

SIZES = {  # synthetic runs shaped like the public item tables; every item is interacted with
    "beauty": {
        "data.synth.users": 5000,
        "data.synth.items": 12101,
        "data.synth.interactions": 250000,
        "data.synth.max_len": 400,
        "data.synth.popularity": 0.2,
        "model.max_len": 50,
    },
    "ml-20m": {
        "data.synth.users": 5000,
        "data.synth.items": 26744,
        "data.synth.interactions": 500000,
        "data.synth.max_len": 1000,
        "data.synth.popularity": 0.2,
        "model.max_len": 200,
    },
}
COMMON = {"model.d": 64, "train.epochs": 1, "init.method": "random"}
SETTINGS = [("serial", 1), ("serial", 2), ("threads", 1), ("threads", 2)]  # (mode, threads)
QUICK_SETTINGS = [("serial", 1), ("serial", 2), ("threads", 1)]
SERVER = (
    "import sys; from app import api, service; "
    "service.serve(api.open_run(sys.argv[1], artifacts=sys.argv[2]), port=int(sys.argv[3]), "
    "mode=sys.argv[4], threads=int(sys.argv[5]))"
)


def build(name: str, artifacts: Path) -> tuple[str, list[str]]:
    """(run id, source item ids) of a size: trained once, then found cached under
    ``artifacts``."""
    from app import api

    run = api.run(
        "synthetic", {**SIZES[name], **COMMON, "paths.artifacts": str(artifacts)}, progress=False
    )
    return run.run_id, run.items["source_id"].cast("string").to_pylist()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    run_id: str, artifacts: Path, mode: str, threads: int
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = [sys.executable, "-c", SERVER, run_id, str(artifacts), str(port), mode, str(threads)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
    proc.kill()
    raise RuntimeError("server did not answer /health in 120 s")


def bodies(items: list[str], n: int, length: int, explain: bool, seed: int = 0) -> list[bytes]:
    """Pre-encoded request bodies: ``length`` random items each (the client's JSON encoding
    stays out of the timed loop)."""
    rng = np.random.default_rng(seed)
    return [
        json.dumps(
            {
                "items": [items[i] for i in rng.integers(0, len(items), length)],
                "k": 10,
                "explain": explain,
            }
        ).encode()
        for _ in range(n)
    ]


HEADERS = {"content-type": "application/json"}


async def load(
    url: str, payloads: list[bytes], concurrency: int, budget: float
) -> tuple[np.ndarray, float]:
    """(latencies in s, wall s) of posting the payloads, ``concurrency`` in flight, until they
    are done or ``budget`` seconds have passed."""
    latencies: list[float] = []
    todo = iter(payloads)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        start = time.perf_counter()

        async def worker() -> None:
            for body in todo:
                if time.perf_counter() - start > budget:
                    return
                t = time.perf_counter()
                r = await client.post("/recommendations", content=body, headers=HEADERS)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return np.array(latencies), time.perf_counter() - start


def serial_load(url: str, payloads: list[bytes], budget: float) -> tuple[np.ndarray, float]:
    """Concurrency 1 with a plain keep-alive client: less client overhead than asyncio."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        start = time.perf_counter()
        for body in payloads:
            if time.perf_counter() - start > budget:
                break
            t = time.perf_counter()
            r = client.post("/recommendations", content=body, headers=HEADERS)
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
        return np.array(latencies), time.perf_counter() - start


def timed(
    url: str, payloads: list[bytes], concurrency: int, budget: float = float("inf")
) -> tuple[np.ndarray, float]:
    if concurrency == 1:
        return serial_load(url, payloads, budget)
    return asyncio.run(load(url, payloads, concurrency, budget))


def measure(
    urls: list[str],
    items: list[str],
    length: int,
    explain: bool,
    concurrency: int,
    n: int,
    rounds: int,
    budget: float,
) -> list[dict]:
    """Figures per server for ``n`` requests each (fewer when a server spends more than
    ``budget`` seconds on them), posted in ``rounds`` interleaved blocks so that a change in
    the machine's background load hits every setting alike."""
    payloads = bodies(items, n, length, explain)
    for url in urls:
        # warm the connections and the server's pools
        timed(url, payloads[:50], concurrency, budget / rounds)
    lat: list[list[np.ndarray]] = [[] for _ in urls]
    wall = [0.0] * len(urls)
    for block in np.array_split(np.arange(n), rounds):
        for s, url in enumerate(urls):
            got, seconds = timed(url, [payloads[i] for i in block], concurrency, budget / rounds)
            lat[s].append(got)
            wall[s] += seconds
    out = []
    for parts, seconds in zip(lat, wall, strict=True):
        ms = np.concatenate(parts) * 1e3
        out.append(
            {
                "requests": len(ms),
                "p50_ms": round(float(np.percentile(ms, 50)), 3),
                "p90_ms": round(float(np.percentile(ms, 90)), 3),
                "p99_ms": round(float(np.percentile(ms, 99)), 3),
                "mean_ms": round(float(ms.mean()), 3),
                "rps": round(len(ms) / seconds, 1),
            }
        )
    return out


def add_items_bench(run_id: str, artifacts: Path, n_new: int = 1000, n_req: int = 400) -> None:
    """The ``--add-items`` figures of a text-pathway run (module docstring)."""
    from app import api

    run = api.open_run(run_id, artifacts=artifacts)
    if run.config.model.item_repr != "text":
        raise SystemExit(f"run {run_id} has model.item_repr = {run.config.model.item_repr!r}")
    rng = np.random.default_rng(0)
    fields = [c for c in run.items.column_names if c not in ("item_id", "source_id", "held_out")]
    rows = run.items.take(rng.choice(run.items.num_rows, n_new, replace=False)).select(fields)
    new = []
    for i, row in enumerate(rows.to_pylist()):
        title = row.get("title") or ""
        new.append({**row, "item_id": f"new-{i}", "title": f"{title} (new edition {i})"})
    items = run.items["source_id"].cast("string").to_pylist()
    length = run.config.model.max_len
    proc, url = start_server(run.run_id, artifacts, "serial", 1)
    try:
        before = measure([url], items, length, False, 1, n_req, 1, 60.0)[0]
        t = time.perf_counter()
        r = httpx.post(url + "/items", json={"items": new}, timeout=600)
        post_s = time.perf_counter() - t
        if r.status_code != 201:
            raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
        with_new = items + [x["item_id"] for x in new]
        after = measure([url], with_new, length, False, 1, n_req, 1, 60.0)[0]
        explained = measure([url], with_new, length, True, 1, n_req // 2, 1, 60.0)[0]
    finally:
        proc.terminate()
        proc.wait(30)
    out = {
        "run_id": run.run_id,
        "dataset": run.config.data.name,
        "model": run.config.model.name,
        "item_repr": run.config.model.item_repr,
        "items_before": len(items),
        "items_added": n_new,
        "post_items_seconds": round(post_s, 3),
        "server_seconds": r.json()["seconds"],
        "before": before,
        "after": after,
        "after_explain": explained,
        "served": {"mode": "serial", "threads": 1},
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "note": "client and server share the machine; one request = max_len items, k = 10",
    }
    print(json.dumps(out, indent=2))
    write_json("serve_add_items.json", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--artifacts", type=Path, default=Path("/tmp/fame-serve-bench"), help="cache of the runs"
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and settings")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: beauty,ml-20m")
    parser.add_argument("--add-items", metavar="RUN", help="time adding 1,000 items to RUN")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on a kill too
    artifacts = args.artifacts.resolve()
    if args.add_items:
        add_items_bench(args.add_items, artifacts)
        return
    # requests per cell and server, interleaved rounds, seconds a server may spend on a cell
    n1, n16, rounds, budget = (150, 400, 3, 4.0) if args.quick else (600, 1600, 8, 15.0)
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    load_before = os.getloadavg()
    runs, rows = {}, []
    for size in args.sizes.split(","):
        runs[size], items = build(size, artifacts)
        length = SIZES[size]["model.max_len"]
        servers = [start_server(runs[size], artifacts, m, t) for m, t in settings]
        try:
            for explain in (False, True):
                for c, n in ((1, n1), (16, n16)):
                    urls = [url for _, url in servers]
                    figures = measure(urls, items, length, explain, c, n, rounds, budget)
                    for (mode, threads), fig in zip(settings, figures, strict=True):
                        row = {
                            "size": size,
                            "items": SIZES[size]["data.synth.items"],
                            "sequence": length,
                            "mode": mode,
                            "threads": threads,
                            "explain": explain,
                            "concurrency": c,
                            **fig,
                        }
                        rows.append(row)
                        print(
                            f"{size:7s} {mode:7s} threads={threads} explain={explain!s:5s} "
                            f"c={c:2d}  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
                            f"  {row['rps']:7.1f} req/s",
                            flush=True,
                        )
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(30)
    load_after = os.getloadavg()
    print_table(rows)
    write_json(
        "serve.json",
        {
            "runs": {s: {"run_id": r, **SIZES[s], **COMMON} for s, r in runs.items()},
            "served_default": {"mode": "serial", "threads": 1},
            "cpu_count": os.cpu_count(),
            "niceness": os.nice(0),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "note": "client and server share the machine; load average = 1, 5, 15 min",
            "results": rows,
        },
    )


def print_table(rows: list[dict]) -> None:
    head = f"{'size':7s} {'mode':7s} {'thr':>3s} {'expl':5s} {'c':>3s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['size']:7s} {r['mode']:7s} {r['threads']:3d} {r['explain']!s:5s} "
            f"{r['concurrency']:3d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:8.1f}"
        )


if __name__ == "__main__":
    main()
