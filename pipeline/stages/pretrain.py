"""pretrain: text vectors -> the initial item embeddings that train starts from.

``init = facet_pretrain`` (and any config that runs this stage without ``init = text``): facet
labels shape one sub-space per head (FAME_SPEC §6); writes ``item_embeddings`` (the full initial
vector and one column per facet slice) and ``facet_report`` (kNN label accuracy per facet for
each slice, the raw text and a random projection), the check that each facet's sub-space holds
that facet. ``init = text``: the unsupervised control, PCA of the text vectors to d dims
(``pretrain.train.plain_projection``), ``item_embeddings`` only.

Both store the projector that made the table (``projector.safetensors`` and its shapes and
scale in ``projector.json``): the text pathway (``model.item_repr = "text"``) keeps it inside the
model. Under the cold-start protocol the projector (and the PCA) is fitted without the held-out
items, as it would be for items that arrive after training; their vectors are projected with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.artifacts import PROJECTOR, PROJECTOR_META, facet_labels, held_out_items, text_vectors
from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.stages.base import DATA, RESULT, StageOutput, drop_at_default
from pretrain.config import PretrainConfig
from storage.vectors import to_column

if TYPE_CHECKING:
    from pipeline.context import RunContext
    from storage import Artifact

NAME = "pretrain"
VERSION = "2"  # 2: per-facet projector parameters (no cross-facet Adam state)
SUMMARY = "Facet-aware supervised contrastive pre-training of item embeddings."
TABLES = {"item_embeddings": DATA, "facet_report": RESULT}
log = logging.getLogger("fame")


def upstream(cfg: RunConfig) -> list[str]:
    return ["ingest", "encode"]


# PretrainConfig fields added after artifacts were first written: in the key only when set
KEY_ONLY_IF_SET = {"start", "keep_text"}
_DEFAULTS = {k: getattr(PretrainConfig(), k) for k in KEY_ONLY_IF_SET}


# version of the unsupervised projection behind init=text (2: PCA with fixed axis signs)
TEXT_PROJECTION_VERSION = 2


def key_config(cfg: RunConfig) -> dict:
    if cfg.init.method == "text":  # the PCA pads with seeded noise where d exceeds its rank
        return {
            "text_projection": TEXT_PROJECTION_VERSION,
            "d": cfg.model.d,
            "init_std": cfg.model.init_std,
            "seed": cfg.train.seed,
        }
    section = drop_at_default(cfg.section("pretrain"), _DEFAULTS)
    section.pop("device")
    return {
        "facets": cfg.section("facets"),
        "pretrain": section,
        "d": cfg.model.d,
        "heads": cfg.model.heads,
        "init_std": cfg.model.init_std,
    }


def precheck(cfg: RunConfig, items: pa.Table | None) -> None:
    """Fail before heavy work: one facet per head, existing fields, a label held twice per facet."""
    if cfg.init.method == "text":
        return
    if not cfg.facets:
        raise PipelineError("pretrain needs [[facets]] in the config (one per model head)")
    if len(cfg.facets) != cfg.model.heads:
        raise PipelineError(
            f"{len(cfg.facets)} facets declared ({', '.join(f.name for f in cfg.facets)}) but "
            f"model.heads = {cfg.model.heads}: FAME pre-training needs one facet per head"
        )
    if items is not None:
        facet_labels(cfg, items)


def compute(ctx: RunContext, inputs: dict[str, Artifact]) -> StageOutput:
    from pretrain.train import initial_embeddings, knn_report, pretrain_facets, project, table_scale

    cfg = ctx.config
    ids, text = text_vectors(inputs["encode"])
    fit = ~np.isin(ids, held_out_items(inputs["ingest"]))  # what the projector may learn from
    if cfg.init.method == "text":
        return _text_projection(cfg, ids, text, fit)
    items = inputs["ingest"].table("items")
    precheck(cfg, None)
    item_ids = items["item_id"].to_numpy()
    labels_all = facet_labels(cfg, items)  # (H, n_items)
    rows = np.searchsorted(item_ids, ids)  # item ids are sorted 1..n
    labels = labels_all[:, rows]
    d_prime = cfg.model.d // cfg.model.heads
    result = pretrain_facets(text[fit], labels[:, fit], d_prime, cfg.pretrain, ctx.progress)
    if not fit.all():
        result.z = project(result.projector, text)
    init = initial_embeddings(result.z, cfg.model.init_std)
    names = [f.name for f in cfg.facets]
    spec = {"facets": len(names), "hidden": cfg.pretrain.hidden}
    spec |= {"base": cfg.pretrain.start == "pca", "normalize": True}
    files = _projector_files(
        result.projector, text.shape[1], spec, table_scale(result.z, cfg.model.init_std)
    )
    table = {"item_id": pa.array(ids, pa.int64()), "vector": to_column(init)}
    for h, name in enumerate(names):
        table[f"facet_{name}"] = to_column(result.z[:, h, :])
    report = knn_report(text, result.z, labels, names, k=cfg.pretrain.knn_k, seed=cfg.pretrain.seed)
    for row in report:
        log.info(
            "facet_report %-12s %-22s acc=%.3f",
            row["facet"],
            row["representation"],
            row["accuracy"],
        )
    report_tbl = pa.Table.from_pylist(
        [{"run_id": ctx.run_id, "dataset": cfg.data.name, **r} for r in report]
    )
    coverage = {n: int((labels[h] >= 0).sum()) for h, n in enumerate(names)}
    return StageOutput(
        tables={"item_embeddings": pa.table(table), "facet_report": report_tbl},
        files=files,
        meta={
            "facets": names,
            "labelled_items": coverage,
            "pretrain_seconds": result.seconds,
            "final_losses": result.losses[-len(names) :] if result.losses else [],
        },
    )


def _text_projection(
    cfg: RunConfig, ids: np.ndarray, text: np.ndarray, fit: np.ndarray
) -> StageOutput:
    from pretrain.train import plain_projection, project, table_scale, text_projector

    d, std = cfg.model.d, cfg.model.init_std
    meta: dict = {"method": "text"}
    try:  # the axes from the items training may see (all but under the cold-start protocol)
        phi = text_projector(text[fit], d, cfg.pretrain.hidden, cfg.train.seed)
    except ValueError as exc:  # fewer principal axes than d: the table pads, no pathway
        if not fit.all():
            raise PipelineError(str(exc)) from None
        phi, meta["no_projector"] = None, str(exc)
    files = None
    if phi is not None:
        proj = project(phi, text)[:, 0]  # (n, d)
        scale = table_scale(proj[fit], std)
        spec = {"facets": 1, "hidden": cfg.pretrain.hidden, "base": True, "normalize": False}
        files = _projector_files(phi, text.shape[1], spec, scale)
    # all items fit: the table exactly as it always was; cold-start: the held-out-free axes
    vec = plain_projection(text, d, std, cfg.train.seed) if fit.all() else proj * scale
    table = pa.table({"item_id": pa.array(ids, pa.int64()), "vector": to_column(vec)})
    return StageOutput(tables={"item_embeddings": table}, files=files, meta=meta)


def _projector_files(projector, dim: int, spec: dict, scale: float):
    """The ``files`` step writing φ's weights and what rebuilds it (``fame.item_repr.TextSpec``
    fields and the table scale s)."""
    import json

    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in projector.state_dict().items()}

    def write(tmp: Path) -> None:
        save_file(state, tmp / PROJECTOR)
        (tmp / PROJECTOR_META).write_text(json.dumps({"dim": dim, **spec, "scale": scale}))

    return write
