"""Text-enhanced facet-aware pre-training (FAME_SPEC §6): per-facet projections of frozen text
vectors shaped by supervised contrastive learning, alternating over facets; the kNN check of
disentanglement; and the initial item table built from the result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fame.device import resolve_device
from fame.projector import FacetProjector
from pretrain.config import PretrainConfig
from pretrain.sampler import BalancedSampler
from pretrain.supcon import supcon_loss

__all__ = [
    "FacetProjector",
    "PretrainConfig",
    "PretrainResult",
    "head_alignment",
    "initial_embeddings",
    "knn_report",
    "pca_axes",
    "plain_projection",
    "pretrain_facets",
    "project",
    "table_scale",
    "text_projector",
]


@dataclass
class PretrainResult:
    z: np.ndarray  # (n, H, d') float32, unit norm per slice
    # one (facet, loss) per facet trained, in step order: one per step when alternating,
    # H per step (facet by facet) when joint
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    projector: FacetProjector | None = None  # φ_1..φ_H as trained (on the CPU, eval mode)


@contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """A training step is a few small matmuls (128 × D × hidden): intra-op threads cannot pay
    for their synchronisation, and on a busy machine they spin-wait (5x slower measured on 2
    loaded cores). The caller's thread count is restored afterwards."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrain_facets(
    text_emb: np.ndarray,
    labels: np.ndarray,
    d_prime: int,
    cfg: PretrainConfig,
    progress: bool = True,
) -> PretrainResult:
    """Train φ_1..φ_H with SupCon on label-balanced batches; return every item's z (n, H, d').

    ``alternating`` [default]: step s trains facet s mod H only. ``joint``: every step sums the
    losses of all facets, each on its own batch. Deterministic on CPU for a seed.
    """
    start = time.perf_counter()
    text_emb = np.array(text_emb, dtype=np.float32)  # a writable copy (Arrow buffers are not)
    labels = np.array(labels, dtype=np.int64)
    if text_emb.ndim != 2 or labels.ndim != 2 or labels.shape[1] != text_emb.shape[0]:
        raise ValueError(
            f"text_emb must be (n, D) and labels (H, n); got {text_emb.shape} and {labels.shape}"
        )
    if d_prime < 1:
        raise ValueError(f"d_prime must be >= 1, got {d_prime}")
    H = labels.shape[0]
    samplers = []
    for k in range(H):
        try:
            samplers.append(
                BalancedSampler(labels[k], cfg.labels_per_batch, cfg.items_per_label, cfg.seed + k)
            )
        except ValueError as exc:
            raise ValueError(f"facet {k}: {exc}") from exc
    device = resolve_device(cfg.device)
    x = torch.from_numpy(text_emb).to(device)
    y = torch.from_numpy(labels).to(device)
    base = None
    if cfg.start == "pca":
        if H * d_prime > min(text_emb.shape[1], len(text_emb) - 1):
            raise ValueError(
                f"pretrain.start = 'pca' needs H·d' = {H * d_prime} principal axes; the text "
                f"vectors have {text_emb.shape[1]} dims over {len(text_emb)} items"
            )
        mean, axes = pca_axes(text_emb, H * d_prime)  # (D,), (D, H·d')
        axes = axes.reshape(axes.shape[0], H, d_prime).transpose(1, 0, 2)  # (H, D, d')
        base = (
            torch.from_numpy(mean).float(),
            torch.from_numpy(np.ascontiguousarray(axes)).float(),
        )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = FacetProjector(H, x.shape[1], cfg.hidden, d_prime, base=base).to(device)
        decoder = torch.nn.Linear(H * d_prime, x.shape[1]).to(device) if cfg.keep_text else None
    params = [*model.parameters(), *(decoder.parameters() if decoder is not None else [])]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[tuple[int, float]] = []
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress, dynamic_ncols=True)
    with _one_thread_on_cpu(device):
        for step in bar:
            facets = [step % H] if cfg.schedule == "alternating" else list(range(H))
            parts = []
            keep = []
            for k in facets:
                idx = torch.from_numpy(samplers[k].sample()).to(device)
                z_k = model.project(x[idx], k)
                parts.append(supcon_loss(z_k, y[k, idx], cfg.temperature))
                if decoder is not None:
                    keep.append(_keep_text_loss(model, decoder, x[idx], z_k, k))
            opt.zero_grad(set_to_none=True)  # facets not trained this step get no update at all
            per_facet = torch.stack(parts)
            total = per_facet.sum()
            if keep:
                total = total + cfg.keep_text * torch.stack(keep).sum()
            total.backward()
            opt.step()
            losses.extend(zip(facets, per_facet.detach().cpu().tolist(), strict=True))
            if step % 50 == 0 or step == cfg.steps - 1:
                bar.set_postfix(
                    facet=facets[0] if len(facets) == 1 else "all", loss=f"{losses[-1][1]:.3f}"
                )
    model.eval()
    z = project(model, text_emb)
    return PretrainResult(
        z=z,
        losses=losses,
        seconds=time.perf_counter() - start,
        projector=model.cpu(),
    )


@torch.no_grad()
def project(projector: FacetProjector, text_emb: np.ndarray) -> np.ndarray:
    """φ(t) of every row: (n, D) -> (n, H, d') float32, 4096 rows at a time, on the
    projector's device."""
    device = next(projector.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(text_emb, dtype=np.float32)).to(device)
    z = torch.cat([projector(x[s : s + 4096]) for s in range(0, len(x), 4096)])
    return z.float().cpu().numpy()


def table_scale(z: np.ndarray, std: float) -> float:
    """The factor that puts a table of rows ``z`` (n, ...) at the default init's std (§6.7)."""
    return float(std / max(float(np.asarray(z, dtype=np.float64).std()), 1e-12))


def text_projector(text_emb: np.ndarray, d: int, hidden: int, seed: int = 0) -> FacetProjector:
    """The ``init = text`` projection as a projector: one d-dim "facet", φ(t) = (t - μ) A over
    the top d principal axes (``pca_axes``) plus an MLP residual that starts at zero, not
    normalised, so a text pathway can keep (or tune) what ``plain_projection`` gives."""
    r = min(d, text_emb.shape[1], max(len(text_emb) - 1, 1))
    if r < d:
        raise ValueError(
            f"a text pathway over the PCA projection needs d = {d} principal axes; the text "
            f"vectors have {text_emb.shape[1]} dims over {len(text_emb)} items"
        )
    mean, axes = pca_axes(text_emb, d)
    base = (torch.from_numpy(mean).float(), torch.from_numpy(np.ascontiguousarray(axes)).float())
    with torch.random.fork_rng(devices=[]):  # the MLP's seeded start (it only moves if tuned)
        torch.manual_seed(seed)
        return FacetProjector(1, text_emb.shape[1], hidden, d, (base[0], base[1][None]), False)


def _keep_text_loss(
    model: FacetProjector, decoder: torch.nn.Linear, x: torch.Tensor, z_k: torch.Tensor, k: int
) -> torch.Tensor:
    """1 - cos(decoder([z^1 ‖ … ‖ z^H]), t_v) over the batch, only slice k (the facet this step
    trains) carrying gradient, so other facets' φ_j stay untouched at this step."""
    with torch.no_grad():
        z = model(x)  # (B, H, d')
    z = torch.cat([z[:, :k], z_k[:, None], z[:, k + 1 :]], dim=1)
    return (1 - F.cosine_similarity(decoder(z.flatten(1)), x, dim=-1)).mean()


def _scale(x: np.ndarray, std: float) -> np.ndarray:
    return (x * (std / max(float(x.std()), 1e-12))).astype(np.float32)


def initial_embeddings(z: np.ndarray, std: float) -> np.ndarray:
    """E rows = [z^1 ‖ … ‖ z^H] (n, H·d'), scaled to the default init's standard deviation (§6.7)."""
    if z.ndim != 3:
        raise ValueError(f"z must be (n, H, d'), got shape {z.shape}")
    return _scale(z.reshape(z.shape[0], -1), std)


def pca_axes(text_emb: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), the top r principal axes (D, r)) of the rows, largest variance first.

    Axes come from the D×D covariance (cheap for any n); each is signed so its largest loading
    is positive, so the result does not depend on the eigensolver's signs.
    """
    x = np.asarray(text_emb, dtype=np.float64)
    mean = x.mean(0)
    xc = x - mean
    _, vecs = np.linalg.eigh(xc.T @ xc)  # eigenvalues ascending
    axes = vecs[:, ::-1][:, :r]
    axes = axes * np.sign(axes[np.abs(axes).argmax(0), np.arange(r)])
    return mean, axes


def plain_projection(text_emb: np.ndarray, d: int, std: float, seed: int = 0) -> np.ndarray:
    """The ``init=text`` ablation: PCA of the text vectors to d dims, no facet supervision.

    Principal axes from ``pca_axes``. Where d exceeds the rank available, the missing dims are seeded noise of matching scale.
    """
    x = np.asarray(text_emb, dtype=np.float64)
    r = min(d, x.shape[1], max(len(x) - 1, 1))
    mean, axes = pca_axes(x, r)
    proj = (x - mean) @ axes
    if r < d:
        rng = np.random.default_rng(seed)
        noise = rng.normal(size=(len(x), d - r)) * max(float(proj.std()), 1e-6)
        proj = np.concatenate([proj, noise], axis=1)
    return _scale(proj, std)


_KNN_CHUNK_BYTES = 2**26  # float32 similarities held at a time in the kNN check


def _knn_accuracy(rep: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out cosine kNN majority vote.

    A tie in the vote goes to the tied label with the nearest neighbour (exact: counts are
    integers and the nearest-rank bonus stays below 1). Similarities are computed a chunk of
    rows at a time, never n×n.
    """
    if len(rep) < 2:
        return float("nan")
    return _vote(_knn_neighbours(rep, k), labels)


def _knn_neighbours(rep: np.ndarray, k: int) -> torch.Tensor:
    """(n, min(k, n-1)) indices of each row's nearest other rows by cosine, nearest first: the
    costly part of a kNN check (n² similarities and a top-k per row), shared by every facet
    that reads the same rows of the same representation."""
    n = len(rep)
    r = F.normalize(torch.tensor(np.asarray(rep), dtype=torch.float32), dim=-1)
    k = min(k, n - 1)
    chunk = max(1, _KNN_CHUNK_BYTES // (4 * n))
    out = torch.empty(n, k, dtype=torch.int64)
    for s in range(0, n, chunk):
        sim = r[s : s + chunk] @ r.T  # (c, n)
        c = sim.shape[0]
        sim[torch.arange(c), torch.arange(s, s + c)] = -torch.inf  # leave one out
        out[s : s + c] = sim.topk(k, dim=1).indices
    return out


def _vote(neighbours: torch.Tensor, labels: np.ndarray) -> float:
    """Accuracy of the neighbours' majority label (ties to the nearest neighbour's label)."""
    y = torch.tensor(np.asarray(labels), dtype=torch.int64)
    n, k = neighbours.shape
    nb_labels = y[neighbours]  # (n, k), nearest first
    nearness = torch.arange(k, 0, -1, dtype=torch.float32) / (k + 1)  # rank 0 -> k/(k+1)
    n_labels = int(y.max()) + 1
    correct = 0
    for s in range(0, n, 4096):  # (c, labels) vote tables, bounded whatever the label count
        nb = nb_labels[s : s + 4096]
        c = len(nb)
        counts = torch.zeros(c, n_labels).scatter_add_(1, nb, torch.ones(c, k))
        nearest = torch.zeros(c, n_labels).scatter_reduce_(
            1, nb, nearness.expand(c, k), reduce="amax"
        )
        correct += int(((counts + nearest).argmax(1) == y[s : s + c]).sum())
    return correct / n


class _NeighbourCache:
    """kNN neighbours by (representation, rows): facets labelling the same items share them."""

    def __init__(self, k: int):
        self.k, self.memo = k, {}

    def accuracy(self, name: str, rep: np.ndarray, idx: np.ndarray, y: np.ndarray) -> float:
        if len(idx) < 2:
            return float("nan")
        key = (name, idx.tobytes())
        if key not in self.memo:
            self.memo[key] = _knn_neighbours(rep[idx], self.k)
        return _vote(self.memo[key], y)


def knn_report(
    text_emb: np.ndarray,
    z: np.ndarray,
    labels: np.ndarray,
    facet_names: list[str],
    k: int = 10,
    seed: int = 0,
) -> list[dict]:
    """Per facet: leave-one-out kNN label accuracy (among items with that facet's label) using
    each slice ``slice:<name>``, the raw text vector ``text`` and a seeded Gaussian random
    projection of the text vector to d' dims ``random`` (FAME_SPEC §6.8)."""
    if len(facet_names) != z.shape[1] or labels.shape[0] != z.shape[1]:
        raise ValueError(
            f"{len(facet_names)} facet names, z has {z.shape[1]} slices, labels {labels.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    text_emb = np.asarray(text_emb, dtype=np.float32)
    random_rep = text_emb @ rng.normal(size=(text_emb.shape[1], z.shape[2])).astype(np.float32)
    rows, cache = [], _NeighbourCache(k)
    reps = {f"slice:{n}": z[:, j] for j, n in enumerate(facet_names)}
    reps |= {"text": text_emb, "random": random_rep}
    for f, name in enumerate(facet_names):
        idx = np.flatnonzero(labels[f] >= 0)
        y = labels[f, idx]
        for rep_name, rep in reps.items():
            rows.append(
                {
                    "facet": name,
                    "representation": rep_name,
                    "accuracy": cache.accuracy(rep_name, rep, idx, y),
                    "n_items": int(len(idx)),
                }
            )
    return rows


def head_alignment(
    sub: np.ndarray, labels: np.ndarray, facet_names: list[str], k: int = 10
) -> list[dict]:
    """Which facet each head of a trained model holds: for head h and facet f, the
    leave-one-out kNN accuracy of f's labels from the head's item sub-embeddings ``sub[h]``
    (e_v W_f^h for FAME), next to the majority-label rate as the floor; ``best`` marks the
    facet each head predicts best relative to that floor (accuracy − majority)."""
    if labels.shape[0] != len(facet_names) or sub.shape[1] != labels.shape[1]:
        raise ValueError(f"sub {sub.shape}, labels {labels.shape}, {len(facet_names)} facets")
    rows, cache = [], _NeighbourCache(k)
    for h in range(sub.shape[0]):
        head_rows = []
        for f, name in enumerate(facet_names):
            idx = np.flatnonzero(labels[f] >= 0)
            y = labels[f, idx]
            majority = float(np.bincount(y).max() / len(y)) if len(y) else float("nan")
            acc = cache.accuracy(f"head:{h}", sub[h], idx, y)
            head_rows.append({"head": h, "facet": name, "accuracy": acc, "majority": majority})
        best = max(
            range(len(head_rows)), key=lambda i: head_rows[i]["accuracy"] - head_rows[i]["majority"]
        )
        for i, row in enumerate(head_rows):
            row["best"] = i == best
        rows += head_rows
    return rows
