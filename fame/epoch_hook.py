"""``fit``'s per-epoch hook: it sees every evaluated epoch's valid metrics and may stop the fit
(an Optuna trial pruned), which ``Pruned`` then reports.

Torch-free, so the pipeline's runner tells a pruned run from a failed one without importing
the trainer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

# (epoch, valid metrics of the primary protocol) -> True to stop training there
EpochHook = Callable[[int, dict[str, float]], bool | None]

# the hook of the train stages run in this context: a sweep trial's pruner, never a config field
EPOCH_HOOK: ContextVar[EpochHook | None] = ContextVar("fame_epoch_hook", default=None)


@contextlib.contextmanager
def epoch_hook(hook: EpochHook | None) -> Iterator[None]:
    """``hook`` for the train stages run in this context (this thread, in-process executor)."""
    token = EPOCH_HOOK.set(hook)
    try:
        yield
    finally:
        EPOCH_HOOK.reset(token)


class Pruned(Exception):
    """A fit its hook stopped after ``epoch``: a trial given up, not a model. The resume state
    of that epoch stays, so the same fit without the hook continues it to the end."""

    def __init__(self, epoch: int, valid: Mapping[str, float]):
        self.epoch, self.valid = epoch, dict(valid)
        score = self.valid.get("ndcg@10", float("nan"))
        super().__init__(f"pruned after epoch {epoch} (valid ndcg@10 {score:.4f})")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.epoch, self.valid))


def ask(hook: EpochHook | None, row: Mapping[str, Any], final: bool) -> None:
    """Show ``hook`` one history row of ``fit``; raise ``Pruned`` when it says stop and the fit
    would go on (``final``: its last epoch, reported but never pruned)."""
    if hook is None or "valid" not in row:
        return
    if hook(int(row["epoch"]), dict(row["valid"])) and not final:
        raise Pruned(int(row["epoch"]), row["valid"])


def replay(hook: EpochHook | None, history: Sequence[Mapping[str, Any]], finished: bool) -> None:
    """``ask`` about the epochs a resumed fit restored, so the hook sees the whole curve (a
    state that is ``finished`` is reported, never pruned: its model is complete)."""
    for row in history:
        ask(hook, row, final=finished)
