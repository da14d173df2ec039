"""A watchdog that stops a helper process when its owner dies, even by SIGKILL.

``fame run`` in Prefect's ephemeral mode starts a temporary API server as a child; Prefect stops
it at exit, but a killed ``fame run`` would leave it listening. The owner starts this watchdog
with the read end of a pipe it never writes: the kernel closes the write end when the owner
dies, however it dies, and the watchdog then ends the helper (SIGTERM, then SIGKILL).

Run as ``python -m flows.reaper PID MARKER``: MARKER must appear in the helper's command line,
so a reused pid is never killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from storage.process import alive


def guard(pid: int, marker: str) -> None:
    """Start the watchdog for ``pid``; it fires when this process ends."""
    read_end, write_end = os.pipe()  # both non-inheritable: only the watchdog gets read_end
    subprocess.Popen(
        [sys.executable, "-m", "flows.reaper", str(pid), marker],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the owner's group must not kill it early
    )
    os.close(read_end)
    _KEEP.append(write_end)  # held open until this process exits


_KEEP: list[int] = []


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def reap(pid: int, marker: str, grace: float = 10.0) -> bool:
    """End ``pid`` if it still runs ``marker``; True when it had to be stopped."""
    if not alive(pid) or marker not in _cmdline(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def main(argv: list[str]) -> None:
    pid, marker = int(argv[0]), argv[1]
    sys.stdin.buffer.read()  # returns at EOF: the owner has exited
    time.sleep(1.0)  # a normal exit stops the helper itself (atexit); give it the chance
    reap(pid, marker)


if __name__ == "__main__":
    main(sys.argv[1:])
