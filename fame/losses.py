"""Next-item losses, chosen once from the config (FAME_SPEC §4).

All take user vectors at the non-padding positions ``u`` (P, d), their targets (P,) and the item
table ``E`` (|V|+1, d); item 0 is padding and never a candidate.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fame.config import TrainConfig

MAX_LOGITS = 1 << 25  # logits held at once (128 MB of float32), whatever |V| is


class NextItemLoss(Protocol):
    def __call__(self, u: torch.Tensor, targets: torch.Tensor, E: torch.Tensor) -> torch.Tensor: ...


def _compute_dtype(device: torch.device, acc: torch.dtype) -> torch.dtype:
    """Matmul operand dtype: the autocast dtype when autocast is on (bf16 on CUDA), else ``acc``."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return acc


def _mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, acc: torch.dtype, out=None):
    """a @ b with operands in ``dtype`` and the result in ``acc`` (written into ``out`` if given)."""
    if dtype == acc:
        return torch.mm(a.to(acc), b.to(acc), out=out)
    r = torch.mm(a.to(dtype), b.to(dtype)).to(acc)
    return r if out is None else out.copy_(r)


def chunked_ce(
    u: torch.Tensor,
    E: torch.Tensor,
    targets: torch.Tensor,
    buf: torch.Tensor,
    grads: bool,
    excluded: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Mean full-softmax CE over items 1..|V| and, if ``grads``, its gradients for u and E.
    ``excluded``: item ids that are never candidates, besides padding (held-out items).

    The logits are built ``len(buf)`` rows at a time in the workspace ``buf`` (c, |V|+1) (float32)
    and never leave it: the gradient of a mean CE w.r.t. the logits is known in the forward pass
    ((softmax - onehot) / P), so each chunk is turned into gradients at once. Memory is one
    workspace whatever P is; the cost is three (c × d)·(d × |V|)-sized products per chunk.
    """
    P, chunk, acc = len(targets), buf.shape[0], buf.dtype
    dtype = _compute_dtype(u.device, acc)
    u, E = u.detach(), E.detach()
    with torch.autocast(u.device.type, enabled=False):  # dtypes are chosen explicitly below
        Et = E.T.contiguous()  # (d, |V|+1): the fastest layout for the logits product
        loss = torch.zeros((), dtype=acc, device=u.device)
        grad_u = torch.empty(u.shape, dtype=acc, device=u.device) if grads else None
        grad_E = torch.zeros(E.shape, dtype=acc, device=E.device) if grads else None
        for s in range(0, P, chunk):
            uc, tc = u[s : s + chunk], targets[s : s + chunk]
            logits = _mm(uc, Et, dtype, acc, out=buf[: len(tc)])  # (c, |V|+1)
            logits[:, 0] = -torch.inf  # padding is never a candidate
            if excluded is not None:
                logits[:, excluded] = -torch.inf
            target = logits.gather(1, tc[:, None])
            top = logits.amax(dim=1, keepdim=True)
            probs = logits.sub_(top).exp_()  # unnormalised softmax, in place
            z = probs.sum(dim=1, keepdim=True)  # (c, 1)
            loss += (z.log() + top - target).sum()
            if grads:
                # the 1/z row scale and the one-hot part go to the small (c, d) and (|V|+1, d)
                # factors instead of two more passes over the (c, |V|+1) probabilities
                grad_u[s : s + chunk] = _mm(probs, E, dtype, acc).div_(z).sub_(E[tc])
                grad_E += _mm(probs.T, uc / z, dtype, acc)
                grad_E.index_add_(0, tc, uc.to(acc), alpha=-1.0)
    if grads:
        grad_u, grad_E = grad_u.div_(P).to(u.dtype), grad_E.div_(P).to(E.dtype)
    return loss / P, grad_u, grad_E


class _FullCEFunction(torch.autograd.Function):
    """Autograd wrapper: the gradients computed with the loss are returned by ``backward``."""

    @staticmethod
    def forward(ctx, u, E, targets, buf, excluded):
        loss, grad_u, grad_E = chunked_ce(u, E, targets, buf, True, excluded)
        ctx.save_for_backward(grad_u, grad_E)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_u, grad_E = ctx.saved_tensors
        return grad_u * grad_out, grad_E * grad_out, None, None, None


class FullCE:
    """Full-softmax cross-entropy over all items (the default), in chunks of positions."""

    MAX_LOGITS = MAX_LOGITS

    def __init__(self, chunk: int, excluded: np.ndarray | None = None):
        """``excluded``: item ids never scored as candidates (the cold-start protocol's)."""
        self.chunk = chunk
        self.buf: torch.Tensor | None = None
        self.excluded = None
        if excluded is not None and len(excluded):
            self.excluded = torch.as_tensor(np.asarray(excluded), dtype=torch.long)

    def workspace(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """A (rows, cols) buffer kept between calls: a fresh allocation this large is page-faulted
        in on every chunk, which costs as much as a logits product on a CPU. float32 at least."""
        n, dtype = rows * cols, torch.promote_types(like.dtype, torch.float32)
        buf = self.buf
        if buf is None or buf.numel() < n or buf.device != like.device or buf.dtype != dtype:
            buf = self.buf = torch.empty(n, dtype=dtype, device=like.device)
        return buf[:n].view(rows, cols)

    def __call__(self, u, targets, E):
        rows = max(1, min(self.chunk, self.MAX_LOGITS // E.shape[0], len(targets)))
        buf = self.workspace(rows, E.shape[0], E)
        excluded = None if self.excluded is None else self.excluded.to(E.device)
        if torch.is_grad_enabled() and (u.requires_grad or E.requires_grad):
            return _FullCEFunction.apply(u, E, targets, buf, excluded)
        return chunked_ce(u, E, targets, buf, False, excluded)[0]


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
    """Softmax over the target and k items shared by the batch, drawn i.i.d. from a proposal q
    (FAME_SPEC §4; the large-catalogue objective, "scalable cross-entropy" / gSASRec lineage).

    ``uniform``: q = 1/|V|. ``popularity``: q_j ∝ count_j^power over the train items.
    ``in_batch``: the batch's own targets, drawn uniformly over positions (q is then their
    frequency in the batch, estimated by the train counts). With a non-uniform q, every logit is
    corrected by -log(k·q_j) (logQ correction: Bengio & Senécal; Yi et al. 2019), without which
    popular items are over-penalised and the model learns the softmax of s_j - log q_j instead
    of s_j. Under uniform q the correction is one constant shift of all logits: no change, and
    it is skipped. A sampled copy of a position's target is no negative (accidental hit).
    """

    def __init__(
        self,
        k: int,
        generator: torch.Generator,
        sampler: str = "uniform",
        counts: np.ndarray | None = None,
        power: float = 1.0,
        logq: bool = True,
    ):
        self.k, self.gen, self.sampler, self.logq = k, generator, sampler, logq
        self.q: torch.Tensor | None = None  # (|V|+1,) proposal probabilities, q_0 = 0
        if sampler != "uniform":
            if counts is None:
                raise ValueError(f"sampler {sampler!r} needs the train item counts")
            w = torch.as_tensor(counts, dtype=torch.float64).clamp_min(0) ** power
            w[0] = 0.0
            self.q = (w / w.sum()).to(torch.float32)
            self.cdf = torch.cumsum(w / w.sum(), 0)  # float64: inverse-CDF draws of q

    def negatives(self, targets: torch.Tensor, V: int) -> torch.Tensor:
        """(k,) negative item ids in 1..V, drawn from the proposal."""
        dev = self.gen.device
        if self.sampler == "uniform":
            neg = torch.randint(1, V + 1, (self.k,), generator=self.gen, device=dev)
        elif self.sampler == "popularity":
            # inverse CDF: k·log|V| work (torch.multinomial took 0.25 s for 1024 of 27k items)
            r = torch.rand(self.k, generator=self.gen, device=dev, dtype=torch.float64)
            cdf = self.cdf.to(dev)
            neg = torch.searchsorted(cdf, r * cdf[-1], right=True).clamp_(1, len(cdf) - 1)
        else:  # in_batch: targets of uniformly drawn positions
            pos = torch.randint(0, len(targets), (self.k,), generator=self.gen, device=dev)
            return targets[pos.to(targets.device)]
        return neg.to(targets.device)

    def __call__(self, u, targets, E):
        neg = self.negatives(targets, E.shape[0] - 1)  # (k,)
        bias = None  # (|V|+1,) log(k·q_j), subtracted from every logit
        if self.q is not None and self.logq:
            bias = (self.q.to(E.device) * self.k).log()
        chunk = max(1, SAMPLED_LOGITS // self.k)
        if torch.is_grad_enabled() and (u.requires_grad or E.requires_grad):
            return _SampledFunction.apply(u, E, targets, neg, bias, chunk)
        return chunked_sampled(u, E, targets, neg, bias, chunk, grads=False)[0]


SAMPLED_LOGITS = 1 << 20  # (positions x negatives) logits per chunk: 4 MB, kept in cache


def chunked_sampled(
    u: torch.Tensor,
    E: torch.Tensor,
    targets: torch.Tensor,
    neg: torch.Tensor,
    bias: torch.Tensor | None,
    chunk: int,
    grads: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Mean sampled-softmax CE over [target, neg_1..neg_k] (logits s - bias, a negative equal
    to the target masked) and, if ``grads``, its gradients for u and E, ``chunk`` positions at
    a time: each (c, k) block is exponentiated, summed and turned into gradients while it is in
    cache, instead of a dozen passes over a (P, k) tensor through autograd (3x faster here).

    With p_j = softmax weights and a = p_target - 1: dL/du = Σ_j p_j e_j + a e_target,
    dL/de_j += p_j u, dL/de_target += a u (all over P).
    """
    P, acc = len(targets), torch.float32
    dtype = _compute_dtype(u.device, acc)
    u, E = u.detach(), E.detach()
    with torch.autocast(u.device.type, enabled=False):
        En = E[neg].to(acc)  # (k, d)
        Ent = En.T.contiguous()  # (d, k)
        bias_neg = bias[neg].to(acc) if bias is not None else None
        loss = torch.zeros((), dtype=acc, device=u.device)
        grad_u = torch.empty(u.shape, dtype=acc, device=u.device) if grads else None
        grad_E = torch.zeros(E.shape, dtype=acc, device=E.device) if grads else None
        grad_En = torch.zeros(En.shape, dtype=acc, device=E.device) if grads else None
        for s in range(0, P, chunk):
            uc, tc = u[s : s + chunk].to(acc), targets[s : s + chunk]
            et = E[tc].to(acc)  # (c, d)
            pos = (uc * et).sum(1)  # (c,)
            logits = _mm(uc, Ent, dtype, acc)  # (c, k)
            if bias_neg is not None:
                pos = pos - bias[tc].to(acc)
                logits.sub_(bias_neg)
            logits.masked_fill_(neg[None, :] == tc[:, None], -torch.inf)  # accidental hits
            top = torch.maximum(logits.amax(1), pos)  # (c,)
            probs = logits.sub_(top[:, None]).exp_()  # unnormalised, in place
            p_pos = (pos - top).exp()
            z = probs.sum(1) + p_pos  # (c,)
            loss += (z.log() + top - pos).sum()
            if grads:
                probs.div_(z[:, None])
                a = (p_pos / z - 1)[:, None]  # (c, 1)
                grad_u[s : s + chunk] = _mm(probs, En, dtype, acc).add_(a * et)
                grad_En += _mm(probs.T, uc, dtype, acc)
                grad_E.index_add_(0, tc, a * uc)
    if grads:
        grad_E.index_add_(0, neg, grad_En)
        grad_u, grad_E = grad_u.div_(P).to(u.dtype), grad_E.div_(P).to(E.dtype)
    return loss / P, grad_u, grad_E


class _SampledFunction(torch.autograd.Function):
    """Autograd wrapper of ``chunked_sampled`` (gradients computed with the loss)."""

    @staticmethod
    def forward(ctx, u, E, targets, neg, bias, chunk):
        loss, grad_u, grad_E = chunked_sampled(u, E, targets, neg, bias, chunk, grads=True)
        ctx.save_for_backward(grad_u, grad_E)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_u, grad_E = ctx.saved_tensors
        return grad_u * grad_out, grad_E * grad_out, None, None, None, None


def make_loss(
    cfg: TrainConfig,
    generator: torch.Generator,
    counts: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
) -> NextItemLoss:
    """The configured loss; ``counts`` (|V|+1,) are the train item counts a popularity or
    in-batch proposal needs for its logQ correction; ``held_out`` items are no candidates
    (full softmax only)."""
    if cfg.loss == "ce":
        return FullCE(cfg.logit_chunk, held_out)
    if held_out is not None and len(held_out):
        raise ValueError(
            f"the cold-start protocol (data.cold_items) needs train.loss = 'ce'; "
            f"train.loss = {cfg.loss!r} would sample held-out items as negatives"
        )
    if cfg.loss == "bce":
        return BCEOneNegative(generator)
    return SampledSoftmax(
        cfg.negatives, generator, cfg.sampler, counts, cfg.sampler_power, cfg.logq
    )
