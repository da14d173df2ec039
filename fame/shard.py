"""A process's place in a data-parallel training job (``fame.distributed``) and the few
collectives the trainer needs from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: rank r of ``world`` takes rows [r·B/W, (r+1)·B/W)."""

    rank: int
    world: int

    def rows(self, n: int) -> slice:
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model under DDP for the parameters that train now (rebuilt when E unfreezes)."""
        from torch.nn.parallel import DistributedDataParallel

        unused = getattr(model.cfg, "name", "") == "fame" and not model.cfg.gate  # W_g idle
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    def all_sum(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` on rank 0 (None elsewhere)."""
        out = [None] * self.world if self.main else None
        dist.gather_object(value, out, dst=0)
        return out

    def barrier(self) -> None:
        dist.barrier()


# how long a rank waits in a collective for the others: a loaded machine (a rank descheduled
# for minutes, rank 0 evaluating alone) must not abort a job that is merely slow
TIMEOUT_ENV, TIMEOUT_S = "FAME_DDP_TIMEOUT_S", 1800


def init_from_env() -> Shard:
    """Join the process group torchrun describes in the environment, and wait until every rank
    has joined, so a slow start fails (if ever) here, naming the missing rank, not mid-epoch."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S)))
    dist.init_process_group(backend, timeout=timeout)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if backend == "gloo":
        dist.monitored_barrier(timeout=timeout)  # names the rank that never arrived
    else:
        dist.barrier()
    return Shard(dist.get_rank(), dist.get_world_size())
