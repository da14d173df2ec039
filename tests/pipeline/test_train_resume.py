"""The train stage's resume state (``_work/train/<key>/``) on a real ml-100k slice: a forced train
starts from scratch, an unreadable state is discarded with a warning, and a finished train
leaves none behind."""

import logging
from pathlib import Path

import pytest
from support import SMALL

from fame import trainer
from fame.trainer import LAST, InjectedFailure, fit
from pipeline.config import load_config
from pipeline.runner import run_pipeline
from pipeline.stages import train

STAGES = ["ingest", "train"]


@pytest.fixture
def cfg(ml100k_slice, artifacts):
    over = {"paths.artifacts": str(artifacts), **SMALL, "init.method": "random"}
    return load_config("ml-100k", over, ml100k_slice)


def _train(cfg, force=()) -> tuple[dict, Path]:
    """Run ingest + train; the train manifest and the train stage's resume folder."""
    ctx = run_pipeline(cfg, STAGES, force=force, progress=False)
    return ctx.results["train"].artifact.manifest, train.work_dir(ctx)


def _killed_train(cfg, monkeypatch, force=()) -> Path:
    """A train killed after its first epoch, leaving its resume state: the folder holding it."""
    folders = []

    def killed(model, data, train_cfg, work_dir, **kw):
        folders.append(Path(work_dir))
        return fit(model, data, train_cfg, work_dir, **kw, fail_at_epoch=1)

    with monkeypatch.context() as m:
        m.setattr(trainer, "fit", killed)  # the train stage imports it when it runs
        with pytest.raises(InjectedFailure):
            run_pipeline(cfg, STAGES, force=force, progress=False)
    return folders[0]


def test_finished_train_leaves_no_resume_state(cfg):
    _meta, resume = _train(cfg)
    assert not resume.exists()


def test_forced_train_retrains_to_the_same_metrics(cfg, monkeypatch):
    first, _ = _train(cfg)
    forced, _ = _train(cfg, force=["train"])
    assert forced["resumed_from"] is None and forced["epochs_trained"] == SMALL["train.epochs"]
    assert forced["best_valid"] == first["best_valid"]
    # a forced train also ignores the state a killed train left behind
    assert (_killed_train(cfg, monkeypatch, force=["train"]) / LAST).is_file()
    again, resume = _train(cfg, force=["train"])
    assert again["resumed_from"] is None and again["best_valid"] == first["best_valid"]
    assert not resume.exists()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return b"\x00 this is not a torch checkpoint \xff" * 64


@pytest.mark.parametrize("spoil", [_truncated, _garbage])
def test_unreadable_resume_state_is_discarded_with_a_warning(cfg, monkeypatch, caplog, spoil):
    resume = _killed_train(cfg, monkeypatch)
    last = resume / LAST
    bad = spoil(last.read_bytes())
    last.write_bytes(bad)
    with caplog.at_level(logging.WARNING, logger="fame"):
        meta, _ = _train(cfg)
    assert any(r.levelno == logging.WARNING and str(last) in r.getMessage() for r in caplog.records)
    assert meta["resumed_from"] is None and meta["epochs_trained"] == SMALL["train.epochs"]
    # the same spoilt file under a forced train: it trains from scratch to the same metrics
    resume.mkdir(parents=True, exist_ok=True)
    last.write_bytes(bad)
    forced, _ = _train(cfg, force=["train"])
    assert forced["resumed_from"] is None and forced["best_valid"] == meta["best_valid"]
    assert not resume.exists()
