"""Training loop: next-item loss at every non-padding position, AdamW, early stopping on valid
NDCG@10, best weights kept, resumable after an interruption (FAME_SPEC §4)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fame.config import (
    SPEED_FIELDS,
    TRAIN_KEY_ONLY_IF_SET,
    EvalConfig,
    TrainConfig,
    selection_fields,
)
from fame.data import Packed, Sequences, num_batches, pack, train_batches
from fame.device import resolve_device
from fame.epoch_hook import EpochHook, ask, replay
from fame.evaluate import evaluate
from fame.losses import NextItemLoss, make_loss
from fame.model import SeqRecModel
from fame.shard import Shard
from storage.atomic import atomic_write_bytes

LAST = "last.pt"
LOCK = ".lock"
SHOWN = ("ndcg@10", "hr@10")  # valid metrics on the progress bar
log = logging.getLogger("fame.trainer")


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    best_valid: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    resumed_from: int | None = None
    epochs_trained: int = 0  # by this call: 0 when it resumed a finished state


@dataclass
class _Loop:
    """What a resume state restores besides the weights: optimizer, generators, progress."""

    opt: torch.optim.Optimizer
    shuffle_gen: torch.Generator
    sample_gen: torch.Generator
    loss_fn: NextItemLoss
    state: dict[str, Any]


class InjectedFailure(RuntimeError):
    """Raised by ``fit(..., fail_at_epoch=k)`` after epoch k is saved (tests of resumption)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain types, so ``torch.load(weights_only=True)`` reads them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, next_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, torch.tensor(mt, dtype=torch.int64), next_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        version, mt, next_gauss = state["python"]
        random.setstate((version, tuple(mt.tolist()), next_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a unique temporary file and a rename: concurrent writers never share
    a temporary name, and a reader sees the previous file or the new one, never part of one."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def resume_lock(work_dir: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``work_dir/.lock``; yields whether it is held.

    Every reader and writer of a resume state holds it, so two trains of one state never
    interleave. ``wait=False`` yields False at once when another process holds it.
    """
    fd = _acquire(work_dir, wait)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def _acquire(work_dir: Path, wait: bool) -> int | None:
    """Lock ``work_dir/.lock`` (created with its folder); None when busy and ``wait`` is False.

    A holder may delete the folder (``discard_resume_state``) while others wait; a waiter then
    holds a lock on an unlinked file, notices it, and locks the folder's new lock file instead.
    """
    lock = work_dir / LOCK
    while True:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed between mkdir and open
            continue
        try:
            held = _flock(fd, lock, wait)
        except BaseException:
            os.close(fd)
            raise
        if held and _is_current(fd, lock):
            return fd
        os.close(fd)
        if not held:
            return None


def _flock(fd: int, lock: Path, wait: bool) -> bool:
    """Take the exclusive lock on ``fd``, waiting (and saying so) only when ``wait``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            return False
        log.info("another train holds %s: waiting for it to finish", lock)
        fcntl.flock(fd, fcntl.LOCK_EX)
    return True


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not unlinked or replaced since it was opened)."""
    try:
        st, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def discard_resume_state(work_dir: str | Path) -> bool:
    """Delete ``work_dir`` (the resume state) once the trained model is stored elsewhere.

    Returns False, keeping it, while another ``fit`` holds it: that fit is using the state,
    and whoever called it discards the folder when done.
    """
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return True
    with resume_lock(work_dir, wait=False) as held:
        if not held:
            return False
        for path in work_dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name != LOCK:
                path.unlink()
        (work_dir / LOCK).unlink()
        with contextlib.suppress(OSError):  # a process that just locked a new .lock keeps it
            work_dir.rmdir()
    return True


def train_epoch(
    model: SeqRecModel,
    data: Sequences,
    cfg: TrainConfig,
    opt: torch.optim.Optimizer,
    loss_fn: NextItemLoss,
    shuffle_gen: torch.Generator,
    device: torch.device,
    bar: tqdm,
    shard: Shard | None = None,
    net: torch.nn.Module | None = None,
) -> float:
    """One pass over every user's train sequence; the mean loss over all trained positions.

    With a ``shard`` (data-parallel), every rank draws the same global batch and trains on its
    rows through ``net`` (the model under DDP); its mean loss is weighted by its share of the
    batch's positions, so DDP's average of the ranks' gradients is the gradient of the global
    mean: the same step as one process on the whole batch.
    """
    model.train()
    net = net or model
    amp = cfg.amp and device.type == "cuda"
    total, count = 0.0, 0
    batches = train_batches(
        data, model.cfg.max_len, cfg.batch_size, shuffle_gen, cfg.shuffle_window
    )
    for inp, tgt in batches:
        weight = 1.0
        if shard is not None:
            positions = int((tgt > 0).sum())  # of the global batch
            rows = shard.rows(len(tgt))
            if rows.start == rows.stop:  # a last batch smaller than the world: run, weigh 0
                rows, positions = slice(0, 1), 0
            inp, tgt = inp[rows], tgt[rows]
        b = Packed(*(t.to(device) for t in pack(inp, tgt, model.cfg.max_len)))
        mask = b.targets > 0
        n = int(mask.sum())
        if shard is not None:
            weight = n * shard.world / positions if positions else 0.0
        model.new_step()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            u = net(b.items, positions=b.positions, segments=b.segments)[mask]  # (P, d)
            loss = loss_fn(u, b.targets[mask], model.item_embeddings())
            if (penalty := model.penalty()) is not None:  # the tuned text projector's pull
                loss = loss + penalty
        opt.zero_grad(set_to_none=True)
        (loss * weight if shard is not None else loss).backward()
        opt.step()
        if weight:
            total, count = total + loss.item() * n, count + n
        bar.update()
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    if shard is not None:
        total, count = shard.all_sum(total, count)
    return total / max(count, 1)


def fit(
    model: SeqRecModel,
    data: Sequences,
    cfg: TrainConfig,
    work_dir: str | Path,
    progress: bool = True,
    fail_at_epoch: int | None = None,
    freeze_item_epochs: int = 0,
    fresh: bool = False,
    spec: EvalConfig | None = None,
    shard: Shard | None = None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    After every epoch ``work_dir/last.pt`` holds everything needed to continue (weights,
    optimizer, RNG and early-stopping state), so calling ``fit`` again with the same
    ``work_dir`` resumes after the last finished epoch and ends exactly as an uninterrupted run.
    A state that cannot be loaded, or was trained with another model, data or config, is
    discarded with a warning and training starts from scratch; ``fresh=True`` (a forced
    retrain) discards it unread. The state stays after a finished fit (calling again returns
    at once); ``discard_resume_state`` removes it once the model is stored.
    Concurrency: ``fit`` holds ``resume_lock(work_dir)`` throughout, so a second identical fit
    waits for the first, then resumes from its (finished) state with the same result.
    ``fail_at_epoch`` raises ``InjectedFailure`` once that epoch is saved (tests).
    ``freeze_item_epochs``: the item table E gets no update in the first that many epochs
    (a pre-trained E is kept while the rest of the model adapts to it), then trains as usual.
    ``spec``: the evaluation spec; early stopping ranks under its primary protocol.
    ``shard``: this process's rank in a data-parallel job (``fame.distributed``); rank 0 holds
    the lock, evaluates and saves, and its model ends with the best weights.
    ``on_epoch(epoch, valid)``: called after each valid evaluation once the epoch is saved (and
    for the epochs a resume restored); True raises ``Pruned``, leaving a resumable state.
    """
    work_dir = Path(work_dir)
    if on_epoch is not None and shard is not None:
        raise ValueError("on_epoch needs a single-process fit (rank 0 alone evaluates)")
    args = (model, data, cfg, spec or EvalConfig(), work_dir, progress, fail_at_epoch)
    if shard is not None and not shard.main:  # rank 0's lock covers the job
        return _fit_locked(*args, freeze_item_epochs, fresh, shard)
    with resume_lock(work_dir):
        return _fit_locked(*args, freeze_item_epochs, fresh, shard, on_epoch)


def _fit_locked(
    model: SeqRecModel,
    data: Sequences,
    cfg: TrainConfig,
    spec: EvalConfig,
    work_dir: Path,
    progress: bool,
    fail_at_epoch: int | None,
    freeze_item_epochs: int,
    fresh: bool,
    shard: Shard | None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    device = resolve_device(cfg.device)
    model.to(device)
    main = shard is None or shard.main
    params = [p for p in model.parameters() if p.requires_grad]
    fingerprint = _fingerprint(model, data, cfg, spec, freeze_item_epochs)
    last = work_dir / LAST
    if fresh and last.is_file() and main:
        log.info("discarding resume state %s: a forced train starts from scratch", last)
        last.unlink()
    if main:
        loop, resumed_from = _resume_or_start(
            model, cfg, params, device, last, fingerprint, data.item_counts(), data.held_out
        )
    if shard is not None:  # the others follow rank 0's decision (it may have discarded last)
        resumed_from = shard.broadcast(resumed_from if main else None)
        if not main:
            loop = _start(model, cfg, params, device, shard.rank, data.item_counts(), data.held_out)
            if resumed_from is not None:
                _restore(model, loop, last, fingerprint, rank=shard.rank)
    state = loop.state
    replay(on_epoch, state["history"], state["done"] or state["epoch"] >= cfg.epochs)

    n_batches = num_batches(data, cfg.batch_size)
    start_time = time.perf_counter() - state["seconds"]
    trained = 0
    while not state["done"] and state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        table = model.item_emb
        if freeze_item_epochs and table is not None and any(p is table.weight for p in params):
            # no grad -> AdamW leaves E, its moments and its weight decay untouched this epoch
            table.weight.requires_grad_(epoch > freeze_item_epochs)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", disable=not progress, dynamic_ncols=True)
        net = shard.wrap(model) if shard is not None else model  # DDP over what trains now
        loss = train_epoch(
            model, data, cfg, loop.opt, loop.loss_fn, loop.shuffle_gen, device, bar, shard, net
        )
        row: dict[str, Any] = {"epoch": epoch, "loss": loss}
        row["train_seconds"] = time.perf_counter() - t0
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            t1 = time.perf_counter()
            if main:
                valid = _validate(model, data, cfg, spec, device, state, epoch)
                row.update(valid=valid, eval_seconds=time.perf_counter() - t1)
                bar.set_postfix(  # a dict keeps this order; keyword arguments get sorted
                    {"loss": f"{loss:.4f}", **{f"valid {k}": f"{valid[k]:.4f}" for k in SHOWN}}
                )
            if shard is not None:
                state["done"] = shard.broadcast(state["done"])
        bar.close()
        row["seconds"] = time.perf_counter() - t0
        state["history"].append(row)
        state["epoch"] = epoch
        state["seconds"] = time.perf_counter() - start_time
        trained += 1
        if not progress and main:
            log.info(_epoch_line(row))
        # every rank's generators go into rank 0's one file: a resume restores all or none
        ranks = shard.gather(_rank_rng(loop)) if shard is not None else None
        if main:
            _save_atomic(_resume_state(model, loop, fingerprint, ranks), last)
        if shard is not None:
            shard.barrier()
        if fail_at_epoch is not None and epoch == fail_at_epoch:
            raise InjectedFailure(f"injected failure after epoch {epoch}")
        ask(on_epoch, row, final=state["done"] or epoch >= cfg.epochs)

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    best_valid = next(
        (h["valid"] for h in state["history"] if h["epoch"] == state["best_epoch"]), {}
    )
    return FitResult(
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        best_valid=best_valid,
        history=state["history"],
        seconds=state["seconds"],
        stopped_early=state["done"],
        resumed_from=resumed_from,
        epochs_trained=trained,
    )


def _validate(
    model: SeqRecModel,
    data: Sequences,
    cfg: TrainConfig,
    spec: EvalConfig,
    device: torch.device,
    state: dict[str, Any],
    epoch: int,
) -> dict[str, float]:
    """Valid metrics of ``epoch`` under the primary protocol; keeps the best weights in
    ``state`` and decides early stopping."""
    res = evaluate(model, data, "valid", spec, device, protocols=[spec.primary], topk=0)
    valid = res[spec.primary].metrics
    if valid["ndcg@10"] > state["best_score"]:
        best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state.update(best_score=valid["ndcg@10"], best_epoch=epoch, bad=0, best_state=best)
    else:
        state["bad"] += 1
    state["done"] = state["bad"] >= cfg.patience
    return valid


def _fingerprint(
    model: SeqRecModel, data: Sequences, cfg: TrainConfig, spec: EvalConfig, freeze_item_epochs: int
) -> str:
    """What a resume state was trained with: a state saved under another one is not resumed."""
    train = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in SPEED_FIELDS and TRAIN_KEY_ONLY_IF_SET.get(k, object()) != v
    }
    train |= selection_fields(spec)
    return json.dumps(
        {
            "model": dataclasses.asdict(model.cfg),
            "num_items": model.num_items,
            "data": [data.num_users, int(data.train_lengths().sum())],  # users, train interactions
            "train": train,
            "freeze_item_epochs": freeze_item_epochs,
        },
        sort_keys=True,
        default=str,
    )


def _fresh_state() -> dict[str, Any]:
    return {
        "epoch": 0,
        "best_score": -1.0,
        "best_epoch": 0,
        "bad": 0,  # evaluations since the best one
        "history": [],
        "best_state": None,
        "done": False,
        "seconds": 0.0,
    }


def _start(
    model: SeqRecModel,
    cfg: TrainConfig,
    params: list[torch.nn.Parameter],
    device: torch.device,
    rank: int = 0,
    counts: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
) -> _Loop:
    """Seeded optimizer, generators and loss at epoch 0. Every rank of a data-parallel job
    shuffles alike (they cut the same global batches); dropout and negatives draw per rank."""
    offset = 1_000_003 * rank
    seed_everything(cfg.seed + offset)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + offset)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss = make_loss(cfg, sample_gen, counts, held_out)
    return _Loop(opt, shuffle_gen, sample_gen, loss, _fresh_state())


def _rank_rng(loop: _Loop) -> dict[str, Any]:
    """What differs between the ranks of a data-parallel job: their generators."""
    return {"rng": _rng_state(), "sample_gen": loop.sample_gen.get_state()}


def _resume_state(
    model: SeqRecModel, loop: _Loop, fingerprint: str, ranks: list | None = None
) -> dict[str, Any]:
    extra = {"ranks": ranks} if ranks is not None else {}
    return {
        **extra,
        "model": model.state_dict(),
        "optimizer": loop.opt.state_dict(),
        "state": loop.state,
        "shuffle_gen": loop.shuffle_gen.get_state(),
        "sample_gen": loop.sample_gen.get_state(),
        "rng": _rng_state(),
        "fingerprint": fingerprint,
    }


def _resume_or_start(
    model: SeqRecModel,
    cfg: TrainConfig,
    params: list[torch.nn.Parameter],
    device: torch.device,
    last: Path,
    fingerprint: str,
    counts: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
) -> tuple[_Loop, int | None]:
    """The loop restored from ``last`` (and the epoch it resumes after), else a fresh one.

    A state that fails to load is deleted with a warning; the model gets its initial weights
    back, since a half-applied state may already have changed them.
    """
    loop = _start(model, cfg, params, device, counts=counts, held_out=held_out)
    if not last.is_file():
        return loop, None
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        _restore(model, loop, last, fingerprint)
    except Exception as exc:  # unreadable, truncated or from another run: any reason discards it
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        log.warning(
            "discarding resume state %s (%s: %s); training from scratch",
            last,
            type(exc).__name__,
            reason,
        )
        last.unlink(missing_ok=True)
        model.load_state_dict(initial)
        return _start(model, cfg, params, device, counts=counts, held_out=held_out), None
    return loop, loop.state["epoch"]


def _restore(model: SeqRecModel, loop: _Loop, last: Path, fingerprint: str, rank: int = 0) -> None:
    """Load ``last`` into ``model`` and ``loop`` (``rank``'s generators of a data-parallel
    job); raises when it is not a state of this run."""
    saved = torch.load(last, map_location="cpu", weights_only=True)  # RNG states live on CPU
    # a state written before fingerprints existed is checked by its shapes alone
    if saved.get("fingerprint", fingerprint) != fingerprint:
        raise ValueError("saved with another model, data or training config")
    if saved["state"].keys() != _fresh_state().keys():
        raise ValueError(f"unexpected training state fields {sorted(saved['state'])}")
    model.load_state_dict(saved["model"])
    loop.opt.load_state_dict(saved["optimizer"])
    loop.shuffle_gen.set_state(saved["shuffle_gen"])
    own = saved["ranks"][rank] if "ranks" in saved else saved
    loop.sample_gen.set_state(own["sample_gen"])
    _set_rng_state(own["rng"])
    loop.state = saved["state"]


def _epoch_line(row: dict[str, Any]) -> str:
    v = row.get("valid", {})
    return (
        f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  "
        f"valid ndcg@10 {v.get('ndcg@10', float('nan')):.4f}  hr@10 {v.get('hr@10', float('nan')):.4f}"
        f"  ({row['train_seconds']:.1f}s)"
    )
