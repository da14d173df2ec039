"""A watchdog that stops the helper processes of its owner when the owner dies, even by SIGKILL.

``fame run`` in Prefect's ephemeral mode starts a temporary API server as a child; Prefect stops
it at exit, but a killed ``fame run`` would leave it listening. The owner starts this watchdog
*before* the server, with the read end of a pipe it never writes, and marks its own environment
with a random token that every child inherits. The kernel closes the write end when the owner
dies, however it dies; the watchdog then ends each process that carries the token and runs
MARKER (SIGTERM, then SIGKILL) — whether or not the server had finished starting.

Run as ``python -m flows.reaper TOKEN MARKER``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from storage.process import alive

TOKEN_ENV = "FAME_REAPER_TOKEN"
_KEEP: list[int] = []  # write ends held open until this process exits


def guard(marker: str) -> str:
    """Start the watchdog for the children this process starts from now on that run
    ``marker``; it fires when this process ends. Returns the token."""
    token = os.environ.get(TOKEN_ENV) or secrets.token_hex(8)
    os.environ[TOKEN_ENV] = token
    read_end, write_end = os.pipe()  # both non-inheritable: only the watchdog gets read_end
    subprocess.Popen(
        [sys.executable, "-m", "flows.reaper", token, marker],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the owner's group must not kill it early
    )
    os.close(read_end)
    _KEEP.append(write_end)
    return token


def marked(token: str, marker: str) -> list[int]:
    """Pids of this user's processes whose environment holds the token and that run marker."""
    needle = f"{TOKEN_ENV}={token}".encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (proc / "cmdline").read_bytes() and needle in (
                proc / "environ"
            ).read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def reap(pids: list[int], grace: float = 10.0) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> None:
    token, marker = argv[0], argv[1]
    sys.stdin.buffer.read()  # returns at EOF: the owner has exited
    time.sleep(1.0)  # a normal exit stops the helper itself (atexit); give it the chance
    reap(marked(token, marker))


if __name__ == "__main__":
    main(sys.argv[1:])
