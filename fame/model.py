"""SeqRecModel: the SASRec backbone with either FAME's facet-aware MoE last block or a standard one.

One code path for every model (FAME_SPEC §1.4): the trainer and evaluator only see
``forward(seq) -> u`` and the item table ``E``; a score is always ``<E[v], u>``.
"""

from __future__ import annotations

import torch
from torch import nn

from fame.attention import TransformerBlock, attention_mask
from fame.config import ModelConfig
from fame.item_repr import TextItemTable, TextSpec
from fame.moe import MoEHeadBlock


class SeqRecModel(nn.Module):
    def __init__(self, cfg: ModelConfig, num_items: int, text: TextSpec | None = None):
        """``text``: the projector's shapes, required by ``item_repr = "text"`` (the text
        pathway ``fame.item_repr``, filled by ``TextItemTable.load``)."""
        super().__init__()
        self.cfg, self.num_items = cfg, num_items
        d, H = cfg.d, cfg.heads
        if cfg.item_repr == "text":
            if text is None:
                raise ValueError("model.item_repr = 'text' needs the text projector's TextSpec")
            self.item_emb = None
            self.text_items = TextItemTable(cfg, num_items, text)  # E = s·φ(t) + ID part
        else:
            self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)  # E
        self.pos_emb = nn.Embedding(cfg.max_len, d)  # P
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, H, cfg.dropout) for _ in range(cfg.blocks - 1)
        )
        if cfg.name == "fame":
            self.last = MoEHeadBlock(d, H, cfg.experts, cfg.dropout, cfg.residual, cfg.router_top_k)
            self.facet_proj = nn.Parameter(torch.empty(H, d, cfg.head_dim))  # W_f^h
            self.gate = nn.Linear(d, H)  # W_g, b_g over [F^1 ‖ … ‖ F^H]
        else:
            self.last = TransformerBlock(d, H, cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.item_emb is not None:
            with torch.no_grad():
                self.item_emb.weight[0].zero_()
        if self.cfg.name == "fame":
            nn.init.normal_(self.last.router, std=std)
            self.last.reset_residual()
            # W_f^h starts as (a multiple of) the selector of slice h; with a random E any
            # orthonormal W_f^h is the same in distribution
            self.select_facet_slices()

    @torch.no_grad()
    def select_facet_slices(self) -> None:
        """W_f^h = c × selector of slice h, so head h starts by reading E[v][h d' : (h+1) d'];
        c = 1, or H with ``facet_scale = "heads"`` (u then has x_t's scale at a uniform gate)."""
        H, dh = self.cfg.heads, self.cfg.head_dim
        c = float(H) if self.cfg.facet_scale == "heads" else 1.0
        blocks = c * torch.eye(H)[:, :, None, None] * torch.eye(dh)  # (H, H, d', d'): cI on h = h'
        self.facet_proj.copy_(blocks.reshape(H, H * dh, dh))

    @property
    def text_spec(self) -> TextSpec | None:
        """The text pathway's projector shapes (what a checkpoint needs to rebuild it), or None."""
        return None if self.item_emb is not None else self.text_items.spec

    def item_embeddings(self) -> torch.Tensor:
        """E: (num_items + 1, d), row 0 is padding and zero."""
        return self.item_emb.weight if self.item_emb is not None else self.text_items.table()

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """E[items]: any shape of item ids -> (..., d)."""
        return self.item_emb(items) if self.item_emb is not None else self.text_items(items)

    def new_step(self) -> None:
        """Before each training step: the text pathway draws its ID-dropout mask."""
        if self.item_emb is None and self.cfg.id_dropout:
            self.text_items.new_step()

    def penalty(self) -> torch.Tensor | None:
        """A term the training loss adds (the tuned text projector's pull to its start), or None."""
        return None if self.item_emb is not None else self.text_items.penalty()

    @torch.no_grad()
    def add_items(self, text: torch.Tensor) -> None:
        """Append ``len(text)`` items (n, D) known by their text only (text pathway): ids
        num_items + 1 … num_items + n, scored from s·φ(t) without retraining."""
        if self.item_emb is not None:
            raise ValueError(
                "items can be added to a model with model.item_repr = 'text' only: a free "
                "item table has no embedding for an item it never trained"
            )
        self.text_items.extend(text)
        self.num_items += len(text)

    def encode(
        self,
        seq: torch.Tensor,
        last_only: bool = False,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Output of the last block: (B, T, d) for SASRec, (B, H, T, d') per-head F for FAME.

        ``seq`` is left-padded, one sequence per row, unless ``positions`` and ``segments``
        (B, T) describe packed rows (``fame.data.pack``). ``last_only`` runs the last block's
        queries at the final position only (T becomes 1): prediction needs nothing else.
        """
        x, mask = self._backbone(seq, positions, segments)
        return self.last(x, mask, last_only)

    def _backbone(
        self, seq: torch.Tensor, positions: torch.Tensor | None, segments: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The B-1 standard blocks: (the last block's input X (B, T, d), the attention mask)."""
        T, L = seq.shape[1], self.cfg.max_len
        if positions is None:
            if L < T:
                raise ValueError(f"sequence length {T} exceeds model.max_len = {L}")
            positions = torch.arange(L - T, L, device=seq.device)  # right-aligned
        x = self.drop(self.ln(self.embed(seq) + self.pos_emb(positions)))
        mask = attention_mask(seq, segments)
        for block in self.blocks:
            x = block(x, mask)
        return x, mask

    def gate_weights(self, heads: torch.Tensor) -> torch.Tensor:
        """g = softmax(W_g [F^1 ‖ … ‖ F^H] + b_g): (..., H); uniform when the gate is off."""
        B, H, T, dh = heads.shape
        if not self.cfg.gate:
            return heads.new_full((B, T, H), 1.0 / H)
        return torch.softmax(self.gate(heads.transpose(1, 2).reshape(B, T, H * dh)), dim=-1)

    def forward(
        self,
        seq: torch.Tensor,
        last_only: bool = False,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused user vectors u at every position (B, T, d), or (B, 1, d); score_v = <E[v], u>.

        For SASRec u is the last block's output x_t itself. Arguments as in ``encode``.
        """
        out = self.encode(seq, last_only, positions, segments)
        if self.cfg.name != "fame":
            return out
        B, H, T, dh = out.shape
        g = self.gate_weights(out)  # (B, T, H)
        # u = Σ_h g_h W_f^h F^h: the per-head scores folded into one d-vector (§3 identity),
        # as one (B·T × H·d') · (H·d' × d) product
        weighted = (out * g.transpose(1, 2)[..., None]).transpose(1, 2).reshape(B, T, H * dh)
        return weighted @ self.facet_proj.transpose(1, 2).reshape(H * dh, self.cfg.d)

    def item_sub_embeddings(self) -> torch.Tensor:
        """e_v^h = E[v] W_f^h, what head h matches against: (H, |V|+1, d'); FAME only."""
        if self.cfg.name != "fame":
            raise ValueError("per-head item sub-embeddings exist for FAME only")
        return torch.einsum("vd,hdk->hvk", self.item_embeddings(), self.facet_proj)

    def score(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores of every item at the last position through one matmul: (B, num_items + 1)."""
        return self(seq, last_only=True)[:, -1] @ self.item_embeddings().T

    def head_scores(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head scores s^h_v = <F^h_t, E[v] W_f^h> (B, H, |V|+1) and the gate (B, H).

        For explanations only: it materialises B × H × |V| scores.
        """
        if self.cfg.name != "fame":
            raise ValueError("per-head scores exist for FAME only")
        out = self.encode(seq, last_only=True)  # (B, H, 1, d')
        sub = self.item_sub_embeddings()  # (H, |V|+1, d')
        scores = torch.einsum("bhk,hvk->bhv", out[:, :, 0], sub)
        return scores, self.gate_weights(out)[:, -1]

    def explain(
        self, seq: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Why FAME scores ``items`` (B, k) after ``seq`` as it does, at the last position:
        per-head scores s^h_v = <F^h_t, E[v] W_f^h> (B, k, H), the gate g (B, H), and each
        head's router weights β^h over its experts (B, H, N). Σ_h g_h s^h_v is the score.

        Only the k asked-for items are scored per head (no B × H × |V| tensor).
        """
        if self.cfg.name != "fame":
            raise ValueError("per-head explanations exist for FAME only")
        x, mask = self._backbone(seq, None, None)
        beta = self.last.route(self.last.expert_outputs(x, mask, last_only=True))  # (B, H, 1, N)
        out = self.last(x, mask, last_only=True)  # (B, H, 1, d')
        sub = torch.einsum("bkd,hdc->bkhc", self.embed(items), self.facet_proj)  # (B, k, H, d')
        per_head = torch.einsum("bhc,bkhc->bkh", out[:, :, 0], sub)
        return per_head, self.gate_weights(out)[:, -1], beta[:, :, 0]

    @torch.no_grad()
    def load_item_init(
        self, emb: torch.Tensor, select_facets: bool = True, freeze: bool = False
    ) -> None:
        """Start from a given E (row 0 forced to zero); ``select_facets``: W_f^h = the (scaled)
        selector of slice h (``select_facet_slices``), so head h starts from facet h (§6.7), else
        W_f is left as it is. ``freeze`` keeps E fixed during training."""
        if self.item_emb is None:
            raise ValueError("a text-pathway model's table is set by TextItemTable.load")
        if emb.shape != self.item_emb.weight.shape:
            raise ValueError(
                f"initial embeddings {tuple(emb.shape)} != {tuple(self.item_emb.weight.shape)}"
            )
        self.item_emb.weight.copy_(emb)
        self.item_emb.weight[0].zero_()
        if select_facets and self.cfg.name == "fame":
            self.select_facet_slices()
        self.item_emb.weight.requires_grad_(not freeze)
