"""Typed model and training configs (pydantic dataclasses: validated when loaded from TOML)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

# unknown fields are errors, and so is NaN or ±inf in any float field
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def _not_bool(value: object) -> object:
    if isinstance(value, bool):  # pydantic's lax mode reads `d = true` as d = 1
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


# numbers that refuse booleans (finiteness comes from the model's allow_inf_nan=False)
Int = Annotated[int, BeforeValidator(_not_bool)]
PosInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=1)]
NonNegInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]
Float = Annotated[float, BeforeValidator(_not_bool)]
PosFloat = Annotated[float, BeforeValidator(_not_bool), Field(gt=0)]
NonNegFloat = Annotated[float, BeforeValidator(_not_bool), Field(ge=0)]
# ModelConfig fields read only by FAME's last block and prediction: SASRec ignores them
FAME_ONLY_FIELDS = frozenset({"experts", "gate", "facet_scale", "residual", "router_top_k"})
# ModelConfig fields read only by the text pathway (item_repr = "text")
TEXT_ONLY_FIELDS = frozenset(
    {"text_mode", "text_anchor", "null_dims", "id_dropout", "id_fallback", "id_ridge"}
)
# TrainConfig fields that change speed or reporting, not the trained weights: a resume state
# stays valid across them (a run killed on one device may continue on another)
# sequences come in blocks of users (ingest writes one `sequences` row group per block);
# training and evaluation hold a window of whole blocks at a time (fame.data)
BLOCK_USERS = 8192
WINDOW_USERS = 65536  # the default window: 8 blocks
SPEED_FIELDS = frozenset({"device", "logit_chunk", "amp"})


@dataclass(config=STRICT)
class ModelConfig:
    """FAME_SPEC §1-3. ``sasrec`` is the same backbone with a standard last block."""

    name: Literal["fame", "sasrec"] = "fame"
    d: PosInt = 64  # hidden size
    heads: PosInt = 4  # H
    experts: PosInt = 4  # N experts per head (1 = FAME without MoE)
    blocks: PosInt = 2  # B: B-1 standard blocks + the last block
    max_len: PosInt = 50  # L
    dropout: Float = 0.5
    gate: bool = True  # False: FAME without gate (mean of heads)
    init_std: PosFloat = 0.02
    # W_f^h at init: H times the selector of slice h ("heads"), so that u = Σ_h g_h W_f^h F^h
    # starts at the scale of SASRec's x_t under a uniform gate (with the plain selector, "unit",
    # u starts H times smaller and FAME needed twice the epochs on Beauty: RESULTS.md)
    facet_scale: Literal["unit", "heads"] = "heads"
    # residual of head h's attention sub-layer: X's h-th slice X^{[h]} [choice], or X W_R^h
    # ("proj": a learned d -> d' map per head, starting as the selector of slice h)
    residual: Literal["slice", "proj"] = "slice"
    # router: dense softmax over all N experts [choice] (0), or over the k largest logits only
    router_top_k: NonNegInt = 0
    # the item representation (fame.item_repr): "table", a free row per item, initialised by
    # init.method and then trained freely [default]; "text", E[v] = s·φ(t_v) + an ID part, φ the
    # pretrain stage's projector over the item's frozen text vector (needs init.method = text
    # or facet_pretrain), so the text stays and an item unseen in training has an embedding
    item_repr: Literal["table", "text"] = "table"
    # text only: "frozen" φ + a learned ID residual; "tuned" φ trained too, pulled toward its
    # pre-trained weights by text_anchor · Σ‖θ - θ_0‖²; "nullspace" frozen φ, the ID part
    # learned only in the null_dims weakest directions of the semantic table (AlphaFuse)
    text_mode: Literal["frozen", "tuned", "nullspace"] = "frozen"
    text_anchor: NonNegFloat = 0.0
    null_dims: PosInt = 16
    # text only: in training, each item's ID part is dropped with this probability (per step,
    # items with text only), so the model also learns to score an item from its text alone: the
    # state of an item added after training (DropoutNet's idea, for cold-start items)
    id_dropout: Float = 0.0
    # text only: the ID part of an item that has none (dropped this step, held out of training,
    # added after it): "zero", nothing [default]; "learned", one shared vector e_∅ trained
    # through ID dropout, so that text-only items are scored on the scale of warm ones (their
    # ID parts carry what all warm items share, e.g. popularity); "regress", the ID part its text
    # predicts, by a ridge regression t -> ID part fitted on the warm items whenever the model
    # enters evaluation (training unchanged; dropped ID parts stay zero)
    id_fallback: Literal["zero", "learned", "regress"] = "zero"
    # regress only: the ridge λ, relative to the mean eigenvalue of the centred text Gram matrix
    id_ridge: PosFloat = 0.1

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d % self.heads:
            raise ValueError(f"model.d = {self.d} must be divisible by model.heads = {self.heads}")
        if self.router_top_k > self.experts:
            raise ValueError(
                f"model.router_top_k = {self.router_top_k} must be in [0, experts = {self.experts}]"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout = {self.dropout} must be in [0, 1)")
        if not 0 <= self.id_dropout < 1:
            raise ValueError(f"model.id_dropout = {self.id_dropout} must be in [0, 1)")
        if self.id_fallback == "learned" and not self.id_dropout:
            raise ValueError(
                "model.id_fallback = 'learned' needs model.id_dropout > 0: e_∅ is trained only "
                "on the items whose ID part a step drops"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.d // self.heads


@dataclass(config=STRICT)
class TrainConfig:
    """FAME_SPEC §4-5: objective, optimiser, early stopping and evaluation settings."""

    loss: Literal["ce", "bce", "sampled_softmax"] = "ce"
    negatives: PosInt = 100  # sampled_softmax only; bce uses one
    # sampled_softmax's proposal: "uniform" over items, "popularity" (train counts^sampler_power)
    # or "in_batch" (the batch's own targets); the last two are logQ-corrected unless logq=false
    sampler: Literal["uniform", "popularity", "in_batch"] = "uniform"
    sampler_power: NonNegFloat = 1.0  # popularity only: q_j ∝ count_j^power (0.75: word2vec's)
    logq: bool = True  # subtract log(k·q_j) from every sampled logit (no effect under uniform)
    lr: PosFloat = 1e-3
    weight_decay: NonNegFloat = 0.0
    batch_size: PosInt = 256
    epochs: PosInt = 200
    patience: PosInt = 10  # epochs without a better valid NDCG@10 before stopping
    seed: Int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    logit_chunk: PosInt = (
        4096  # positions per logits chunk (and at most 2^25 logits): bounds memory
    )
    eval_every: PosInt = 1  # epochs between two valid evaluations (early stopping)
    # data-parallel processes under torchrun (gloo on CPU, nccl on CUDA), each training on a
    # disjoint shard of every batch; 1 = this process. Results depend on it (dropout and
    # negative sampling draw per process), so it is part of the train key when > 1.
    nproc: PosInt = 1
    # users whose sequences are held at once (whole blocks of 8192): data with more users is
    # block-shuffled (fame.data.train_batches), which bounds memory; fewer are shuffled whole
    shuffle_window: PosInt = WINDOW_USERS

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.loss != "sampled_softmax" and self.sampler != "uniform":
            raise ValueError(
                f"train.sampler = {self.sampler!r} needs train.loss = 'sampled_softmax' "
                f"(got {self.loss!r})"
            )
        return self


Protocol = Literal["exclude_history", "keep_history"]
# in order of what they remove from the candidates, so one scoring pass ranks under all of them
PROTOCOL_ORDER: tuple[Protocol, ...] = ("keep_history", "exclude_history")
ColdScores = Literal["raw", "matched"]


@dataclass(config=STRICT)
class EvalConfig:
    """FAME_SPEC §5, ``[evaluate]``: the one evaluation spec that early stopping, the evaluate
    stage, ``recommend`` and the reports read.

    The first protocol is the primary one: early stopping selects on its valid NDCG@10, and
    ``recommend`` removes the history from the candidates exactly when it is ``exclude_history``.
    """

    ks: tuple[PosInt, ...] = (5, 10, 20)  # cut-offs of HR@k and NDCG@k
    protocols: tuple[Protocol, ...] = ("exclude_history", "keep_history")
    topk: PosInt = 20  # length of the top-k list stored per user in `rankings`
    batch_size: PosInt = 1024  # users per scoring chunk (speed and memory only)
    # the scores of items without a trained ID part (held out of training by the cold-start
    # protocol, or added to an opened run) in the evaluate stage and in ``recommend`` and the
    # service: "raw" as the model gives them; "matched" moved, per user, to the mean and spread
    # of the warm items' scores (``fame.evaluate.match_cold_scores``). Early stopping always
    # ranks raw scores, so this never changes what is trained.
    cold_scores: ColdScores = "raw"

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if 10 not in self.ks:
            raise ValueError("evaluate.ks must include 10 (early stopping uses NDCG@10)")
        if not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(
                f"evaluate.protocols = {list(self.protocols)}: give each protocol at most once, "
                "at least one"
            )
        return self

    @property
    def primary(self) -> Protocol:
        return self.protocols[0]


TRAIN_KEY_ONLY_IF_SET = {
    "nproc": 1,
    "sampler": "uniform",
    "sampler_power": 1.0,
    "logq": True,
    "shuffle_window": WINDOW_USERS,
}  # TrainConfig fields added later: in keys only when set


def selection_fields(spec: EvalConfig) -> dict:
    """The evaluation settings that shape a training run (early stopping's protocol, the ks of
    its logged valid metrics) under the names ``TrainConfig`` gave them before ``[evaluate]``
    held them: train keys and resume states written since then stay valid."""
    return {"exclude_history": spec.primary == "exclude_history", "ks": list(spec.ks)}
