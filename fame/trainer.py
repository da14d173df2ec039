"""Training loop: next-item loss at every non-padding position, AdamW, early stopping on valid
NDCG@10, best weights kept, resumable after an interruption (FAME_SPEC §4)."""

from __future__ import annotations

import copy
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
from fame.data import SplitData, train_batches
from fame.evaluate import evaluate
from fame.losses import make_loss
from fame.model import SeqRecModel

LAST = "last.pt"
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
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def trim_padding(inp: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop leading columns that are padding in every row (positions are right-aligned, so the
    result is exactly the same computation on a shorter batch)."""
    longest = int((tgt > 0).sum(1).max()) if len(tgt) else 0
    return inp[:, -longest:], tgt[:, -longest:]


def fit(
    model: SeqRecModel,
    data: SplitData,
    cfg: TrainConfig,
    work_dir: str | Path,
    progress: bool = True,
    fail_at_epoch: int | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch."""
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
    amp = cfg.amp and device.type == "cuda"

    state: dict[str, Any] = {
        "epoch": 0,
        "best_score": -1.0,
        "best_epoch": 0,
        "bad": 0,
        "history": [],
        "best_state": None,
        "done": False,
        "seconds": 0.0,
    }
    resumed_from = None
    last = work_dir / LAST
    if last.is_file():
        saved = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        shuffle_gen.set_state(saved["shuffle_gen"])
        sample_gen.set_state(saved["sample_gen"].to(sample_gen.get_state().device))
        _set_rng_state(saved["rng"])
        state = saved["state"]
        resumed_from = state["epoch"]

    L = model.cfg.max_len
    n_batches = -(-int((np.diff(data.offsets) >= 2).sum()) // cfg.batch_size)
    start_time = time.perf_counter() - state["seconds"]
    while not state["done"] and state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        model.train()
        t0 = time.perf_counter()
        total, count = 0.0, 0
        bar = tqdm(
            train_batches(data, L, cfg.batch_size, shuffle_gen),
            total=n_batches,
            desc=f"epoch {epoch}",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        for inp, tgt in bar:
            inp, tgt = trim_padding(inp, tgt)
            inp, tgt = inp.to(device), tgt.to(device)
            mask = tgt > 0
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                u = model(inp)[mask]  # only non-padding positions reach the logits
                loss = loss_fn(u, tgt[mask], model.item_embeddings())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = int(mask.sum())
            total += loss.item() * n
            count += n
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        train_seconds = time.perf_counter() - t0
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": total / max(count, 1),
            "train_seconds": train_seconds,
        }
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            t1 = time.perf_counter()
            valid = evaluate(model, data, "valid", cfg, device, topk=0).metrics
            row.update({"valid": valid, "eval_seconds": time.perf_counter() - t1})
            score = valid["ndcg@10"]
            if score > state["best_score"]:
                state.update(
                    best_score=score,
                    best_epoch=epoch,
                    bad=0,
                    best_state=copy.deepcopy(
                        {k: v.detach().cpu() for k, v in model.state_dict().items()}
                    ),
                )
            else:
                state["bad"] += 1
            if state["bad"] >= cfg.patience:
                state["done"] = True
        state["history"].append(row)
        state["epoch"] = epoch
        state["seconds"] = time.perf_counter() - start_time
        v = row.get("valid", {})
        line = (
            f"epoch {epoch:3d}  loss {row['loss']:.4f}  valid ndcg@10 {v.get('ndcg@10', float('nan')):.4f}"
            f"  hr@10 {v.get('hr@10', float('nan')):.4f}  ({train_seconds:.1f}s)"
        )
        if progress:
            tqdm.write(line)
        else:
            log.info(line)
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
    best = next((h["valid"] for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    return FitResult(
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        best_valid=best,
        history=state["history"],
        seconds=state["seconds"],
        stopped_early=state["done"],
        resumed_from=resumed_from,
    )
