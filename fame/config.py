"""Typed model and training configs (pydantic dataclasses: validated when loaded from TOML)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, model_validator
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid")
# ModelConfig fields read only by FAME's last block and prediction: SASRec ignores them
FAME_ONLY_FIELDS = frozenset({"experts", "gate", "facet_scale", "residual", "router_top_k"})


@dataclass(config=STRICT)
class ModelConfig:
    """FAME_SPEC §1-3. ``sasrec`` is the same backbone with a standard last block."""

    name: Literal["fame", "sasrec"] = "fame"
    d: int = 64  # hidden size
    heads: int = 4  # H
    experts: int = 4  # N experts per head (1 = FAME without MoE)
    blocks: int = 2  # B: B-1 standard blocks + the last block
    max_len: int = 50  # L
    dropout: float = 0.5
    gate: bool = True  # False: FAME without gate (mean of heads)
    init_std: float = 0.02
    # W_f^h at init: H times the selector of slice h ("heads"), so that u = Σ_h g_h W_f^h F^h
    # starts at the scale of SASRec's x_t under a uniform gate (with the plain selector, "unit",
    # u starts H times smaller and FAME needed twice the epochs on Beauty: RESULTS.md)
    facet_scale: Literal["unit", "heads"] = "heads"
    # residual of head h's attention sub-layer: X's h-th slice X^{[h]} [choice], or X W_R^h
    # ("proj": a learned d -> d' map per head, starting as the selector of slice h)
    residual: Literal["slice", "proj"] = "slice"
    # router: dense softmax over all N experts [choice] (0), or over the k largest logits only
    router_top_k: int = 0

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d % self.heads:
            raise ValueError(f"model.d = {self.d} must be divisible by model.heads = {self.heads}")
        if min(self.d, self.heads, self.experts, self.blocks, self.max_len) < 1:
            raise ValueError("model.d, heads, experts, blocks and max_len must be >= 1")
        if not 0 <= self.router_top_k <= self.experts:
            raise ValueError(
                f"model.router_top_k = {self.router_top_k} must be in [0, experts = {self.experts}]"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout = {self.dropout} must be in [0, 1)")
        return self

    @property
    def head_dim(self) -> int:
        return self.d // self.heads


@dataclass(config=STRICT)
class TrainConfig:
    """FAME_SPEC §4-5: objective, optimiser, early stopping and evaluation settings."""

    loss: Literal["ce", "bce", "sampled_softmax"] = "ce"
    negatives: int = 100  # sampled_softmax only; bce uses one
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 200
    patience: int = 10
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    logit_chunk: int = 4096  # positions per logits chunk (and at most 2^25 logits): bounds memory
    eval_batch_size: int = 1024  # users per evaluation chunk
    exclude_history: bool = True
    eval_every: int = 1
    ks: tuple[int, ...] = (5, 10, 20)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if (
            min(
                self.batch_size,
                self.epochs,
                self.logit_chunk,
                self.eval_batch_size,
                self.eval_every,
            )
            < 1
        ):
            raise ValueError("train sizes (batch_size, epochs, logit_chunk, ...) must be >= 1")
        if 10 not in self.ks:
            raise ValueError("train.ks must include 10 (early stopping uses NDCG@10)")
        return self
