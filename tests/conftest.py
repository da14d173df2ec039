"""Shared fixtures: the real datasets under ../shared/data and a throwaway artifact store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("FAME_DATA_DIR")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def require_data() -> bool:
    """CI sets FAME_REQUIRE_DATA=1: there a missing dataset fails instead of skipping, so the
    real-data tests can never silently stop running."""
    return os.environ.get("FAME_REQUIRE_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "ml-100k").is_dir():
        why = (
            f"real datasets not found at {path} (set FAME_DATA_DIR to the folder holding ml-100k/)"
        )
        if require_data():
            pytest.fail(f"{why}; FAME_REQUIRE_DATA is set, so this is an error, not a skip")
        pytest.skip(why)
    return path


def pytest_sessionfinish(session, exitstatus):
    """Under FAME_REQUIRE_DATA, any skipped test fails the run (a skip would hide lost coverage)."""
    if not require_data():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(rep.nodeid for rep in skipped[:5])
        reporter.write_line(
            f"FAME_REQUIRE_DATA: {len(skipped)} test(s) skipped ({names}…)", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def make_config(data_dir: Path, artifacts: Path):
    """load_config with the test's artifact root and the shared data dir."""
    from pipeline.config import load_config

    def make(name: str, overrides: dict | None = None, root: Path | None = None):
        over = {"paths.artifacts": str(root or artifacts), **(overrides or {})}
        return load_config(name, over, data_dir)

    return make


@pytest.fixture(scope="session")
def ml100k_slice(tmp_path_factory, data_dir) -> Path:
    """A data dir holding ml-100k restricted to its first 200 users (all items kept)."""
    root = tmp_path_factory.mktemp("data")
    out = root / "ml-100k"
    out.mkdir()
    lines = (data_dir / "ml-100k" / "ml-100k.inter").read_text().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[0]) <= 200]
    (out / "ml-100k.inter").write_text("\n".join(keep) + "\n")
    (out / "ml-100k.item").write_text((data_dir / "ml-100k" / "ml-100k.item").read_text())
    return root


@pytest.fixture
def cyclic():
    from support import cyclic_split

    return cyclic_split()
