"""A local Prefect server on 127.0.0.1 (state under the state dir), and ``fame serve`` in the
background for the demo: started, health-checked, stopped by process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.state import HOST, api_url, prefect_env, server_file, state_dir

PREFECT = str(Path(sys.executable).with_name("prefect"))
FAME = str(Path(sys.executable).with_name("fame"))


class ServerError(RuntimeError):
    pass


def healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url(port)}/health", timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status == 200
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) != 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def status() -> dict:
    """{"running", "pid", "port", "url", "healthy"} of the recorded server (if any)."""
    if not server_file().is_file():
        return {"running": False}
    info = json.loads(server_file().read_text())
    info["running"] = _alive(info["pid"])
    info["healthy"] = info["running"] and healthy(info["port"])
    return info


def start(port: int = 4200, timeout: float = 180.0) -> dict:
    """Start ``prefect server start`` bound to 127.0.0.1 and wait until /api/health answers."""
    current = status()
    if current.get("healthy"):
        return current
    if current.get("running"):
        stop()
    if not port_free(port):
        raise ServerError(f"port {port} on {HOST} is taken; choose another with --port")
    log = state_dir() / "server.log"
    env = prefect_env(port)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", HOST, "--port", str(port)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    info = {
        "pid": proc.pid,
        "port": port,
        "url": api_url(port),
        "ui": f"http://{HOST}:{port}",
        "log": str(log),
    }
    server_file().write_text(json.dumps(info))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if healthy(port):
            return {**info, "running": True, "healthy": True}
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
    stop()
    raise ServerError(f"Prefect server did not become healthy on port {port}; log tail:\n{tail}")


def _kill_group(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def stop() -> list[str]:
    """Stop the background ``fame serve`` and the server (whole process groups)."""
    stopped = []
    serve = state_dir() / "serve.pid"
    if serve.is_file():
        _kill_group(int(serve.read_text()))
        serve.unlink()
        stopped.append("serve")
    if server_file().is_file():
        _kill_group(json.loads(server_file().read_text())["pid"])
        server_file().unlink()
        stopped.append("server")
    return stopped


def start_serve(timeout: float = 120.0) -> int:
    """Start ``fame serve`` in the background against the local server; wait for its deployments."""
    pid_file = state_dir() / "serve.pid"
    if pid_file.is_file() and _alive(int(pid_file.read_text())):
        return int(pid_file.read_text())
    log = state_dir() / "serve.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [FAME, "serve"],
            env=prefect_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(
                f"`fame serve` exited; see {log}:\n{log.read_text(errors='replace')[-2000:]}"
            )
        if deployment_exists("fame/full-pipeline"):
            return proc.pid
        time.sleep(1.0)
    raise ServerError(f"deployments did not appear within {timeout:.0f}s; see {log}")


def deployment_exists(name: str) -> bool:
    env = prefect_env()
    out = subprocess.run(
        [PREFECT, "deployment", "inspect", name], env=env, capture_output=True, text=True
    )
    return out.returncode == 0
