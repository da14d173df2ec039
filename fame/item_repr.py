"""The text pathway: an item table that stays a function of each item's frozen text vector.

``model.item_repr = "text"``: E[v] = s · φ(t_v) + ID part, with t_v the encoder's frozen vector,
φ the pretrain stage's projector (the facet projectors φ_1..φ_H for FAME, so head h's slice keeps
reading facet h; the PCA projection of ``init = text`` for the SASRec control) and s the scale
that put the initial table at the default init's std times ``init.gain``. Training can no longer
throw the text away, and an item never seen in training still has an embedding: s · φ(t_v).

``model.text_mode``:
- ``frozen``: φ fixed, a learned ID residual per item (zero at the start for items with text);
- ``tuned``: φ trained too, pulled toward its pre-trained weights by λ Σ‖θ - θ_0‖²
  (``model.text_anchor``);
- ``nullspace`` (AlphaFuse, Hu et al. 2025): φ fixed, the semantic table cleared in its
  weakest directions (per slice, from its SVD) and the ID part learned only there, so that the
  collaborative signal never overwrites what the text holds.

Items without text have no semantic part and fall back to the ID part alone (seeded random start).

``model.id_fallback = "learned"``: an item without a trained ID part (its ID part dropped at this
step, held out of training, or added after it) gets one shared learned vector e_∅ in its place
instead of nothing, trained through ID dropout (after the mean/unknown embedding of
cold-start recommenders): warm items' ID parts share a component every user's state scores
high, and without it text-only items rank below warm ones however well their text orders them.

``model.id_fallback = "regress"``: the ID part of an item without one (held out of training, or
added after it) is predicted from its text, by a ridge regression t_v -> ID part fitted on the
items that have both, each time the model enters evaluation (after the content-to-embedding
mappers of cold-start recommenders, e.g. DeepMusic, van den Oord et al. 2013): training is
unchanged, and a text-only item gets the ID part its text predicts, popularity included, in
place of nothing. Dropped ID parts in training stay zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from fame.config import ModelConfig
from fame.projector import FacetProjector


@dataclass(frozen=True)
class TextSpec:
    """The projector's shapes, known from the pretrain artifact and stored with the checkpoint."""

    dim: int  # D of t_v
    facets: int  # slices of φ's output: H facet projectors, or 1 (the PCA projection)
    hidden: int  # φ's MLP width
    base: bool  # φ has a fixed linear start (mean, axes) beside its MLP
    normalize: bool  # each slice unit-norm (facet projectors) or not (PCA projection)

    def as_dict(self) -> dict:
        return asdict(self)


class TextItemTable(nn.Module):
    """E (num_items + 1, d) as s · φ(t) ⊙ has_text + ID part; row 0 (padding) is zero."""

    def __init__(self, cfg: ModelConfig, num_items: int, spec: TextSpec):
        super().__init__()
        d, S = cfg.d, spec.facets
        if d % S:
            raise ValueError(f"model.d = {d} is not divisible by the projector's {S} slices")
        self.cfg, self.spec, self.mode = cfg, spec, cfg.text_mode
        self._drop: torch.Tensor | None = None  # this step's ID-dropout mask
        ds = d // S  # one slice of φ's output
        self.register_buffer("text", torch.zeros(num_items + 1, spec.dim))  # t_v
        self.register_buffer("has_text", torch.zeros(num_items + 1, dtype=torch.bool))
        self.register_buffer("scale", torch.ones(()))  # s
        base = (torch.zeros(spec.dim), torch.zeros(S, spec.dim, ds)) if spec.base else None
        self.projector = FacetProjector(S, spec.dim, spec.hidden, ds, base, spec.normalize)  # φ
        k = d
        if self.mode == "nullspace":
            k = cfg.null_dims
            if k % S or not 0 < k // S < ds:
                raise ValueError(
                    f"model.null_dims = {k} must be a multiple of the {S} slices, each getting "
                    f"fewer than its {ds} dims"
                )
            self.register_buffer("null", torch.zeros(S, ds, k // S))  # N_j: slice j's weakest axes
        self.id_emb = nn.Embedding(num_items + 1, k, padding_idx=0)  # the ID part
        if cfg.id_fallback == "learned":
            self.id_unknown = nn.Parameter(torch.zeros(k))  # e_∅
        if cfg.id_fallback == "regress":  # t -> ID part: [W; b], (D + 1, k), fitted by fit_id_map
            self.register_buffer("id_map", torch.zeros(spec.dim + 1, k))
        if cfg.id_fallback != "zero":
            # items with a trained ID part: all but padding, held-out and added items
            self.register_buffer("has_id", torch.ones(num_items + 1, dtype=torch.bool))
        if self.mode == "tuned" and cfg.text_anchor:  # θ_0, filled by ``load``
            for name, p in self.projector.named_parameters():
                self.register_buffer(_anchor(name), torch.zeros_like(p))
        if self.mode != "tuned":  # s · φ(t), computed once: φ never changes
            self.register_buffer("semantic", torch.zeros(num_items + 1, d))
            self.projector.requires_grad_(False)

    @torch.no_grad()
    def load(
        self,
        text: torch.Tensor,
        has_text: torch.Tensor,
        projector: dict[str, torch.Tensor],
        scale: float,
        init_std: float,
        generator: torch.Generator,
        held_out: torch.Tensor | None = None,
    ) -> None:
        """Set t (num_items + 1, D), the mask, φ's pre-trained weights and s; the ID part starts
        at zero where an item has text and at N(0, init_std²) where it has none. ``held_out``:
        the ids of the items training never sees (under ``id_fallback`` learned or regress they get
        e_∅ or the ID part their text predicts)."""
        self.text.copy_(text)
        self.has_text.copy_(has_text)
        self.has_text[0] = False
        self.projector.load_state_dict(projector)
        self.scale.fill_(scale)
        ids = torch.randn(self.id_emb.weight.shape, generator=generator) * init_std
        ids[self.has_text] = 0
        ids[0] = 0
        self.id_emb.weight.copy_(ids)
        if self.cfg.id_fallback != "zero":
            self.has_id.fill_(True)
            self.has_id[0] = False
            if held_out is not None:
                self.has_id[held_out] = False
        if self.mode == "tuned" and self.cfg.text_anchor:
            for name, p in self.projector.named_parameters():
                getattr(self, _anchor(name)).copy_(p)
        if self.mode != "tuned":
            self.refresh()

    def train(self, mode: bool = True) -> TextItemTable:
        """Under ``id_fallback = regress``, entering evaluation refits t -> ID part."""
        super().train(mode)
        if not mode and self.cfg.id_fallback == "regress":
            self.fit_id_map()
        return self

    @torch.no_grad()
    def fit_id_map(self) -> None:
        """Ridge regression from t_v to the ID part over the n items that have both:
        W = (T_cᵀT_c + λ·tr(T_cᵀT_c)/D · I)⁻¹ T_cᵀA_c on centred T (n, D) and A (n, k),
        λ = ``model.id_ridge`` relative to the mean eigenvalue so that it does not depend on the
        encoder's scale; b = ā - t̄W."""
        fit = self.has_id & self.has_text
        if not fit.any():  # nothing to learn from (an untrained or empty table): no ID part
            self.id_map.zero_()
            return
        T = self.text[fit].double()
        A = self.id_emb.weight[fit].double()
        t_mean, a_mean = T.mean(0), A.mean(0)
        T, A = T - t_mean, A - a_mean
        gram = T.T @ T  # (D, D)
        ridge = self.cfg.id_ridge * gram.diagonal().mean().clamp_min(1e-12)
        W = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), T.T @ A)
        self.id_map[:-1] = W.float()
        self.id_map[-1] = (a_mean - t_mean @ W).float()

    def _predicted_id(self, rows: torch.Tensor) -> torch.Tensor:
        """The ID part t_v predicts: (n,) -> (n, k); the intercept alone without text."""
        t = self.text[rows] * self.has_text[rows][..., None]
        return t @ self.id_map[:-1] + self.id_map[-1]

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the stored s · φ(t) (after t or φ changed); under ``nullspace`` the null
        axes N_j too, and the semantic table loses its component along them."""
        sem = self._project(self.text, self.has_text)
        if self.mode == "nullspace":
            S, ds, kj = self.null.shape
            slices = sem[self.has_text].reshape(-1, S, ds).transpose(0, 1)  # (S, n, d_s)
            _, _, vh = torch.linalg.svd(slices.double(), full_matrices=True)  # (S, d_s, d_s)
            self.null.copy_(vh[:, ds - kj :].transpose(1, 2).float())  # smallest singular values
            sem = self._clear_null(sem)
        self.semantic.copy_(sem)

    def _project(self, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        """s · φ(t) ⊙ has_text: (..., D) -> (..., d), in chunks of 4096 rows."""
        shape = text.shape[:-1]
        flat = text.reshape(-1, text.shape[-1])
        out = torch.cat([self.projector(flat[s : s + 4096]) for s in range(0, len(flat), 4096)])
        out = out.reshape(*shape, self.cfg.d) * self.scale
        return out * has_text[..., None]

    def _clear_null(self, sem: torch.Tensor) -> torch.Tensor:
        """sem - Σ_j sem_j N_j N_j^T: the semantic part without its null-space component."""
        S, ds, _ = self.null.shape
        x = sem.reshape(*sem.shape[:-1], S, ds)  # (..., S, d_s)
        inside = torch.einsum("...sd,sdk,sek->...se", x, self.null, self.null)
        return (x - inside).reshape(sem.shape)

    def _id_part(self, ids: torch.Tensor | None) -> torch.Tensor:
        """The ID part in E's coordinates: (..., d); under ``nullspace`` mapped through N."""
        a = self.id_emb.weight if ids is None else self.id_emb(ids)
        rows = torch.arange(len(self.has_text), device=a.device) if ids is None else ids
        none = None  # (...,) the rows without an ID part
        if self.training and self.cfg.id_dropout:
            none = self._id_drop_mask()[rows] & self.has_text[rows]
        if self.cfg.id_fallback == "learned":
            unknown = ~self.has_id[rows]
            none = unknown if none is None else none | unknown
            keep = rows != 0  # padding stays zero
            a = torch.where((none & keep)[..., None], self.id_unknown.to(a.dtype), a)
        elif self.cfg.id_fallback == "regress":  # predicted at evaluation, none in training
            unknown = ~self.has_id[rows] & (rows != 0)  # padding stays zero
            if self.training:
                none = unknown if none is None else none | unknown
            else:
                # out of place (a may be the ID table itself), predicted for those rows alone
                a = a.index_put((unknown,), self._predicted_id(rows[unknown]).to(a.dtype))
        if none is not None and self.cfg.id_fallback != "learned":
            a = a * ~none[..., None]
        if self.mode != "nullspace":
            return a
        S, _, kj = self.null.shape
        a = a.reshape(*a.shape[:-1], S, kj)  # (..., S, k_j)
        return torch.einsum("...sk,sdk->...sd", a, self.null).reshape(*a.shape[:-2], self.cfg.d)

    def _id_drop_mask(self) -> torch.Tensor:
        """(num_items + 1,) the items whose ID part this step drops: one draw per step, shared
        by the input lookups and the scoring table (the trainer calls ``new_step``)."""
        if self._drop is None or len(self._drop) != len(self.has_text):
            self.new_step()
        return self._drop

    def new_step(self) -> None:
        """Draw the ID-dropout mask of the next training step."""
        p = self.cfg.id_dropout
        self._drop = torch.rand(len(self.has_text), device=self.has_text.device) < p

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """E[ids]: any shape of item ids -> (..., d)."""
        if self.mode == "tuned":
            sem = self._project(self.text[ids], self.has_text[ids])
        else:
            sem = self.semantic[ids]
        return sem + self._id_part(ids)

    def table(self) -> torch.Tensor:
        """E: (num_items + 1, d), row 0 zero."""
        sem = self._project(self.text, self.has_text) if self.mode == "tuned" else self.semantic
        return sem + self._id_part(None)

    def penalty(self) -> torch.Tensor | None:
        """λ Σ ‖θ - θ_0‖² over φ's parameters (``tuned`` with ``text_anchor`` > 0), else None."""
        if self.mode != "tuned" or not self.cfg.text_anchor:
            return None
        total = sum(
            (p - getattr(self, _anchor(n))).square().sum()
            for n, p in self.projector.named_parameters()
        )
        return self.cfg.text_anchor * total

    @torch.no_grad()
    def extend(self, text: torch.Tensor) -> None:
        """Append items (n, D) with text and no ID part: rows num_items + 1 … num_items + n.
        Their embedding is s · φ(t) (its null-space component cleared under ``nullspace``)."""
        n = len(text)
        dev = self.text.device
        self.text = torch.cat([self.text, text.to(dev, self.text.dtype)])
        self.has_text = torch.cat([self.has_text, torch.ones(n, dtype=torch.bool, device=dev)])
        old = self.id_emb.weight
        emb = nn.Embedding(len(old) + n, old.shape[1], padding_idx=0).to(dev)
        emb.weight.copy_(torch.cat([old, old.new_zeros(n, old.shape[1])]))
        emb.weight.requires_grad_(old.requires_grad)
        self.id_emb = emb
        if self.cfg.id_fallback != "zero":  # added items get e_∅ or their predicted ID part
            self.has_id = torch.cat([self.has_id, torch.zeros(n, dtype=torch.bool, device=dev)])
        if self.mode != "tuned":
            sem = self._project(self.text[-n:], self.has_text[-n:])
            if self.mode == "nullspace":
                sem = self._clear_null(sem)
            self.semantic = torch.cat([self.semantic, sem])


def _anchor(name: str) -> str:
    return "anchor_" + name.replace(".", "_")
