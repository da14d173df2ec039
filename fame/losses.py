"""Next-item losses, chosen once from the config (FAME_SPEC §4).

All take user vectors at the non-padding positions ``u`` (P, d), their targets (P,) and the item
table ``E`` (|V|+1, d); item 0 is padding and never a candidate.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from fame.config import TrainConfig


class NextItemLoss(Protocol):
    def __call__(self, u: torch.Tensor, targets: torch.Tensor, E: torch.Tensor) -> torch.Tensor: ...


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Mean full-softmax CE over all items, logits built ``chunk`` rows at a time.

    The gradient of a mean CE w.r.t. the logits is known in the forward pass
    ((softmax - onehot) / P), so each chunk's logits are turned into gradients for u and E and
    dropped at once: memory is O(chunk × |V|) whatever P is, and the cost stays three matmuls.
    """

    @staticmethod
    def forward(
        ctx, u: torch.Tensor, E: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        P = u.shape[0]
        acc = torch.promote_types(u.dtype, torch.float32)  # bf16 inputs, float32 softmax
        total = torch.zeros((), dtype=acc, device=u.device)
        grad_u = torch.empty_like(u)
        grad_E = torch.zeros(E.shape, dtype=acc, device=E.device)
        for s in range(0, P, chunk):
            uc, tc = u[s : s + chunk], targets[s : s + chunk]
            logits = (uc @ E.T).to(acc)  # (c, |V|+1)
            logits[:, 0] = -torch.inf
            target_logit = logits.gather(1, tc[:, None])
            row_max = logits.amax(dim=1, keepdim=True)
            probs = logits.sub_(row_max).exp_()  # in place: one (c, |V|+1) buffer per chunk
            norm = probs.sum(dim=1, keepdim=True)
            total += (norm.log() + row_max - target_logit).sum()
            probs = probs.div_(norm * P)  # softmax / P
            probs[torch.arange(len(tc), device=u.device), tc] -= 1.0 / P
            probs = probs.to(u.dtype)
            grad_u[s : s + chunk] = probs @ E
            grad_E.addmm_(probs.T.to(acc), uc.to(acc))
        ctx.save_for_backward(grad_u, grad_E.to(E.dtype))
        return total / P

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_u, grad_E = ctx.saved_tensors
        return grad_u * grad_out, grad_E * grad_out, None, None


class FullCE:
    """Full-softmax cross-entropy over all items (the default)."""

    MAX_ELEMENTS = 1 << 24  # one logits chunk stays under 64 MB of float32 whatever |V| is

    def __init__(self, chunk: int):
        self.chunk = chunk

    def __call__(self, u, targets, E):
        rows = max(1, min(self.chunk, self.MAX_ELEMENTS // E.shape[0]))
        if not torch.is_grad_enabled() or not (u.requires_grad or E.requires_grad):
            return chunked_ce_value(u, targets, E, rows)
        return _ChunkedSoftmaxCE.apply(u, E, targets, rows)


def chunked_ce_value(u, targets, E, chunk: int) -> torch.Tensor:
    """The same loss value without gradients (evaluation of the loss only)."""
    acc = torch.promote_types(u.dtype, torch.float32)
    total = torch.zeros((), dtype=acc, device=u.device)
    for s in range(0, u.shape[0], chunk):
        logits = (u[s : s + chunk] @ E.T).to(acc)
        logits[:, 0] = -torch.inf
        total += F.cross_entropy(logits, targets[s : s + chunk], reduction="sum")
    return total / u.shape[0]


class BCEOneNegative:
    """SASRec's loss: binary CE of the target vs one uniformly sampled other item."""

    def __init__(self, generator: torch.Generator):
        self.gen = generator

    def __call__(self, u, targets, E):
        V = E.shape[0] - 1
        neg = torch.randint(1, V, targets.shape, generator=self.gen, device=self.gen.device).to(
            targets.device
        )
        neg = neg + (neg >= targets).long()  # uniform over the items other than the target
        pos_s = (u * E[targets]).sum(-1)
        neg_s = (u * E[neg]).sum(-1)
        return (F.softplus(-pos_s) + F.softplus(neg_s)).mean()


class SampledSoftmax:
    """Softmax over the target and k uniformly sampled items shared by the batch."""

    def __init__(self, k: int, generator: torch.Generator):
        self.k, self.gen = k, generator

    def __call__(self, u, targets, E):
        V = E.shape[0] - 1
        neg = torch.randint(1, V + 1, (self.k,), generator=self.gen, device=self.gen.device).to(
            targets.device
        )
        pos_s = (u * E[targets]).sum(-1, keepdim=True)  # (P, 1)
        neg_s = u @ E[neg].T  # (P, k)
        neg_s = neg_s.masked_fill(
            neg[None, :] == targets[:, None], -torch.inf
        )  # a sampled target is no negative
        logits = torch.cat([pos_s, neg_s], dim=1).float()
        return F.cross_entropy(logits, torch.zeros_like(targets))


def make_loss(cfg: TrainConfig, generator: torch.Generator) -> NextItemLoss:
    if cfg.loss == "ce":
        return FullCE(cfg.logit_chunk)
    if cfg.loss == "bce":
        return BCEOneNegative(generator)
    return SampledSoftmax(cfg.negatives, generator)
