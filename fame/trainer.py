"""Training loop: next-item loss at every non-padding position, AdamW, early stopping on valid
NDCG@10, best weights kept, resumable after an interruption (FAME_SPEC §4)."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fame.config import TrainConfig
from fame.data import Packed, SplitData, pack, train_batches
from fame.evaluate import evaluate
from fame.losses import NextItemLoss, make_loss
from fame.model import SeqRecModel

LAST = "last.pt"
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


class InjectedFailure(RuntimeError):
    """Raised by ``fit(..., fail_at_epoch=k)`` after epoch k is saved (tests of resumption)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = 'cuda' but CUDA is not available")
    return torch.device(name)


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
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_epoch(
    model: SeqRecModel,
    data: SplitData,
    cfg: TrainConfig,
    opt: torch.optim.Optimizer,
    loss_fn: NextItemLoss,
    shuffle_gen: torch.Generator,
    device: torch.device,
    bar: tqdm,
) -> float:
    """One pass over every user's train sequence; the mean loss over all trained positions."""
    model.train()
    amp = cfg.amp and device.type == "cuda"
    total, count = 0.0, 0
    for inp, tgt in train_batches(data, model.cfg.max_len, cfg.batch_size, shuffle_gen):
        b = Packed(*(t.to(device) for t in pack(inp, tgt, model.cfg.max_len)))
        mask = b.targets > 0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            u = model(b.items, positions=b.positions, segments=b.segments)[mask]  # (P, d)
            loss = loss_fn(u, b.targets[mask], model.item_embeddings())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = int(mask.sum())
        total, count = total + loss.item() * n, count + n
        bar.update()
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    return total / max(count, 1)


def fit(
    model: SeqRecModel,
    data: SplitData,
    cfg: TrainConfig,
    work_dir: str | Path,
    progress: bool = True,
    fail_at_epoch: int | None = None,
    freeze_item_epochs: int = 0,
) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    After every epoch ``work_dir/last.pt`` holds everything needed to continue (weights,
    optimizer, RNG and early-stopping state), so calling ``fit`` again with the same
    ``work_dir`` resumes after the last finished epoch and ends exactly as an uninterrupted run.
    ``fail_at_epoch`` raises ``InjectedFailure`` once that epoch is saved (tests).
    ``freeze_item_epochs``: the item table E gets no update in the first that many epochs
    (a pre-trained E is kept while the rest of the model adapts to it), then trains as usual.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model.to(device)
    seed_everything(cfg.seed)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    loss_fn = make_loss(cfg, sample_gen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    state: dict[str, Any] = {
        "epoch": 0,
        "best_score": -1.0,
        "best_epoch": 0,
        "bad": 0,  # evaluations since the best one
        "history": [],
        "best_state": None,
        "done": False,
        "seconds": 0.0,
    }
    resumed_from = None
    last = work_dir / LAST
    if last.is_file():
        saved = torch.load(last, map_location="cpu", weights_only=True)  # RNG states live on CPU
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        shuffle_gen.set_state(saved["shuffle_gen"])
        sample_gen.set_state(saved["sample_gen"])
        _set_rng_state(saved["rng"])
        state = saved["state"]
        resumed_from = state["epoch"]

    n_batches = -(-int((np.diff(data.offsets) >= 2).sum()) // cfg.batch_size)
    start_time = time.perf_counter() - state["seconds"]
    while not state["done"] and state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        if freeze_item_epochs and any(p is model.item_emb.weight for p in params):
            # no grad -> AdamW leaves E, its moments and its weight decay untouched this epoch
            model.item_emb.weight.requires_grad_(epoch > freeze_item_epochs)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", disable=not progress, dynamic_ncols=True)
        loss = train_epoch(model, data, cfg, opt, loss_fn, shuffle_gen, device, bar)
        row: dict[str, Any] = {"epoch": epoch, "loss": loss}
        row["train_seconds"] = time.perf_counter() - t0
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            t1 = time.perf_counter()
            valid = evaluate(model, data, "valid", cfg, device, topk=0).metrics
            row.update(valid=valid, eval_seconds=time.perf_counter() - t1)
            if valid["ndcg@10"] > state["best_score"]:
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                state.update(best_score=valid["ndcg@10"], best_epoch=epoch, bad=0, best_state=best)
            else:
                state["bad"] += 1
            state["done"] = state["bad"] >= cfg.patience
            bar.set_postfix(  # a dict keeps this order; keyword arguments get sorted
                {"loss": f"{loss:.4f}", **{f"valid {k}": f"{valid[k]:.4f}" for k in SHOWN}}
            )
        bar.close()
        row["seconds"] = time.perf_counter() - t0
        state["history"].append(row)
        state["epoch"] = epoch
        state["seconds"] = time.perf_counter() - start_time
        if not progress:
            log.info(_epoch_line(row))
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "state": state,
                "shuffle_gen": shuffle_gen.get_state(),
                "sample_gen": sample_gen.get_state(),
                "rng": _rng_state(),
            },
            last,
        )
        if fail_at_epoch is not None and epoch == fail_at_epoch:
            raise InjectedFailure(f"injected failure after epoch {epoch}")

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
    )


def _epoch_line(row: dict[str, Any]) -> str:
    v = row.get("valid", {})
    return (
        f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  "
        f"valid ndcg@10 {v.get('ndcg@10', float('nan')):.4f}  hr@10 {v.get('hr@10', float('nan')):.4f}"
        f"  ({row['train_seconds']:.1f}s)"
    )
