"""Atomic writes: a killed process never leaves a half-written file or artifact behind."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def fsync_tree(path: Path) -> None:
    """Flush every file under ``path`` (and the directories) to disk before a rename publishes it."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


CRASH_ENV = "FAME_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when ``$FAME_CRASH_AT`` names this point (``<stage>:<step>``): the
    crash-consistency tests kill the publication protocol at each of its steps (a no-op
    otherwise)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def work_name(final: Path, suffix: str = "") -> str:
    """``<parent>-<name>-<pid>-<random><suffix>``: unique, and the pid tells a sweep whether the
    writer still runs."""
    return f"{final.parent.name}-{final.name}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def parse_work_name(name: str) -> tuple[str, str, int] | None:
    """(parent, name, writer pid) of a ``work_name`` (``.old`` or not), None for any other name."""
    parts = name.removesuffix(".old").rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or "-" not in parts[0]:
        return None
    parent, final = parts[0].split("-", 1)
    return parent, final, int(parts[1])


@contextlib.contextmanager
def atomic_dir(
    final: Path, work: Path | None = None, keep: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``final`` in one rename.

    ``keep(final)``, asked at publication: True drops the new version and leaves ``final`` as
    it is, so it never goes missing under a reader (a content-keyed artifact is as good as ours).

    The temporary (and, when ``final`` exists, the displaced old version, ``….old``) live in
    ``work`` — a folder on the same file system, outside anything that is listed or globbed —
    else beside ``final`` as dot-folders. On any exception the temporary directory is removed
    and ``final`` is left untouched; after a kill, ``work`` holds what a sweep must clean.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if work is None:
        work, prefix = final.parent, "."
    else:
        work.mkdir(parents=True, exist_ok=True)
        prefix = ""
    tmp = work / (prefix + work_name(final))
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        trash = None
        if final.exists():
            if keep is not None and keep(final):
                shutil.rmtree(tmp, ignore_errors=True)
                return
            trash = work / (prefix + work_name(final, ".old"))
            with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                os.replace(final, trash)
            crash_point(f"{final.parent.name}:publish:displaced")
        try:
            os.replace(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                raise
            # another writer published ``final`` between our check and our rename: content
            # keys make its version as good as ours, so keep it
            shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    """Write one Parquet file atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
