"""The shared numerics (steerlens.numerics): ROC-AUC against scikit-learn, PCA against a direct SVD."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from steerlens.numerics import PCA, batched_roc_auc, pca, roc_auc


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    npos, nneg = rng.integers(1, 60, size=2)
    pos = rng.integers(0, 6, npos).astype(float)  # few distinct values: many ties
    neg = rng.integers(0, 5, nneg).astype(float)
    want = roc_auc_score(np.r_[np.ones(npos), np.zeros(nneg)], np.r_[pos, neg])
    assert roc_auc(pos, neg) == pytest.approx(want, abs=1e-12)
    assert roc_auc(torch.tensor(pos), list(neg)) == pytest.approx(want, abs=1e-12)
    cont_p, cont_n = rng.normal(0.5, 1, npos), rng.normal(0, 1, nneg)  # no ties
    want = roc_auc_score(np.r_[np.ones(npos), np.zeros(nneg)], np.r_[cont_p, cont_n])
    assert roc_auc(cont_p, cont_n) == pytest.approx(want, abs=1e-12)


def test_roc_auc_extremes_and_errors():
    assert roc_auc([2, 3], [0, 1]) == 1.0
    assert roc_auc([0, 1], [2, 3]) == 0.0
    assert roc_auc([1, 1], [1, 1, 1]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([], [1.0])
    with pytest.raises(ValueError):
        roc_auc([1.0], np.zeros(0))


def test_batched_roc_auc_rows_match_sklearn():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (7, 25), generator=g).float()
    y = torch.zeros(25, dtype=torch.bool)
    y[torch.randperm(25, generator=g)[:11]] = True
    got = batched_roc_auc(scores[:, y], scores[:, ~y])
    assert got.shape == (7,) and got.dtype == torch.float64
    for m in range(7):
        assert float(got[m]) == pytest.approx(roc_auc_score(y.numpy(), scores[m].numpy()), abs=1e-12)


def _random(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 3.0


@pytest.mark.parametrize("center", [True, False, "tensor"])
def test_pca_matches_direct_svd_up_to_sign(center):
    x = _random(40, 9, 0)
    c = x.double().mean(0) * 0.5 if center == "tensor" else center
    r = pca(x, 4, center=c)
    assert isinstance(r, PCA) and r.components.shape == (4, 9) and r.components.dtype == torch.float64
    sub = x.double().mean(0) if center is True else (c if center == "tensor" else torch.zeros(9, dtype=torch.float64))
    assert torch.allclose(r.center, sub)
    _, s, vh = torch.linalg.svd(x.double() - sub, full_matrices=False)
    assert torch.allclose(r.singular_values, s)
    for k in range(4):  # same direction, up to sign
        assert abs(float(r.components[k] @ vh[k])) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(r.components @ r.components.T, torch.eye(4, dtype=torch.float64), atol=1e-10)
    ratio = r.explained_variance_ratio
    assert float(ratio.sum()) == pytest.approx(1.0) and torch.allclose(ratio, s ** 2 / (s ** 2).sum())
    assert r.total_energy == pytest.approx(float((s ** 2).sum()))


def test_pca_sign_convention_is_deterministic():
    x = _random(30, 6, 1)
    a, b = pca(x, 3), pca(-x, 3)  # negating the data flips what the SVD may return, not the result
    assert torch.allclose(a.components, b.components, atol=1e-10)
    idx = a.components.abs().argmax(1)
    assert (a.components.gather(1, idx[:, None]) > 0).all()


def test_pca_rank_cap_and_errors():
    assert pca(torch.randn(3, 8)).components.shape == (3, 8)
    assert pca(torch.randn(3, 8), 10).components.shape == (3, 8)
    assert torch.equal(pca(torch.zeros(4, 3)).explained_variance_ratio, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        pca(torch.randn(5), 1)
    with pytest.raises(ValueError):
        pca(torch.randn(4, 3), 0)
