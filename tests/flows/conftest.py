"""Fixtures of the flow tests: one Prefect test server and one artifact store for the session."""

from pathlib import Path

import pytest
from support import SMALL

# tiny-run settings on top of the shared small ones
TINY = {**SMALL, "pretrain.steps": 50, "model.max_len": 50}


@pytest.fixture(scope="session")
def harness():
    """A temporary Prefect server and database (started once: it costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def flow_store(tmp_path_factory) -> Path:
    """The artifact store the flow tests share; the first full run fills it."""
    return tmp_path_factory.mktemp("flow-artifacts")


@pytest.fixture(scope="session")
def slice_params(ml100k_slice):
    """Flow parameters for the 200-user ml-100k slice with small settings (store not set)."""

    def params(store: Path, **extra) -> dict:
        overrides = {"paths.artifacts": str(store), **TINY, **extra.pop("overrides", {})}
        return {"config": "ml-100k", "data_dir": str(ml100k_slice), "overrides": overrides, **extra}

    return params
