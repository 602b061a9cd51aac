"""REAL's code scorers: Markov log-likelihood ratio, logistic regression, batched AUC, agreement."""

import math

import numpy as np
import pytest
import torch

from steerlens.pipeline.methods.real.scorers import (
    LogRegScorer,
    MarkovScorer,
    ScorerError,
    batched_auc,
    code_features,
    make_scorer,
    ranking_agreement,
)


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (4, 40), generator=g).float()  # many ties
    y = torch.tensor([1, 0] * 20)
    got = batched_auc(scores, y)
    for m in range(4):
        assert abs(float(got[m]) - roc_auc_score(y.numpy(), scores[m].numpy())) < 1e-6


def test_auc_needs_both_classes():
    with pytest.raises(ScorerError, match="both classes"):
        batched_auc(torch.randn(2, 3), torch.ones(3, dtype=torch.long))


def test_markov_llr_by_hand():
    K = 3
    # one module, two training sequences of length 3 per class
    codes = torch.tensor([[[0, 1, 1], [0, 1, 2], [2, 2, 2], [2, 0, 0]]])
    y = torch.tensor([1, 1, 0, 0])
    a = 0.5
    sc = MarkovScorer(n_codes=K, order=1, smoothing=a).fit(codes, y)
    test = torch.tensor([[[0, 1, 2]]])

    def logp(seqs, seq):
        start = np.full(K, a)
        trans = np.full((K, K), a)
        for s in seqs:
            start[s[0]] += 1
            for p, c in zip(s[:-1], s[1:]):
                trans[p, c] += 1
        start /= start.sum()
        trans /= trans.sum(1, keepdims=True)
        return math.log(start[seq[0]]) + sum(math.log(trans[p, c]) for p, c in zip(seq[:-1], seq[1:]))

    exp = logp([[0, 1, 1], [0, 1, 2]], [0, 1, 2]) - logp([[2, 2, 2], [2, 0, 0]], [0, 1, 2])
    assert abs(float(sc.score(test)[0, 0]) - exp) < 1e-5


def test_markov_order0_is_bag_of_codes():
    codes = torch.tensor([[[0, 1], [1, 1], [2, 2], [2, 0]]])
    y = torch.tensor([1, 1, 0, 0])
    sc = MarkovScorer(n_codes=3, order=0, smoothing=1.0).fit(codes, y)
    # positive unigram counts (+1): [2, 4, 1]/7 ; negative: [2, 1, 4]/7
    exp = math.log(4 / 7) * 2 - math.log(1 / 7) * 2  # sequence [1, 1]
    assert abs(float(sc.score(torch.tensor([[[1, 1]]]))[0, 0]) - exp) < 1e-5
    # order 0 ignores order, order 1 does not
    s01 = sc.score(torch.tensor([[[0, 1], [1, 0]]]))[0]
    assert abs(float(s01[0] - s01[1])) < 1e-6


def test_markov_batched_equals_per_module():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 8, (5, 30, 6), generator=g)
    y = torch.arange(30) % 2
    test = torch.randint(0, 8, (5, 10, 6), generator=g)
    for positional in (False, True):
        full = MarkovScorer(8, positional=positional).fit(codes, y).score(test)
        for m in range(5):
            one = MarkovScorer(8, positional=positional).fit(codes[m:m + 1], y).score(test[m:m + 1])
            torch.testing.assert_close(full[m:m + 1], one)


@pytest.mark.parametrize("features", ["position", "bag"])
def test_logreg_matches_sklearn(features):
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 6, (3, 80, 4), generator=g)
    y = (codes[:, :, 0] < 3).long()[0]  # labels from module 0's first code
    y[:8] = 1 - y[:8]
    sc = LogRegScorer(n_codes=6, C=0.5, features=features).fit(codes, y)
    x = code_features(codes, 6, features).numpy()
    for m in range(3):
        clf = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(x[m], y.numpy())
        np.testing.assert_allclose(sc.score(codes[m:m + 1].expand(3, -1, -1))[m].numpy(),
                                   clf.decision_function(x[m]), atol=2e-3)


def test_informative_module_scores_high():
    g = torch.Generator().manual_seed(2)
    n = 200
    y = torch.arange(n) % 2
    codes = torch.randint(0, 16, (2, n, 8), generator=g)
    codes[0, y == 1, ::2] = torch.randint(0, 4, (int(y.sum()), 4), generator=g)  # module 0: class-dependent
    tr, te = torch.arange(n) < 150, torch.arange(n) >= 150
    for name in ("markov", "logreg"):
        sc = make_scorer(name, 16).fit(codes[:, tr], y[tr])
        auc = batched_auc(sc.score(codes[:, te]), y[te])
        assert auc[0] > 0.9 and abs(float(auc[1]) - 0.5) < 0.2, (name, auc)


def test_bag_features_and_errors():
    codes = torch.tensor([[[0, 0, 2]]])
    assert code_features(codes, 3, "bag").tolist() == [[[2.0, 0.0, 1.0]]]
    with pytest.raises(ScorerError):
        code_features(codes, 3, "ngrams")
    with pytest.raises(ScorerError, match="0..2"):
        MarkovScorer(3).fit(torch.tensor([[[0, 3]]]), torch.tensor([1]))
    with pytest.raises(ScorerError, match="both classes"):
        MarkovScorer(3).fit(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([1, 1]))
    with pytest.raises(ScorerError, match="unknown scorer"):
        make_scorer("gru", 3)
    with pytest.raises(ScorerError, match="not fitted"):
        MarkovScorer(3).score(codes)


def test_ranking_agreement():
    a = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    same = ranking_agreement(a, a, 2)
    assert same["spearman"] == pytest.approx(1.0) and same["top_overlap"] == 2 and same["top_overlap_frac"] == 1.0
    r = ranking_agreement(a, -a, 2)
    assert r["spearman"] == pytest.approx(-1.0) and r["top_overlap"] == 0
