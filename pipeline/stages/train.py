"""train: sequences (+ initial embeddings) -> a FAME or SASRec checkpoint with early stopping.

Training state lives in ``<store>/_work/train/<key>/`` (``last.pt`` after every epoch), so a
killed run resumes from its last finished epoch when the same config is run again. A forced
train starts from scratch; the state is deleted once the artifact holding the model is published.
In a sweep's Optuna trial the epochs are reported to the study (``studies.pruning``); a pruned
train publishes nothing and keeps its state, so the same config run later resumes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fame.config import (
    FAME_ONLY_FIELDS,
    SPEED_FIELDS,
    TEXT_ONLY_FIELDS,
    TRAIN_KEY_ONLY_IF_SET,
    ModelConfig,
    selection_fields,
)
from fame.epoch_hook import EPOCH_HOOK
from pipeline.artifacts import (
    CHECKPOINT,
    held_out_items,
    initial_vectors,
    streamed_sequences,
    text_projector,
    text_vectors,
)
from pipeline.config import InitConfig, RunConfig
from pipeline.errors import PipelineError
from pipeline.stages.base import RESULT, StageOutput, drop_at_default

if TYPE_CHECKING:
    import torch

    from fame.model import SeqRecModel
    from pipeline.context import RunContext
    from storage import Artifact

NAME = "train"
VERSION = "1"
SUMMARY = "Train FAME or SASRec with early stopping, then evaluate on the test split."
TABLES = {
    "history": RESULT
}  # per-epoch curves; the checkpoint is a folder beside it (``CHECKPOINT``)
log = logging.getLogger("fame")
NOT_IN_KEY = SPEED_FIELDS  # TrainConfig fields that change speed or reporting, not the weights
# ModelConfig fields added after artifacts were first written: at their default they are left
# out of the key, so a model they do not change keeps its artifacts (and its bench records)
KEY_ONLY_IF_SET = {"residual", "router_top_k", "item_repr"}
KEY_ONLY_IF_SET_INIT = {"freeze_epochs", "scale", "gain"}  # the same rule for InitConfig
_MODEL_DEFAULTS = {k: getattr(ModelConfig(), k) for k in KEY_ONLY_IF_SET}
_INIT_DEFAULTS = {k: getattr(InitConfig(), k) for k in KEY_ONLY_IF_SET_INIT}


def upstream(cfg: RunConfig) -> list[str]:
    # the pretrain stage makes the initial table for text and facet_pretrain alike; the text
    # pathway reads the encoder's vectors t_v too
    if cfg.init.method == "random":
        return ["ingest"]
    return (
        ["ingest", "encode", "pretrain"]
        if cfg.model.item_repr == "text"
        else ["ingest", "pretrain"]
    )


def key_config(cfg: RunConfig) -> dict:
    train = {k: v for k, v in cfg.section("train").items() if k not in NOT_IN_KEY}
    train = drop_at_default(train, TRAIN_KEY_ONLY_IF_SET) | selection_fields(cfg.evaluate)
    model = drop_at_default(cfg.section("model"), _MODEL_DEFAULTS)
    if cfg.model.name == "sasrec":
        model = {k: v for k, v in model.items() if k not in FAME_ONLY_FIELDS}
    if cfg.model.item_repr != "text":
        model = {k: v for k, v in model.items() if k not in TEXT_ONLY_FIELDS}
    init = drop_at_default(cfg.section("init"), _INIT_DEFAULTS)
    return {"model": model, "train": train, "init": init}


def text_pathway_model(cfg: RunConfig, inputs: dict[str, Artifact], num_items: int) -> SeqRecModel:
    """A model whose E is the text pathway (``fame.item_repr``): the encoder's t_v, the pretrain
    stage's projector φ and its scale s times ``init.gain``; W_f^h the selector of slice h, so
    head h reads facet projector h."""
    import torch

    from fame.model import SeqRecModel

    spec, state, scale = text_projector(inputs["pretrain"])
    model = SeqRecModel(cfg.model, num_items, spec)
    ids, vec = text_vectors(inputs["encode"])
    rows = torch.as_tensor(np.array(ids, dtype=np.int64))
    text = torch.zeros(num_items + 1, spec.dim)
    text[rows] = torch.as_tensor(np.array(vec, dtype=np.float32))
    has_text = torch.zeros(num_items + 1, dtype=torch.bool)
    has_text[rows] = True
    gen = torch.Generator().manual_seed(cfg.train.seed)
    held_out = torch.as_tensor(held_out_items(inputs["ingest"]), dtype=torch.long)
    model.text_items.load(
        text, has_text, state, scale * cfg.init.gain, cfg.model.init_std, gen, held_out
    )
    if missing := num_items - len(ids):
        log.info(
            "text pathway: %d of %d items have no text and fall back to their ID part alone",
            missing,
            num_items,
        )
    return model


def initial_table(
    cfg: RunConfig, inputs: dict[str, Artifact], model: SeqRecModel
) -> torch.Tensor | None:
    """The (num_items+1, d) initial E times ``init.gain``, the one place the gain is applied:
    for init=text|facet_pretrain the pretrain stage's table, for random init the model's own
    table (None at gain 1: left as it is), so that a gain's effect can be told apart from the
    text's."""
    from pretrain.table import initial_item_table

    if cfg.init.method == "random":
        if cfg.init.gain == 1:
            return None
        return model.item_embeddings().detach() * cfg.init.gain
    ids, vec = initial_vectors(inputs["pretrain"])
    if vec.shape[1] != cfg.model.d:
        raise PipelineError(f"initial embeddings have {vec.shape[1]} dims, model.d = {cfg.model.d}")
    m = cfg.model
    table = initial_item_table(
        ids, vec, model.num_items, m.init_std, m.heads, cfg.init.scale, cfg.train.seed
    )
    return table * cfg.init.gain


def work_dir(ctx: RunContext) -> Path:
    return ctx.store.root / "_work" / NAME / ctx.keys[NAME]


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    # imported here: torch costs seconds at start-up that the registry's users never need
    import torch

    from fame.checkpoint import save_checkpoint
    from fame.distributed import fit_distributed
    from fame.model import SeqRecModel
    from fame.trainer import discard_resume_state, fit

    cfg = ctx.config
    ingest = inputs["ingest"]
    num_items = ingest.rows["items"]
    data = streamed_sequences(ingest)
    torch.manual_seed(cfg.train.seed)
    if cfg.model.item_repr == "text":
        model = text_pathway_model(cfg, inputs, num_items)
    else:
        model = SeqRecModel(cfg.model, num_items)
        if (init := initial_table(cfg, inputs, model)) is not None:
            model.load_item_init(
                init, select_facets=cfg.init.method == "facet_pretrain", freeze=cfg.init.freeze
            )
    kwargs = {
        "progress": ctx.progress,
        "freeze_item_epochs": cfg.init.freeze_epochs,
        "fresh": NAME in ctx.force,  # a forced train retrains, whatever state a run left
        "spec": cfg.evaluate,
    }
    on_epoch = EPOCH_HOOK.get()  # a sweep trial's pruning hook: not config, not in the key
    if cfg.train.nproc > 1:  # data-parallel under torchrun; rank 0 hands back the model
        if on_epoch is not None:
            log.warning("train.nproc > 1: epochs are not reported, the trial is not pruned")
        result = fit_distributed(model, data, cfg.train, work_dir(ctx), **kwargs)
    else:
        result = fit(model, data, cfg.train, work_dir(ctx), **kwargs, on_epoch=on_epoch)
    history = pa.Table.from_pylist([_flat(h) for h in result.history])
    item_map = ingest.table("items").select(["item_id", "source_id"])

    def files(tmp: Path) -> None:
        save_checkpoint(
            tmp / CHECKPOINT,
            model,
            cfg.model,
            num_items,
            extra={
                "dataset": cfg.data.name,
                "train_key": ctx.keys[NAME],
                "best_epoch": result.best_epoch,
            },
        )

        pq.write_table(item_map, tmp / CHECKPOINT / "item_map.parquet")

    return StageOutput(
        tables={"history": history},
        files=files,
        meta={
            "model": cfg.model.name,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "epochs_trained": result.epochs_trained,
            "best_valid": result.best_valid,
            "train_seconds": result.seconds,
            "stopped_early": result.stopped_early,
            "resumed_from": result.resumed_from,
            "num_params": sum(p.numel() for p in model.parameters()),
        },
        # the published artifact holds the model: the resume state is redundant from then on
        after_publish=lambda: discard_resume_state(work_dir(ctx)),
    )


def _flat(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update({f"valid_{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out
