"""The text pathway (fame.item_repr): E is a function of each item's text, the frozen
projector never moves, the null-space ID part stays in its null space, the start equals the
initial table, added items are scored from their text, and a checkpoint round-trips it."""

import numpy as np
import pytest
import torch
from support import cyclic_split

from fame.checkpoint import load_checkpoint, save_checkpoint
from fame.config import EvalConfig, ModelConfig, TrainConfig
from fame.item_repr import TextSpec
from fame.losses import FullCE
from fame.model import SeqRecModel
from fame.projector import FacetProjector
from fame.trainer import fit
from pretrain.config import PretrainConfig
from pretrain.train import initial_embeddings, pretrain_facets, table_scale

D, HIDDEN = 24, 16


def _model(
    name="fame", mode="frozen", num_items=40, heads=2, text=None, has=None, held=None, **extra
):
    cfg = ModelConfig(
        name=name,
        d=16,
        heads=heads,
        experts=2,
        max_len=12,
        dropout=0.0,
        item_repr="text",
        text_mode=mode,
        **extra,
    )
    facets = heads if name == "fame" else 1
    spec = TextSpec(dim=D, facets=facets, hidden=HIDDEN, base=False, normalize=name == "fame")
    torch.manual_seed(0)
    model = SeqRecModel(cfg, num_items, spec)
    gen = torch.Generator().manual_seed(1)
    if text is None:
        text = torch.randn(num_items + 1, D, generator=gen)
    if has is None:
        has = torch.ones(num_items + 1, dtype=torch.bool)
    phi = FacetProjector(facets, D, HIDDEN, 16 // facets, normalize=spec.normalize)
    model.text_items.load(text, has, phi.state_dict(), 0.5, 0.02, gen, held)
    return model


def test_same_text_same_embedding_and_a_changed_text_changes_it():
    text = torch.randn(41, D, generator=torch.Generator().manual_seed(3))
    text[7] = text[5]
    model = _model(text=text)
    E = model.item_embeddings().detach()
    torch.testing.assert_close(E[5], E[7], rtol=0, atol=0)
    assert not torch.equal(E[5], E[6])
    text[7] = text[7] + 0.5
    changed = _model(text=text).item_embeddings().detach()
    assert not torch.allclose(changed[7], E[7])
    torch.testing.assert_close(changed[5], E[5], rtol=0, atol=0)
    assert torch.equal(E[0], torch.zeros(16))  # padding


def test_items_without_text_fall_back_to_their_id_part():
    has = torch.ones(41, dtype=torch.bool)
    has[[3, 9]] = False
    model = _model(has=has)
    E = model.item_embeddings().detach()
    ids = model.text_items.id_emb.weight.detach()
    torch.testing.assert_close(E[[3, 9]], ids[[3, 9]])  # no semantic part
    assert ids[[3, 9]].abs().sum() > 0 and ids[[1, 2]].abs().sum() == 0  # seeded vs zero start


@pytest.mark.parametrize("mode", ["frozen", "nullspace", "tuned"])
def test_training_moves_what_the_mode_says(mode, tmp_path):
    data = cyclic_split(num_users=60, num_items=40)
    model = _model(mode=mode, text_anchor=0.1 if mode == "tuned" else 0.0, null_dims=4)
    phi0 = {k: v.clone() for k, v in model.text_items.projector.state_dict().items()}
    E0 = model.item_embeddings().detach().clone()
    cfg = TrainConfig(epochs=2, patience=5, batch_size=32, seed=0, device="cpu")
    fit(model, data, cfg, tmp_path, progress=False, spec=EvalConfig())
    phi1 = model.text_items.projector.state_dict()
    same = all(torch.equal(phi0[k], phi1[k]) for k in phi0)
    assert same == (mode != "tuned")  # frozen projectors are bit-identical after training
    assert not torch.allclose(model.item_embeddings().detach(), E0)  # the ID part learned
    if mode == "tuned":
        assert model.penalty() > 0
    if mode == "nullspace":
        t = model.text_items
        S, ds, _ = t.null.shape
        learned = (model.item_embeddings().detach() - t.semantic).reshape(-1, S, ds)
        inside = torch.einsum("nsd,sdk,sek->nse", learned, t.null, t.null)
        torch.testing.assert_close(learned, inside, atol=1e-5, rtol=0)  # only in N's span
        sem = t.semantic.reshape(-1, S, ds)
        assert torch.einsum("nsd,sdk->nsk", sem, t.null).abs().max() < 1e-5  # N cleared


def test_the_pathway_starts_at_the_facet_table():
    """s·φ(t_v) with the stored scale is the init table of ``init = facet_pretrain`` row by row."""
    rng = np.random.default_rng(0)
    text = rng.normal(size=(60, D)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 60))
    res = pretrain_facets(text, labels, 8, PretrainConfig(steps=20, hidden=HIDDEN), progress=False)
    table = initial_embeddings(res.z, 0.02)
    cfg = ModelConfig(name="fame", d=16, heads=2, experts=2, item_repr="text")
    spec = TextSpec(dim=D, facets=2, hidden=HIDDEN, base=False, normalize=True)
    model = SeqRecModel(cfg, 60, spec)
    t = torch.zeros(61, D)
    t[1:] = torch.from_numpy(text)
    has = torch.ones(61, dtype=torch.bool)
    scale = table_scale(res.z, 0.02)
    model.text_items.load(t, has, res.projector.state_dict(), scale, 0.02, torch.Generator())
    np.testing.assert_allclose(model.item_embeddings().detach()[1:], table, rtol=1e-4, atol=1e-6)


def test_added_items_are_scored_from_their_text_and_the_checkpoint_round_trips(tmp_path):
    model = _model().eval()
    seq = torch.tensor([[0, 3, 4, 5]])
    before = model.score(seq).detach()
    new_text = torch.randn(3, D, generator=torch.Generator().manual_seed(9))
    new_text[1] = model.text_items.text[4]  # an added item with item 4's text
    model.add_items(new_text)
    after = model.score(seq).detach()
    assert after.shape == (1, 44) and model.num_items == 43
    torch.testing.assert_close(after[:, :41], before)  # the old items score as before
    E = model.item_embeddings().detach()
    sem4 = model.text_items.semantic[4]
    torch.testing.assert_close(E[42], sem4)  # text only: no ID part
    path = save_checkpoint(tmp_path / "ckpt", model, model.cfg, model.num_items)
    loaded, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded.score(seq).detach(), after)


def test_a_free_table_cannot_add_items():
    model = SeqRecModel(ModelConfig(name="sasrec", d=16, heads=2), 10)
    with pytest.raises(ValueError, match="item_repr = 'text'"):
        model.add_items(torch.zeros(1, D))


def test_id_dropout_only_in_training():
    model = _model(id_dropout=0.5)
    with torch.no_grad():
        model.text_items.id_emb.weight.add_(1.0)
    model.train()
    model.new_step()
    E_train = model.item_embeddings().detach()
    model.eval()
    E_eval = model.item_embeddings().detach()
    dropped = (E_train != E_eval).any(dim=1)
    assert 0 < dropped[1:].float().mean() < 1
    sem = model.text_items.semantic
    torch.testing.assert_close(E_train[dropped], sem[dropped])


def test_excluded_items_get_no_gradient_and_leave_the_softmax():
    """FullCE with held-out items = the CE over the other items, computed by brute force."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(7, 5, generator=g, requires_grad=True)
    E = torch.randn(11, 5, generator=g, requires_grad=True)
    targets = torch.tensor([1, 2, 4, 5, 7, 9, 10])
    held = np.array([3, 6, 8])
    loss = FullCE(4, held)(u, targets, E)
    loss.backward()
    keep = torch.tensor([i for i in range(1, 11) if i not in held])
    u2, E2 = u.detach().clone().requires_grad_(), E.detach().clone().requires_grad_()
    logits = u2 @ E2[keep].T
    ref = torch.nn.functional.cross_entropy(logits, torch.searchsorted(keep, targets))
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(u.grad, u2.grad)
    torch.testing.assert_close(E.grad, E2.grad)
    assert E.grad[held].abs().max() == 0


def test_learned_fallback_stands_in_for_every_missing_id_part(tmp_path):
    """id_fallback = learned: dropped (training), held-out and added items all get sem + e_∅;
    the others sem + their own ID part; padding stays zero; e_∅ is trained by the dropped rows
    alone; the checkpoint keeps e_∅ and which items have an ID part."""
    held = torch.tensor([3, 4])
    model = _model(id_dropout=0.5, id_fallback="learned", held=held)
    items = model.text_items
    with torch.no_grad():
        items.id_emb.weight[1:].add_(1.0)
        items.id_unknown.copy_(torch.arange(16.0))
    sem, own, e0 = items.semantic, items.id_emb.weight.detach(), items.id_unknown.detach()
    model.train()
    model.new_step()
    E = model.item_embeddings()
    drop = items._id_drop_mask() & items.has_text
    none = drop | ~items.has_id
    none[0] = False
    assert 0 < drop[1:].float().mean() < 1
    torch.testing.assert_close(E[none].detach(), sem[none] + e0)
    some = ~none
    some[0] = False
    torch.testing.assert_close(E[some].detach(), sem[some] + own[some])
    assert torch.equal(E[0], torch.zeros(16))
    (E * torch.randn_like(E)).sum().backward()
    assert items.id_unknown.grad.abs().sum() > 0
    assert items.id_emb.weight.grad[none].abs().max() == 0  # a dropped row trains e_∅ only
    model.eval()
    E = model.item_embeddings().detach()
    torch.testing.assert_close(E[held], sem[held] + e0)  # held out: e_∅ at evaluation too
    torch.testing.assert_close(E[5], sem[5] + own[5])
    model.add_items(torch.randn(2, D, generator=torch.Generator().manual_seed(4)))
    E = model.item_embeddings().detach()
    torch.testing.assert_close(E[41:], items.semantic[41:] + e0)
    path = save_checkpoint(tmp_path / "ckpt", model, model.cfg, model.num_items)
    loaded, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded.item_embeddings().detach(), E)
    assert torch.equal(loaded.text_items.has_id, items.has_id)


def test_learned_fallback_needs_id_dropout():
    with pytest.raises(ValueError, match="id_fallback"):
        ModelConfig(item_repr="text", id_fallback="learned")


def test_id_dropout_out_of_range_is_a_named_error():
    with pytest.raises(ValueError, match="id_dropout"):
        ModelConfig(item_repr="text", id_dropout=1.0)


def _ridge(T: np.ndarray, A: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference: ridge as least squares on rows augmented with √ρ·I (ρ = λ · mean eigenvalue
    of the centred Gram matrix), the intercept unpenalised through centring."""
    t_mean, a_mean = T.mean(0), A.mean(0)
    Tc, Ac = T - t_mean, A - a_mean
    rho = lam * np.trace(Tc.T @ Tc) / T.shape[1]
    X = np.vstack([Tc, np.sqrt(rho) * np.eye(T.shape[1])])
    Y = np.vstack([Ac, np.zeros((T.shape[1], A.shape[1]))])
    W = np.linalg.lstsq(X, Y, rcond=None)[0]
    return W, a_mean - t_mean @ W


def test_regressed_fallback_predicts_missing_id_parts_from_text(tmp_path):
    """id_fallback = regress: at evaluation, held-out and added items get the ID part a ridge
    regression on the other items predicts from their text (checked against least squares);
    in training they have none; padding stays zero; the map follows the trained weights and
    round-trips through the checkpoint."""
    held = torch.tensor([3, 4, 9])
    model = _model(num_items=60, id_fallback="regress", id_ridge=0.5, held=held)
    items = model.text_items
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # ID parts that partly follow the text, as trained ones do
        items.id_emb.weight[1:] = items.text[1:] @ torch.randn(D, 16, generator=g) * 0.1
        items.id_emb.weight[1:] += torch.randn(60, 16, generator=g) * 0.05 + 0.3
    sem, own = items.semantic, items.id_emb.weight.detach().clone()
    model.train()
    E = model.item_embeddings().detach()
    torch.testing.assert_close(E[held], sem[held])  # training: no ID part for them
    model.eval()
    fit = np.setdiff1d(np.arange(1, 61), held.numpy())
    W, b = _ridge(items.text[fit].double().numpy(), own[fit].double().numpy(), 0.5)
    E = model.item_embeddings().detach()
    expect = items.text[held].double().numpy() @ W + b
    np.testing.assert_allclose(E[held] - sem[held], expect, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(E[fit], sem[fit] + own[fit])  # warm items keep their own
    assert torch.equal(E[0], torch.zeros(16))
    seq = torch.tensor([[0, 3, 5]])  # a held-out item in the input is embedded the same way
    torch.testing.assert_close(model.text_items(seq)[0, 1], E[3])
    model.add_items(items.text[[5]].clone())  # an added item with item 5's text
    E = model.item_embeddings().detach()
    np.testing.assert_allclose(
        E[61] - items.semantic[61], items.text[5].double().numpy() @ W + b, rtol=1e-4, atol=1e-5
    )
    path = save_checkpoint(tmp_path / "ckpt", model, model.cfg, model.num_items)
    loaded, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded.item_embeddings().detach(), E)
    with torch.no_grad():
        items.id_emb.weight[fit] *= 2  # the ID parts move: the next evaluation refits
    model.train().eval()
    torch.testing.assert_close(
        model.item_embeddings().detach()[held] - sem[held],
        2 * torch.from_numpy(expect).float(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_regressed_fallback_in_inference_mode_and_without_warm_items():
    model = _model(id_fallback="regress", held=torch.arange(1, 41))
    with torch.inference_mode():
        model.eval()
        E = model.item_embeddings()
    torch.testing.assert_close(E, model.text_items.semantic)  # nothing to learn from: zero


def test_id_ridge_must_be_positive():
    with pytest.raises(ValueError, match="id_ridge"):
        ModelConfig(item_repr="text", id_fallback="regress", id_ridge=0)
