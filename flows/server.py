"""The local Prefect server on 127.0.0.1 and the background ``fame serve`` of the demo.

Both run in their own process group with their pid and log under the state dir
(``server.json``/``server.pid``/``server.log``, ``serve.json``/``serve.log``); ``stop`` ends
the whole group. Nothing here imports prefect: the server and its clients are subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flows.state import HOST, api_url, prefect_env, server_file, state_dir
from pipeline.provenance import process_fingerprint
from pipeline.registry import ORDER
from storage.process import alive as _alive

FULL_PIPELINE = "full-pipeline"
DEPLOYMENTS = [FULL_PIPELINE, *ORDER]  # of the flow ``fame``: the whole DAG, then one per stage


class ServerError(RuntimeError):
    """The server or ``fame serve`` could not be started; the message says why and where to look."""


def prefect_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "prefect"]


def fame_cmd() -> list[str]:
    return [sys.executable, "-m", "flows.cli"]


# -- probes ------------------------------------------------------------------------------------
def _get(url: str, timeout: float) -> int | None:
    """HTTP status of a GET on loopback, None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback URL)
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def healthy(port: int, timeout: float = 2.0) -> bool:
    return _get(f"{api_url(port)}/health", timeout) == 200


def deployment_exists(port: int, name: str) -> bool:
    """``name`` is ``flow/deployment``, e.g. ``fame/full-pipeline``."""
    return _get(f"{api_url(port)}/deployments/name/{name}", 5.0) == 200


def port_free(port: int) -> bool:
    with socket.socket() as s:
        if s.connect_ex((HOST, port)) == 0:
            return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _ours(pid: int, marker: str) -> bool:
    """Whether ``pid`` still runs the command we started (pid files outlive reboots)."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return _alive(pid)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stale_reasons(recorded: dict, current: dict) -> list[str]:
    """How a recorded process fingerprint differs from ``current`` (empty: reusable)."""
    reasons = []
    if recorded.get("python") != current.get("python"):
        reasons.append(f"another interpreter ({recorded.get('python')})")
    if "source" in current and recorded.get("source") != current["source"]:
        reasons.append("the code changed")
    old, new = recorded.get("packages") or {}, current.get("packages") or {}
    reasons += [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(new) if old.get(k) != new[k]]
    if "env" in current:
        old_env, new_env = recorded.get("env") or {}, current["env"]
        changed = sorted(
            k for k in old_env.keys() | new_env.keys() if old_env.get(k) != new_env.get(k)
        )
        reasons += [f"{k} changed" for k in changed]
    if "cwd" in current and recorded.get("cwd") != current["cwd"]:
        reasons.append(f"another working directory ({recorded.get('cwd')})")
    return reasons


def _server_fingerprint() -> dict:
    """The server runs Prefect's code only: its interpreter and packages decide reuse."""
    fp = process_fingerprint()
    return {"python": fp["python"], "packages": fp["packages"]}


def _serve_fingerprint() -> dict:
    return {**process_fingerprint(), "cwd": os.getcwd()}


def _spawn(cmd: list[str], port: int, log: Path, header: str) -> subprocess.Popen:
    """``cmd`` in the background, in its own process group, against the server on ``port``,
    appending its output to ``log`` after a ``--- header ---`` line."""
    with open(log, "ab") as fh:
        fh.write(f"\n--- {header}, {time.ctime()} ---\n".encode())
        fh.flush()
        return subprocess.Popen(
            cmd,
            env=prefect_env(port),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# -- the server --------------------------------------------------------------------------------
def status() -> dict:
    """The recorded server: running, healthy, pid, port, url, ui, log (``running`` only if none)."""
    info = _read(server_file())
    if not info:
        return {"running": False}
    info["running"] = _alive(info["pid"]) and _ours(info["pid"], "prefect")
    info["healthy"] = info["running"] and healthy(info["port"])
    return info


def start(port: int = 4200, timeout: float = 180.0) -> dict:
    """Start ``prefect server start`` on 127.0.0.1:``port`` in the background (its own process
    group, PREFECT_HOME under the state dir) and wait until ``/api/health`` answers.

    A healthy recorded server started by the same interpreter and packages is reused (whatever
    its port); ``started`` tells which, ``restarted`` says why an old one was replaced."""
    current = status()
    fingerprint = _server_fingerprint()
    why = stale_reasons(current.get("fingerprint") or {}, fingerprint) if current else []
    if current.get("healthy") and not why:
        return {**current, "started": False}
    if current.get("running"):
        stop_server()
    if not port_free(port):
        hint = " (a Prefect server answers there)" if healthy(port, timeout=0.5) else ""
        raise ServerError(
            f"port {port} on {HOST} is taken{hint}; pick another with --port, or use that "
            f"server with PREFECT_API_URL={api_url(port)}"
        )
    log = state_dir() / "server.log"
    begin = time.monotonic()
    proc = _spawn(
        [*prefect_cmd(), "server", "start", "--host", HOST, "--port", str(port)],
        port,
        log,
        f"fame server start, port {port}",
    )
    info = {
        "pid": proc.pid,
        "port": port,
        "url": api_url(port),
        "ui": f"http://{HOST}:{port}",
        "log": str(log),
        "home": prefect_env(port)["PREFECT_HOME"],
        "fingerprint": fingerprint,
    }
    server_file().write_text(json.dumps(info))
    (state_dir() / "server.pid").write_text(f"{proc.pid}\n")
    deadline = begin + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if healthy(port, timeout=1.0):
            seconds = round(time.monotonic() - begin, 2)
            info["startup_seconds"] = seconds
            server_file().write_text(json.dumps(info))
            restarted = "; ".join(why) if current.get("running") else None
            return {
                **info,
                "running": True,
                "healthy": True,
                "started": True,
                "restarted": restarted,
            }
        time.sleep(0.25)
    why = f"exited with code {proc.returncode}" if proc.poll() is not None else "timed out"
    stop_server()
    raise ServerError(
        f"Prefect server on port {port} {why} before /api/health answered "
        f"(waited {time.monotonic() - begin:.0f}s); tail of {log}:\n{_tail(log)}"
    )


def _kill_group(pid: int, grace: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)  # stragglers of the group (flow-run subprocesses)
    _alive(pid)  # reap


def stop_server() -> bool:
    info = _read(server_file())
    stopped = bool(info) and _alive(info["pid"]) and _ours(info["pid"], "prefect")
    if stopped:
        _kill_group(info["pid"])
    for name in ("server.json", "server.pid"):
        (state_dir() / name).unlink(missing_ok=True)
    return stopped


# -- fame serve in the background --------------------------------------------------------------
def serve_status() -> dict:
    info = _read(state_dir() / "serve.json")
    if not info:
        return {"running": False}
    info["running"] = _alive(info["pid"]) and _ours(info["pid"], "flows.cli")
    return info


def start_serve(port: int, timeout: float = 180.0, poll_seconds: float = 2.0) -> dict:
    """Start ``fame serve`` against the server on ``port`` in the background (cwd: this one, so
    flow runs use the same ./artifacts) and wait until every deployment is registered.

    A running one is reused only when it has this process's port, working directory,
    interpreter, sources, package versions and FAME_/HF_ variables: a process keeps the code and
    environment it started with. ``restarted`` says why an old one was replaced."""
    current = serve_status()
    fingerprint = _serve_fingerprint()
    why = stale_reasons(current.get("fingerprint") or {}, fingerprint)
    if current.get("running") and current.get("port") != port:
        why.insert(0, f"another port ({current.get('port')})")
    if current.get("running") and not why:
        proc = None
        info = {**current, "started": False}
    else:
        restarted = "; ".join(why) if current.get("running") else None
        if current.get("running"):
            stop_serve()
        log = state_dir() / "serve.log"
        proc = _spawn(
            [*fame_cmd(), "serve", "--poll-seconds", str(poll_seconds)], port, log, "fame serve"
        )
        info = {
            "pid": proc.pid,
            "port": port,
            "cwd": os.getcwd(),
            "log": str(log),
            "fingerprint": fingerprint,
        }
        (state_dir() / "serve.json").write_text(json.dumps(info))
        info = {**info, "running": True, "started": True, "restarted": restarted}
    begin = time.monotonic()
    while time.monotonic() < begin + timeout:
        if proc is not None and proc.poll() is not None:
            stop_serve()
            raise ServerError(
                f"`fame serve` exited early; tail of {info['log']}:\n{_tail(Path(info['log']))}"
            )
        if all(deployment_exists(port, f"fame/{d}") for d in DEPLOYMENTS):
            return info
        time.sleep(0.5)
    stop_serve()
    raise ServerError(
        f"the fame deployments did not appear within {timeout:.0f}s; tail of {info['log']}:\n"
        f"{_tail(Path(info['log']))}"
    )


def stop_serve() -> bool:
    info = _read(state_dir() / "serve.json")
    stopped = bool(info) and _alive(info["pid"]) and _ours(info["pid"], "flows.cli")
    if stopped:
        _kill_group(info["pid"])
    (state_dir() / "serve.json").unlink(missing_ok=True)
    return stopped


def stop() -> list[str]:
    """Stop the background ``fame serve`` (if any), then the server; names what was stopped."""
    return [name for name, fn in (("fame serve", stop_serve), ("server", stop_server)) if fn()]
