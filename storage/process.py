"""Whether the process that owns a temp folder, a ``running`` record or a pid file still lives.

A pid alone is not an identity (pids are reused), so owners are recorded as (host, pid, start
time); the start time comes from ``/proc`` where there is one.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), None without."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(pid: int, started: int | None = None) -> bool:
    """``pid`` runs and is not a zombie (reaped first if it is our own exited child), and, when
    ``started`` is given and /proc knows, it is the same process that was recorded."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    if (fields := _stat(pid)) is not None and len(fields) > 19:
        return fields[0] != "Z" and (started is None or int(fields[19]) == started)
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def owner() -> dict[str, object]:
    """This process as a record owner: host, pid and start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": start_time(os.getpid())}


def owner_gone(rec: dict) -> bool:
    """A recorded owner on this host that no longer runs (another host's owner: unknown, False)."""
    pid = rec.get("pid")
    if pid is None or rec.get("host") != socket.gethostname():
        return False
    return not alive(int(pid), rec.get("pid_start"))
