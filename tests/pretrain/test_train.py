"""Facet pre-training: determinism, the alternating schedule, initial tables, the kNN report,
and the real thing on ml-100k (MiniLM text, first genre + decade)."""

import numpy as np
import pytest

from pretrain.facets import FacetSpec, derive_labels
from pretrain.train import (
    PretrainConfig,
    _knn_accuracy,
    head_alignment,
    initial_embeddings,
    knn_report,
    plain_projection,
    pretrain_facets,
)


def synthetic(n=240, D=32, seed=0, noise=0.5):
    """Two independent facets, each written along its own random directions, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, 4, n), rng.integers(0, 3, n)])
    codebooks = [rng.normal(size=(4, D)), rng.normal(size=(3, D))]
    x = codebooks[0][labels[0]] + codebooks[1][labels[1]] + noise * rng.normal(size=(n, D))
    labels[0, :5] = -1  # a few items without a label for facet 0
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


CFG = PretrainConfig(steps=40, labels_per_batch=3, items_per_label=4, hidden=32, device="cpu")


def test_deterministic_for_a_seed_and_unit_norm_slices():
    x, labels = synthetic()
    a = pretrain_facets(x, labels, 8, CFG, progress=False)
    b = pretrain_facets(x, labels, 8, CFG, progress=False)
    c = pretrain_facets(x, labels, 8, PretrainConfig(**{**CFG.__dict__, "seed": 1}), progress=False)
    assert a.z.shape == (240, 2, 8) and a.z.dtype == np.float32
    assert np.array_equal(a.z, b.z) and a.losses == b.losses
    assert not np.allclose(a.z, c.z)
    assert np.allclose(np.linalg.norm(a.z, axis=2), 1.0, atol=1e-5)
    assert [f for f, _ in a.losses] == [s % 2 for s in range(40)]  # round robin
    for f in (0, 1):  # each facet's own SupCon loss falls on these clustered labels
        own = [loss for g, loss in a.losses if g == f]
        assert np.mean(own[-5:]) < 0.9 * np.mean(own[:5]), own


def test_alternating_step_trains_its_own_facet_only():
    """Facet 0 of a 2-facet run equals a 1-facet run over the same steps of facet 0: the steps
    of facet 1 leave φ_0 (weights, optimiser moments, weight decay) untouched."""
    x, labels = synthetic()
    both = pretrain_facets(x, labels, 8, PretrainConfig(**{**CFG.__dict__, "steps": 9}), False)
    alone = pretrain_facets(x, labels[:1], 8, PretrainConfig(**{**CFG.__dict__, "steps": 5}), False)
    assert np.allclose(both.z[:, 0], alone.z[:, 0], atol=1e-6)
    assert [loss for f, loss in both.losses if f == 0] == pytest.approx(
        [loss for _, loss in alone.losses], rel=1e-5
    )


def test_joint_schedule_sums_all_facets_every_step():
    x, labels = synthetic()
    r = pretrain_facets(
        x, labels, 8, PretrainConfig(**{**CFG.__dict__, "schedule": "joint"}), False
    )
    assert [f for f, _ in r.losses] == [0, 1] * 40


def test_pretraining_separates_the_facets():
    x, labels = synthetic()
    cfg = PretrainConfig(**{**CFG.__dict__, "steps": 200})
    r = pretrain_facets(x, labels, 8, cfg, progress=False)
    assert np.mean([loss for _, loss in r.losses[-20:]]) < np.mean([v for _, v in r.losses[:20]])
    acc = {
        (row["facet"], row["representation"]): row["accuracy"]
        for row in knn_report(x, r.z, labels, ["a", "b"], k=5)
    }
    assert acc[("a", "slice:a")] > acc[("a", "slice:b")] + 0.2
    assert acc[("b", "slice:b")] > acc[("b", "slice:a")] + 0.2


def test_bad_inputs():
    x, labels = synthetic()
    with pytest.raises(ValueError, match=r"labels \(H, n\)"):
        pretrain_facets(x, labels[:, :10], 8, CFG, progress=False)
    bad = labels.copy()
    bad[1] = np.arange(len(x))  # every label held once
    with pytest.raises(ValueError, match="facet 1: no label is held by at least 2 items"):
        pretrain_facets(x, bad, 8, CFG, progress=False)


def test_initial_embeddings_concatenate_slices_at_the_init_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4, 8))
    z /= np.linalg.norm(z, axis=2, keepdims=True)
    e = initial_embeddings(z, 0.02)
    assert e.shape == (50, 32) and e.dtype == np.float32
    assert e.std() == pytest.approx(0.02, rel=1e-4)
    assert np.allclose(e[:, 8:16] / np.linalg.norm(e[:, 8:16], axis=1, keepdims=True), z[:, 1])


def test_plain_projection_is_pca_at_the_init_scale():
    rng = np.random.default_rng(0)
    axis = np.eye(16)[3]
    x = rng.normal(size=(300, 1)) * 5 * axis + rng.normal(size=(300, 16)) * 0.1
    p = plain_projection(x, 4, 0.02, seed=0)
    assert p.shape == (300, 4) and p.std() == pytest.approx(0.02, rel=1e-4)
    first = x @ axis  # the dominant direction comes first, sign fixed
    assert abs(np.corrcoef(p[:, 0], first)[0, 1]) > 0.999
    assert np.array_equal(p, plain_projection(x[:, :], 4, 0.02, seed=0))
    wide = plain_projection(x, 24, 0.02, seed=0)  # more dims than the text has: padded
    assert wide.shape == (300, 24) and np.isfinite(wide).all()


def naive_knn(rep, y, k):
    """Full n×n cosine, leave-one-out, majority vote; ties to the nearest neighbour's label."""
    r = rep / np.linalg.norm(rep, axis=1, keepdims=True)
    sim = r @ r.T
    np.fill_diagonal(sim, -np.inf)
    correct = 0
    for i in range(len(r)):
        nb = np.argsort(-sim[i], kind="stable")[:k]
        counts = np.bincount(y[nb], minlength=y.max() + 1)
        best = np.flatnonzero(counts == counts.max())
        winner = next(y[j] for j in nb if y[j] in best)  # nearest among the tied labels
        correct += winner == y[i]
    return correct / len(r)


def test_knn_accuracy_matches_a_naive_reference_and_chunks_agree(monkeypatch):
    rng = np.random.default_rng(3)
    rep = rng.normal(size=(150, 6)).astype(np.float32)
    y = rng.integers(0, 4, 150)
    full = _knn_accuracy(rep, y, 6)
    assert full == pytest.approx(naive_knn(rep, y, 6))
    import pretrain.train as train

    monkeypatch.setattr(train, "_KNN_CHUNK_BYTES", 7 * 150 * 4)  # 7-row chunks
    assert _knn_accuracy(rep, y, 6) == full


def test_knn_report_rows():
    x, labels = synthetic(n=60)
    z = np.stack([x[:, :8], x[:, 8:16]], axis=1)
    rows = knn_report(x, z, labels, ["a", "b"], k=3, seed=0)
    assert [(r["facet"], r["representation"]) for r in rows] == [
        (f, rep) for f in ("a", "b") for rep in ("slice:a", "slice:b", "text", "random")
    ]
    assert [r["n_items"] for r in rows] == [55] * 4 + [60] * 4
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert rows == knn_report(x, z, labels, ["a", "b"], k=3, seed=0)


@pytest.mark.slow
def test_ml100k_facet_slices_beat_other_slices_and_random(ml100k_items, ml100k_text_emb):
    texts, emb = ml100k_text_emb
    columns = {f: [row[f] for row in ml100k_items] for f in ("title", "year", "genres")}
    specs = [
        FacetSpec(name="first_genre", field="genres", kind="first"),
        FacetSpec(name="decade", field="year", kind="decade"),
    ]
    labels = derive_labels(columns, specs)
    assert (labels >= 0).sum(1).min() > 1600
    cfg = PretrainConfig(steps=300, device="cpu")
    result = pretrain_facets(emb, labels, 16, cfg, progress=False)
    report = knn_report(emb, result.z, labels, [s.name for s in specs], k=10, seed=0)
    print()
    for row in report:
        print(
            f"{row['facet']:12s} {row['representation']:20s} {row['accuracy']:.3f} {row['n_items']}"
        )
    acc = {(r["facet"], r["representation"]): r["accuracy"] for r in report}
    for own, other in (("first_genre", "decade"), ("decade", "first_genre")):
        assert acc[(own, f"slice:{own}")] > acc[(own, f"slice:{other}")] + 0.1
        assert acc[(own, f"slice:{own}")] > acc[(own, "random")] + 0.1
        assert acc[(own, f"slice:{own}")] > acc[(own, "text")]


def _cfg(**kw):
    return PretrainConfig(**{**CFG.__dict__, **kw})


def test_pca_start_begins_at_the_principal_axes():
    """start = "pca": before any update, slice k is the normalized k-th block of d' principal
    components of the text vectors (a near-zero lr leaves it there)."""
    from pretrain.train import pca_axes

    x, labels = synthetic()
    r = pretrain_facets(x, labels, 4, _cfg(start="pca", lr=1e-12, steps=2), progress=False)
    mean, axes = pca_axes(x, 8)
    proj = ((x - mean) @ axes).reshape(len(x), 2, 4)
    want = proj / np.linalg.norm(proj, axis=2, keepdims=True)
    np.testing.assert_allclose(r.z, want, atol=1e-5)
    trained = pretrain_facets(x, labels, 4, _cfg(start="pca", steps=200), progress=False)
    acc = {
        (row["facet"], row["representation"]): row["accuracy"]
        for row in knn_report(x, trained.z, labels, ["a", "b"], k=5)
    }
    assert acc[("a", "slice:a")] > acc[("a", "slice:b")] and acc[("b", "slice:b")] > 0.8
    with pytest.raises(ValueError, match="principal axes"):
        pretrain_facets(x[:, :6], labels, 4, _cfg(start="pca"), progress=False)


def test_keep_text_moves_only_the_trained_facet_and_keeps_more_of_the_text():
    x, labels = synthetic()
    plain = pretrain_facets(x, labels, 8, _cfg(steps=1), progress=False)
    kept = pretrain_facets(x, labels, 8, _cfg(steps=1, keep_text=1.0), progress=False)
    assert np.array_equal(plain.z[:, 1], kept.z[:, 1])  # step 0 trains facet 0 alone
    assert not np.allclose(plain.z[:, 0], kept.z[:, 0])  # ... and the keep term reached it

    # text with a strong item-specific part beyond the facet labels: the table's similarities
    # follow the text's more closely when the text is kept (measured 0.633 vs 0.587)
    x, labels = synthetic(noise=2.0)

    def similarity_corr(z):
        e = z.reshape(len(z), -1)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        upper = np.triu_indices(len(x), 1)
        return np.corrcoef((x @ x.T)[upper], (e @ e.T)[upper])[0, 1]

    without = pretrain_facets(x, labels, 8, _cfg(steps=300), progress=False)
    with_keep = pretrain_facets(x, labels, 8, _cfg(steps=300, keep_text=4.0), progress=False)
    assert similarity_corr(with_keep.z) > similarity_corr(without.z) + 0.02


def test_head_alignment_finds_the_planted_facet():
    """Head h's sub-embeddings are facet (2 - h)'s label centroids plus noise: each head must be
    aligned with exactly that facet, against the majority floor."""
    rng = np.random.default_rng(0)
    n, d, n_facets = 300, 6, 3
    labels = np.stack([rng.integers(0, 4 + 2 * f, n) for f in range(n_facets)])
    centroids = [rng.normal(size=(4 + 2 * f, d)) for f in range(n_facets)]
    sub = np.stack(
        [centroids[2 - h][labels[2 - h]] + 0.3 * rng.normal(size=(n, d)) for h in range(3)]
    ).astype(np.float32)
    rows = head_alignment(sub, labels, ["a", "b", "c"], k=5)
    assert len(rows) == 9
    best = {r["head"]: r["facet"] for r in rows if r["best"]}
    assert best == {0: "c", 1: "b", 2: "a"}
    for r in rows:
        assert r["majority"] == pytest.approx(
            np.bincount(labels["abc".index(r["facet"])]).max() / n
        )
        if r["best"]:
            assert r["accuracy"] > 0.9


def test_knn_neighbours_shared_by_facets_labelling_the_same_items(monkeypatch):
    """head_alignment computes each head's neighbours once per distinct labelled item set,
    with the accuracies of a separate kNN check per (head, facet)."""
    from pretrain import train

    rng = np.random.default_rng(1)
    n, dp = 400, 6
    labels = rng.integers(0, 5, size=(3, n))
    labels[2, :50] = -1  # a facet with missing labels reads other rows
    sub = rng.normal(size=(2, n, dp)).astype(np.float32)
    calls = []
    real = train._knn_neighbours
    monkeypatch.setattr(train, "_knn_neighbours", lambda r, k: calls.append(len(r)) or real(r, k))
    rows = train.head_alignment(sub, labels, ["a", "b", "c"], k=5)
    assert sorted(calls) == [350, 350, 400, 400]  # 2 heads x 2 distinct item sets, not 2 x 3
    for row in rows:
        idx = np.flatnonzero(labels["abc".index(row["facet"])] >= 0)
        y = labels["abc".index(row["facet"]), idx]
        assert row["accuracy"] == _knn_accuracy(sub[row["head"], idx], y, 5)
