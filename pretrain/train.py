"""Text-enhanced facet-aware pre-training (FAME_SPEC §6): per-facet projections of frozen text
vectors shaped by supervised contrastive learning, alternating over facets; the kNN check of
disentanglement; and the initial item table built from the result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pretrain.config import PretrainConfig
from pretrain.encoder import resolve_device
from pretrain.supcon import BalancedSampler, supcon_loss

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "FacetProjector",
    "initial_embeddings",
    "knn_report",
    "plain_projection",
    "pretrain_facets",
]


class FacetProjector(nn.Module):
    """φ_k for all facets at once: D -> hidden -> d' (GELU), weights stacked on a facet axis."""

    def __init__(self, facets: int, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(facets, dim_in, hidden))
        self.b1 = nn.Parameter(torch.zeros(facets, hidden))
        self.w2 = nn.Parameter(torch.empty(facets, hidden, dim_out))
        self.b2 = nn.Parameter(torch.zeros(facets, dim_out))
        for w in (self.w1, self.w2):
            nn.init.kaiming_uniform_(w.view(-1, w.shape[-1]).T, a=5**0.5)

    def project(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """z = normalize(φ_k(x)): (n, d')."""
        h = F.gelu(x @ self.w1[k] + self.b1[k])
        return F.normalize(h @ self.w2[k] + self.b2[k], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All facets: (n, H, d')."""
        h = F.gelu(torch.einsum("nd,kdh->nkh", x, self.w1) + self.b1)
        return F.normalize(torch.einsum("nkh,kho->nko", h, self.w2) + self.b2, dim=-1)


@dataclass
class PretrainResult:
    z: np.ndarray  # (n, H, d') unit-norm per slice
    losses: list[tuple[int, float]] = field(default_factory=list)  # (facet, loss) per step
    seconds: float = 0.0


def pretrain_facets(
    text_emb: np.ndarray,
    labels: np.ndarray,
    d_prime: int,
    cfg: PretrainConfig,
    progress: bool = True,
) -> PretrainResult:
    """Train one projection per facet with SupCon on label-balanced batches.

    ``alternating``: step s trains facet s mod H only; ``joint``: every step sums all facets.
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = torch.device(resolve_device(cfg.device))
    H = labels.shape[0]
    x = torch.tensor(np.asarray(text_emb, dtype=np.float32), device=device)
    y = torch.as_tensor(labels, device=device)
    model = FacetProjector(H, x.shape[1], cfg.hidden, d_prime).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    samplers = [
        BalancedSampler(labels[k], cfg.labels_per_batch, cfg.items_per_label, cfg.seed + k)
        for k in range(H)
    ]
    losses: list[tuple[int, float]] = []
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress, dynamic_ncols=True)
    for step in bar:
        facets = [step % H] if cfg.schedule == "alternating" else list(range(H))
        loss = torch.zeros((), device=device)
        for k in facets:
            idx = torch.as_tensor(samplers[k].sample(), device=device)
            loss = loss + supcon_loss(model.project(x[idx], k), y[k, idx], cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append((facets[0] if len(facets) == 1 else -1, float(loss.detach())))
        if step % 50 == 0:
            bar.set_postfix(facet=facets[0], loss=f"{losses[-1][1]:.3f}")
    with torch.no_grad():
        z = torch.cat([model(x[s : s + 4096]) for s in range(0, len(x), 4096)]).cpu().numpy()
    return PretrainResult(z=z, losses=losses, seconds=time.perf_counter() - start)


def _scale(x: np.ndarray, std: float) -> np.ndarray:
    return (x * (std / max(float(x.std()), 1e-12))).astype(np.float32)


def initial_embeddings(z: np.ndarray, std: float) -> np.ndarray:
    """E rows = [z^1 ‖ … ‖ z^H] scaled to the default init's standard deviation (§6.7)."""
    return _scale(z.reshape(z.shape[0], -1), std)


def plain_projection(text_emb: np.ndarray, d: int, std: float, seed: int = 0) -> np.ndarray:
    """The ``init=text`` ablation: PCA of the text vectors to d dims, no facet supervision."""
    x = text_emb.astype(np.float64) - text_emb.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[:d].T
    if proj.shape[1] < d:  # fewer items or dims than d: pad with seeded noise
        rng = np.random.default_rng(seed)
        proj = np.concatenate([proj, rng.normal(size=(len(x), d - proj.shape[1])) * proj.std()], 1)
    return _scale(proj, std)


def _knn_accuracy(rep: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out cosine kNN majority vote (ties go to the nearer neighbours)."""
    r = torch.as_tensor(rep, dtype=torch.float32)
    r = F.normalize(r, dim=-1)
    y = torch.as_tensor(labels)
    n_labels = int(y.max()) + 1
    k = min(k, len(r) - 1)
    weights = 1.0 + 1e-3 * torch.arange(k, 0, -1, dtype=torch.float32) / k  # nearer = tiny bonus
    correct = 0
    for s in range(0, len(r), 2048):
        sim = r[s : s + 2048] @ r.T
        sim[
            torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])
        ] = -torch.inf  # leave one out
        nb = sim.topk(k, dim=1).indices
        votes = torch.zeros(sim.shape[0], n_labels).scatter_add_(
            1, y[nb], weights.expand(sim.shape[0], k)
        )
        correct += int((votes.argmax(1) == y[s : s + 2048]).sum())
    return correct / len(r)


def knn_report(
    text_emb: np.ndarray,
    z: np.ndarray,
    labels: np.ndarray,
    facet_names: list[str],
    k: int = 10,
    seed: int = 0,
) -> list[dict]:
    """Per facet: kNN label accuracy with each slice, the raw text vector and a random projection."""
    rng = np.random.default_rng(seed)
    d_prime = z.shape[2]
    random_rep = text_emb @ rng.normal(size=(text_emb.shape[1], d_prime))
    rows = []
    for f, name in enumerate(facet_names):
        idx = np.flatnonzero(labels[f] >= 0)
        y = labels[f, idx]
        reps = {f"slice:{n}": z[idx, j] for j, n in enumerate(facet_names)}
        reps["text"] = text_emb[idx]
        reps["random"] = random_rep[idx]
        for rep_name, rep in reps.items():
            rows.append(
                {
                    "facet": name,
                    "representation": rep_name,
                    "accuracy": _knn_accuracy(rep, y, k),
                    "n_items": int(len(idx)),
                }
            )
    return rows
