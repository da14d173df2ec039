"""Model invariants: causality, N=1 MoE = attention, fused = per-head, gates sum to 1."""

import math

import pytest
import torch
import torch.nn.functional as F

from fame.attention import attention_mask
from fame.config import ModelConfig
from fame.data import pack
from fame.model import SeqRecModel


def _model(name="fame", **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, dropout=0.0, max_len=12, d=32, heads=4, experts=3, **kw)
    return SeqRecModel(cfg, num_items=30).eval()


def _seq(B=4, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, 31, (B, T), generator=g)
    seq[0, :5] = 0  # a left-padded user
    seq[1, :11] = 0  # a user with a single item
    return seq


@pytest.mark.parametrize("name", ["fame", "sasrec"])
@pytest.mark.parametrize("j", [3, 7, 11])
def test_future_item_never_changes_past_predictions(name, j):
    model, seq = _model(name), _seq()
    out = model(seq)
    changed = seq.clone()
    changed[:, j] = (changed[:, j] % 30) + 1  # a different real item at position j
    out2 = model(changed)
    assert torch.allclose(out[:, :j], out2[:, :j], atol=1e-6)
    assert not torch.allclose(out[2:, j:], out2[2:, j:], atol=1e-4)  # and it does matter later


@pytest.mark.parametrize("name", ["fame", "sasrec"])
def test_last_only_equals_full_forward(name):
    model, seq = _model(name), _seq()
    assert torch.allclose(model(seq, last_only=True)[:, 0], model(seq)[:, -1], atol=1e-5)


@pytest.mark.parametrize("name", ["fame", "sasrec"])
def test_packed_rows_compute_the_same_as_padded_windows(name):
    model, seq = _model(name), _seq(B=6, seed=3)
    seq[2, :9] = 0
    seq[3, :4] = 0
    target = torch.roll(seq, -1, dims=1).masked_fill(seq == 0, 0)  # any non-zero target will do
    target[:, -1] = torch.where(seq[:, -1] > 0, 1, 0)
    p = pack(seq, target, max_len=12)
    assert p.items.shape[0] < len(seq)  # short sequences share rows
    real = p.targets > 0
    order = torch.argsort(((p.segments - 1) * 12 + p.positions)[real])  # back to (user, position)
    with torch.no_grad():
        packed = model(p.items, positions=p.positions, segments=p.segments)[real][order]
        padded = model(seq)[target > 0]  # T = max_len: column j has position j
    assert torch.allclose(packed, padded, atol=1e-5)


def test_single_expert_is_plain_attention():
    torch.manual_seed(0)
    model = SeqRecModel(
        ModelConfig(name="fame", dropout=0.0, max_len=12, d=32, heads=4, experts=1), 30
    ).eval()
    block, seq = model.last, _seq()
    x = torch.randn(4, 12, 32)
    mask = attention_mask(seq)
    f = block.expert_outputs(x, mask)[:, :, 0]  # (B, H, T, d')
    # hand-written reference: per head softmax(Q K^T / sqrt(d') + mask) V
    dh = 8
    qw, kvw = block.q, block.kv
    q = (x @ qw.weight.T + qw.bias).view(4, 12, 4, dh).transpose(1, 2)
    kv = (x @ kvw.weight.T + kvw.bias).view(4, 12, 2, 4, dh)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(dh)
    logits = logits.masked_fill(~mask, float("-inf"))
    ref = torch.softmax(logits, dim=-1) @ v
    assert torch.allclose(f, ref, atol=1e-5)
    assert torch.allclose(f, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)
    assert torch.allclose(block.route(block.expert_outputs(x, mask)), torch.ones(4, 4, 12, 1))


@pytest.mark.parametrize("gate", [True, False])
def test_fused_score_equals_gated_per_head_sum(gate):
    model, seq = _model(gate=gate), _seq()
    with torch.no_grad():
        fused = model.score(seq)
        heads = model.encode(seq)[:, :, -1]  # (B, H, d')
        E = model.item_embeddings()
        explicit = torch.zeros_like(fused)
        g = model.gate_weights(model.encode(seq))[:, -1]
        for h in range(4):  # the slow explicit form of §3, one head at a time
            e_h = E @ model.facet_proj[h]  # e_v^h = E[v] W_f^h
            explicit += g[:, h : h + 1] * (heads[:, h] @ e_h.T)
        per_head, gate_w = model.head_scores(seq)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert torch.allclose((per_head * gate_w[:, :, None]).sum(1), fused, atol=1e-5)
    if not gate:
        assert torch.allclose(gate_w, torch.full_like(gate_w, 0.25))


def test_gate_and_routers_sum_to_one():
    model, seq = _model(), _seq()
    with torch.no_grad():
        out = model.encode(seq)
        g = model.gate_weights(out)
        x = torch.randn(4, 12, 32)
        beta = model.last.route(model.last.expert_outputs(x, attention_mask(seq)))
    assert torch.allclose(g.sum(-1), torch.ones_like(g[..., 0]), atol=1e-6) and (g >= 0).all()
    assert beta.shape == (4, 4, 12, 3)
    assert (
        torch.allclose(beta.sum(-1), torch.ones_like(beta[..., 0]), atol=1e-6) and (beta >= 0).all()
    )


def test_padding_row_stays_zero_and_init_selects_slices():
    model = _model()
    assert torch.count_nonzero(model.item_embeddings()[0]) == 0
    emb = torch.randn(31, 32)
    model.load_item_init(emb, select_facets=True, freeze=True)
    E = model.item_embeddings()
    assert torch.count_nonzero(E[0]) == 0 and torch.equal(E[1:], emb[1:])
    assert not E.requires_grad
    for h in range(4):  # head h's sub-embedding is exactly slice h of E (times H: facet_scale)
        assert torch.allclose(E @ model.facet_proj[h], 4 * E[:, h * 8 : (h + 1) * 8])


def test_item_init_without_facet_selection_keeps_the_projections():
    model = _model()
    with torch.no_grad():
        model.facet_proj.normal_()
    before = model.facet_proj.detach().clone()
    model.load_item_init(torch.randn(31, 32), select_facets=False)
    assert torch.equal(model.facet_proj, before) and model.item_embeddings().requires_grad
    model.score(_seq())[:, 1:].sum().backward()
    assert model.item_emb.weight.grad[0].abs().max() == 0  # padding row stays zero in training


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d=30, heads=4)


@pytest.mark.parametrize("scale, c", [("unit", 1.0), ("heads", 4.0)])
def test_facet_scale_sets_the_start_of_u(scale, c):
    """W_f^h = c × selector of slice h: u is c × the gated concatenation [g_1 F^1 ‖ … ‖ g_H F^H],
    so with "heads" and no gate u equals the plain concatenation of the heads (x_t's scale)."""
    model, seq = _model(gate=False, facet_scale=scale), _seq()
    with torch.no_grad():
        F_last = model.encode(seq)[:, :, -1]  # (B, H, d')
        u = model(seq)[:, -1]
    concat = F_last.reshape(len(seq), -1)  # [F^1 ‖ … ‖ F^H]
    assert torch.allclose(u, c / 4 * concat, atol=1e-5)
    model.load_item_init(torch.randn(31, 32))  # pre-trained init keeps the configured scale
    assert torch.allclose(model.facet_proj[2, 16:24], c * torch.eye(8))


def test_projected_residual_starts_as_the_slice_then_follows_w_r():
    """residual = "proj": head h's residual is X W_R^h, W_R^h = selector of slice h at init (the
    model then equals the default one); with any W_R the block matches a hand-written form."""
    seq, x = _seq(), torch.randn(4, 12, 32)
    mask = attention_mask(seq)
    slice_model, proj_model = _model(), _model(residual="proj")
    block = proj_model.last
    assert "last.res.weight" not in dict(slice_model.named_parameters())
    with torch.no_grad():
        assert torch.equal(block.res.weight, torch.eye(32))
        missing = proj_model.load_state_dict(slice_model.state_dict(), strict=False).missing_keys
        assert missing == ["last.res.weight"]  # every other weight is now the slice model's
        assert torch.allclose(slice_model(seq), proj_model(seq), atol=1e-6)
        block.res.weight.normal_(std=0.3)
        f = block.expert_outputs(x, mask)
        fh = torch.einsum("bhtn,bhntk->bhtk", block.route(f), f)
        res = (x @ block.res.weight.T).view(4, 12, 4, 8).transpose(1, 2)  # X W_R^h
        a = block.ln1(res + fh)
        ref = block.ln2(a + block.ffn(a))
        out = block(x, mask)
        assert torch.allclose(out, ref, atol=1e-5)
        assert not torch.allclose(out, slice_model.last(x, mask), atol=1e-3)


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_router_matches_a_masked_softmax(k):
    """router_top_k = k: softmax over each position's k largest router logits, 0 elsewhere;
    k = N is the dense router."""
    seq, x = _seq(), torch.randn(4, 12, 32)
    dense, sparse = _model(), _model(router_top_k=k)  # same seed: same weights
    with torch.no_grad():
        f = dense.last.expert_outputs(x, attention_mask(seq))
        B, H, N, T, dh = f.shape
        cat = f.permute(0, 1, 3, 2, 4).reshape(B, H, T, N * dh)
        logits = torch.einsum("bhtc,hcn->bhtn", cat, dense.last.router)
        beta = sparse.last.route(f)
        assert torch.allclose(dense.last.route(f), torch.softmax(logits, -1), atol=1e-6)
        assert torch.allclose(_model(router_top_k=3).last.route(f), dense.last.route(f))
    assert ((beta > 0).sum(-1) == k).all()
    assert torch.allclose(beta.sum(-1), torch.ones_like(beta[..., 0]), atol=1e-6)
    # naive reference, one position at a time
    for b, h, t in [(0, 0, 11), (2, 3, 5), (3, 1, 0)]:
        row = logits[b, h, t]
        keep = torch.argsort(row, descending=True)[:k]
        ref = torch.zeros(N)
        ref[keep] = torch.softmax(row[keep], 0)
        assert torch.allclose(beta[b, h, t], ref, atol=1e-6)


def test_router_top_k_is_checked_against_the_expert_count():
    with pytest.raises(ValueError, match="router_top_k"):
        ModelConfig(experts=2, router_top_k=3)


def test_explain_adds_up_to_the_score_and_matches_head_scores():
    """FAME's explanation: Σ_h g_h s^h_v equals the fused score; per-head scores of the asked
    items equal head_scores' columns; router weights are distributions over the experts."""
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(name="fame", d=16, heads=4, experts=3, max_len=8), 30).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 9]])
    items = torch.tensor([[1, 5, 29], [2, 2, 10]])
    with torch.no_grad():
        per_head, gate, beta = model.explain(seq, items)
        full, g = model.head_scores(seq)
        scores = model.score(seq)
    assert per_head.shape == (2, 3, 4) and gate.shape == (2, 4) and beta.shape == (2, 4, 3)
    torch.testing.assert_close(gate, g)
    torch.testing.assert_close(
        per_head, torch.gather(full, 2, items[:, None].expand(-1, 4, -1)).transpose(1, 2)
    )
    torch.testing.assert_close((per_head * gate[:, None]).sum(-1), torch.gather(scores, 1, items))
    torch.testing.assert_close(beta.sum(-1), torch.ones(2, 4))
    sasrec = SeqRecModel(ModelConfig(name="sasrec", d=16, heads=4, max_len=8), 30)
    with pytest.raises(ValueError, match="FAME only"):
        sasrec.explain(seq, items)
