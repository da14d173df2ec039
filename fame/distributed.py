"""Data-parallel training of one model under torchrun: N processes, each on a disjoint shard of
every global batch, gradients all-reduced by DistributedDataParallel (gloo on CPU, nccl on CUDA).

``launch`` runs a training job in ``nproc`` processes from a job file and returns rank 0's
result; ``python -m fame.distributed JOB_DIR`` is the per-rank entry point torchrun starts.
Rank 0 alone evaluates, decides early stopping (broadcast to the others) and writes the resume
state (every rank's RNG state gathered into it), so a killed job resumes like a single process.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from fame.shard import init_from_env

if TYPE_CHECKING:
    from fame.config import EvalConfig, TrainConfig
    from fame.data import Sequences
    from fame.model import SeqRecModel
    from fame.trainer import FitResult

JOB, RESULT = "job.pt", "result.pt"
JOIN_TIMEOUT_S = 900  # torchrun's wait for every rank to join the rendezvous


def fit_distributed(
    model: SeqRecModel,
    data: Sequences,
    cfg: TrainConfig,
    work_dir: str | Path,
    *,
    spec: EvalConfig,
    progress: bool = True,
    freeze_item_epochs: int = 0,
    fresh: bool = False,
    fail_at_epoch: int | None = None,
) -> FitResult:
    """``fit`` in ``cfg.nproc`` processes: the same arguments and result; ``model`` ends with
    the best weights, as after ``fit``. The job's files live in ``work_dir/ddp``."""
    from fame.trainer import FitResult

    work_dir = Path(work_dir)
    if len(data.held_out):
        raise ValueError("the cold-start protocol (data.cold_items) runs with train.nproc = 1")
    table = model.item_emb
    job = {
        "model_cfg": dataclasses.asdict(model.cfg),
        "num_items": model.num_items,
        "state": model.state_dict(),
        "train_item_table": table is None or table.weight.requires_grad,
        "text_spec": None if model.text_spec is None else model.text_spec.as_dict(),
        "data": _data_job(data),
        "train_cfg": dataclasses.asdict(cfg),
        "spec": dataclasses.asdict(spec),
        "work_dir": str(work_dir),
        "progress": progress,
        "freeze_item_epochs": freeze_item_epochs,
        "fresh": fresh,
        "fail_at_epoch": fail_at_epoch,
    }
    out = launch(job, work_dir / "ddp", cfg.nproc)
    model.load_state_dict(out["state"])
    return FitResult(**out["result"])


def _data_job(data: Sequences) -> dict[str, Any]:
    """A streamed source travels as its path (every rank streams it); a whole split as arrays."""
    from fame.streaming import ParquetSequences

    if isinstance(data, ParquetSequences):
        return {"parquet": str(data.path)}
    arrays = ("user_ids", "offsets", "items", "valid", "test")
    return {k: torch.from_numpy(getattr(data, k)) for k in arrays} | {
        "block_users": data.block_users
    }


def _data_from_job(job: dict[str, Any], num_items: int) -> Sequences:
    from fame.data import SplitData
    from fame.streaming import ParquetSequences

    if "parquet" in job:
        return ParquetSequences(job["parquet"], num_items)
    arrays = {k: v.numpy() for k, v in job.items() if k != "block_users"}
    return SplitData(**arrays, num_items=num_items, block_users=job["block_users"])


def launch(job: dict[str, Any], job_dir: Path, nproc: int) -> dict[str, Any]:
    """Write ``job`` (model config and state, data arrays, train config; plain types and
    tensors) to ``job_dir``, train it in ``nproc`` torchrun processes, return rank 0's result
    (``state_dict`` of the best weights and the ``FitResult`` fields)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    torch.save(job, job_dir / JOB)
    (job_dir / RESULT).unlink(missing_ok=True)
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    logs = job_dir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    # a loaded machine may start the ranks minutes apart: wait for them, do not give up
    cmd += [f"--nproc_per_node={nproc}", f"--rdzv-conf=join_timeout={JOIN_TIMEOUT_S}"]
    cmd += ["--log-dir", str(logs), "--tee", "3"]  # each rank's output on screen and on file
    cmd += ["-m", "fame.distributed", str(job_dir)]
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"distributed training failed (exit {proc.returncode}): {' '.join(cmd)}"
            + "".join(_rank_tail(p) for p in sorted(logs.rglob("stderr.log")))
        )
    return torch.load(job_dir / RESULT, map_location="cpu", weights_only=True)


def _rank_tail(path: Path, lines: int = 5) -> str:
    """The last lines a rank wrote to stderr, for the launcher's error (empty if it wrote none)."""
    text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"\n  {path.parent.name}: " + "\n    ".join(text) if text else ""


def _run(job_dir: Path) -> None:
    from fame.config import EvalConfig, ModelConfig, TrainConfig
    from fame.item_repr import TextSpec
    from fame.model import SeqRecModel
    from fame.trainer import fit

    shard = init_from_env()
    try:
        job = torch.load(job_dir / JOB, map_location="cpu", weights_only=True)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
        text = TextSpec(**job["text_spec"]) if job.get("text_spec") else None
        model = SeqRecModel(ModelConfig(**job["model_cfg"]), job["num_items"], text)
        model.load_state_dict(job["state"])
        if model.item_emb is not None:
            model.item_emb.weight.requires_grad_(job["train_item_table"])
        data = _data_from_job(job["data"], job["num_items"])
        result = fit(
            model,
            data,
            TrainConfig(**job["train_cfg"]),
            job["work_dir"],
            progress=job["progress"] and shard.main,
            fail_at_epoch=job.get("fail_at_epoch"),
            freeze_item_epochs=job["freeze_item_epochs"],
            fresh=job["fresh"],
            spec=EvalConfig(**job["spec"]),
            shard=shard,
        )
        if shard.main:
            out = {"state": model.state_dict(), "result": dataclasses.asdict(result)}
            torch.save(out, job_dir / RESULT)
        shard.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _run(Path(sys.argv[1]))
