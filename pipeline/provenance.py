"""What produced a run: the code version, the source digest and the package versions.

Run records carry them (a result is only comparable with the code and libraries that made it),
and the background ``fame serve`` is restarted when they or its environment no longer match the
caller's (a long-lived process keeps the code and variables it started with).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata

from pipeline.config import REPO_ROOT

PACKAGES = (
    "fame-rec",
    "torch",
    "numpy",
    "pyarrow",
    "duckdb",
    "prefect",
    "transformers",
    "sentence-transformers",
)
SOURCE_PACKAGES = ("fame", "flows", "pipeline", "pretrain", "storage")
# variables that change what a pipeline process reads or writes
ENV_PREFIXES = ("FAME_", "HF_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "TORCH_", "OMP_")


def package_versions() -> dict[str, str | None]:
    """Python and the core packages (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def source_digest() -> str:
    """sha256 (16 hex) over the path and bytes of every ``.py`` file of the packages: it
    changes with any code edit, committed or not, and needs no git."""
    h = hashlib.sha256()
    for pkg in SOURCE_PACKAGES:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe`` of the checkout (``-dirty`` when edited), else the package version;
    ``+src.<digest>`` pins the exact sources either way."""
    described = None
    if (REPO_ROOT / ".git").exists():
        try:
            done = subprocess.run(
                ["git", "describe", "--always", "--dirty", "--abbrev=12"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            )
            described = done.stdout.strip() if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            described = None
    return f"{described or package_versions()['fame-rec']}+src.{source_digest()}"


def process_fingerprint() -> dict[str, object]:
    """What a long-lived helper process must share with its caller to be reused: interpreter,
    sources, package versions and the FAME_/HF_/… variables."""
    return {
        "python": sys.executable,
        "source": source_digest(),
        "packages": package_versions(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
    }
