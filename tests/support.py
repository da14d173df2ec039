"""Plain helpers shared by tests (importable as `support`; fixtures live in conftest.py)."""

import contextlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fame.data import SplitData
from fame.metrics import metrics_from_ranks

# small settings for pipeline runs on the ml-100k slice
SMALL = {"train.epochs": 2, "pretrain.steps": 60, "model.d": 32, "evaluate.batch_size": 256}


def cyclic_split(
    num_users: int = 120, num_items: int = 40, length: int = 14, noise: float = 0.1, seed: int = 0
) -> SplitData:
    """Users walk a fixed item cycle (next = perm[cur]) with a little noise: learnable order."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_items) + 1
    nxt = np.zeros(num_items + 1, dtype=np.int64)
    nxt[perm] = np.roll(perm, -1)
    seqs = []
    for _ in range(num_users):
        cur = int(rng.integers(1, num_items + 1))
        seq = [cur]
        for _ in range(length - 1):
            cur = int(rng.integers(1, num_items + 1)) if rng.random() < noise else int(nxt[cur])
            seq.append(cur)
        seqs.append(seq)
    train = [s[:-2] for s in seqs]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in train])]).astype(np.int64)
    return SplitData(
        user_ids=np.arange(1, num_users + 1, dtype=np.int64),
        offsets=offsets,
        items=np.concatenate(train).astype(np.int64),
        valid=np.array([s[-2] for s in seqs], dtype=np.int64),
        test=np.array([s[-1] for s in seqs], dtype=np.int64),
        num_items=num_items,
    )


def popularity_ndcg10(data, split="valid", exclude=True):
    """Most-popular baseline under the same protocol (ties pessimistic, history excluded)."""
    offsets, items = data.inputs(split)
    counts = np.bincount(data.items, minlength=data.num_items + 1).astype(float)
    counts[0] = -np.inf
    ranks = []
    for u, t in enumerate(data.targets(split)):
        s = counts.copy()
        if exclude:
            hist = items[offsets[u] : offsets[u + 1]]
            s[hist[hist != t]] = -np.inf
        ranks.append(int((s >= s[t]).sum()))
    return metrics_from_ranks(np.array(ranks))["ndcg@10"]


def ml100k_zip() -> bytes:
    """A three-rating archive in GroupLens' ml-100k layout (what ``fame data fetch`` converts)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-100k/u.genre", "unknown|0\nAction|1\nComedy|2\n\n")
        z.writestr("ml-100k/u.data", "1\t10\t5\t100\n1\t20\t3\t90\n1\t30\t4\t95\n")
        z.writestr(
            "ml-100k/u.item",
            "10|Heat (1995)|01-Jan-1995||http://x|0|1|1\n"
            "20|Big (1988)|01-Jan-1988||http://x|0|0|1\n"
            "30|Odd|||http://x|1|0|0\n",
        )
    return buf.getvalue()


@contextlib.contextmanager
def serve_bytes(payload: bytes) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every GET with ``payload``; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class Route(NamedTuple):
    body: bytes
    cut: int | None = None  # send only this many bytes (the Content-Length still says all)
    hold: threading.Event | None = None  # after the cut, wait for this before closing


@contextlib.contextmanager
def serve(routes: dict[str, Route]) -> Iterator[tuple[str, threading.Event]]:
    """A real HTTP server on 127.0.0.1: 404 for paths not in ``routes``; yields its base URL and
    an event set once a ``hold`` route has sent its first part."""
    sent = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            route = routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body[: route.cut])
            self.wfile.flush()
            if route.hold is not None:
                sent.set()
                route.hold.wait(60)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", sent
    finally:
        for route in routes.values():
            if route.hold is not None:
                route.hold.set()
        server.shutdown()
        server.server_close()


REPO = Path(__file__).resolve().parents[1]
# a SASRec chain (ingest -> train -> evaluate) of seconds on the ml-100k slice
RUN_SETS = {**SMALL, "model.name": "sasrec", "init.method": "random", "train.epochs": 1}


def fame_run(
    store: Path, data: Path, *extra: str, crash: str | None = None, prefect=False, env=None
) -> subprocess.Popen:
    """A real `fame run` subprocess on ml-100k data (``crash``: ``$FAME_CRASH_AT``)."""
    args = [sys.executable, "-m", "flows.cli", "run", "-c", "ml-100k", "--data-dir", str(data)]
    args += ["-q", "--set", f"paths.artifacts={store}"]
    args += [a for k, v in RUN_SETS.items() for a in ("--set", f"{k}={v}")]
    args += [] if prefect else ["--no-prefect"]
    env = {**os.environ, **(env or {}), "FAME_CRASH_AT": crash or ""}
    if prefect:
        env.pop("PREFECT_API_URL", None)  # Prefect's ephemeral mode: the server under test
    return subprocess.Popen(
        [*args, *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")[-3000:]


def dead_pid() -> int:
    """The pid of a process that has exited (what a killed writer leaves in its folder names)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_model(run_id: str, root: Path, log: Path) -> Iterator[tuple[str, int]]:
    """The console script's ``fame serve-model --run ID`` in its own process, until the block
    ends: (url, port) once /health answers; a start that fails raises with the server's log."""
    import time

    import httpx

    port = free_port()
    fame = Path(sys.executable).with_name("fame")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(fame), "serve-model", "--run", run_id, "--artifacts", str(root),
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"fame serve-model exited: {log.read_text()}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"fame serve-model did not start: {log.read_text()}")
        yield url, port
    finally:
        proc.terminate()
        proc.wait(30)
