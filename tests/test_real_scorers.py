"""REAL's code scorers: Markov log-likelihood ratio, logistic regression, the authors' per-class
GRUs (shifted and unshifted), batched AUC, agreement."""

import math

import numpy as np
import pytest
import torch

from steerlens.pipeline.methods.real.scorers import (
    GRU_DEFAULTS,
    GRUNoShiftScorer,
    GRUScorer,
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
        make_scorer("lstm", 3)
    with pytest.raises(ScorerError, match="not fitted"):
        MarkovScorer(3).score(codes)


def test_ranking_agreement():
    a = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    same = ranking_agreement(a, a, 2)
    assert same["spearman"] == pytest.approx(1.0) and same["top_overlap"] == 2 and same["top_overlap_frac"] == 1.0
    r = ranking_agreement(a, -a, 2)
    assert r["spearman"] == pytest.approx(-1.0) and r["top_overlap"] == 0


# ------------------------------------------------------------------------------------------------
# GRU scorers (the authors' per-class GRU priors, batched over modules)
# ------------------------------------------------------------------------------------------------

def _preferring(n_mod, n, K, seed, frac=0.5, prefer=2):
    """Uniform codes; in class 1 each code is redrawn from 0..prefer-1 with probability ``frac``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    codes = torch.randint(0, K, (n_mod, n, 8), generator=g)
    swap = (torch.rand(n_mod, n, 8, generator=g) < frac) & y.bool().view(1, n, 1)
    return torch.where(swap, torch.randint(0, prefer, (n_mod, n, 8), generator=g), codes), y


@pytest.mark.parametrize("cls", [GRUScorer, GRUNoShiftScorer])
def test_gru_forward_equals_torch_gru(cls):
    """The batched forward of module m is nn.Embedding -> nn.GRU -> nn.Linear with module m's weights."""
    K, H, E = 5, 6, 4
    sc = cls(n_codes=K, hidden=H, emb=E)
    g = torch.Generator().manual_seed(0)
    p = sc._init(3, g)
    codes = torch.randint(0, K, (3, 7, 8), generator=g)
    got = sc._logits(p, sc._inputs(codes))
    for m in range(3):
        emb, gru, lin = torch.nn.Embedding(sc.vocab, E), torch.nn.GRU(E, H, batch_first=True), torch.nn.Linear(H, K)
        with torch.no_grad():
            emb.weight.copy_(p["emb"][m])
            gru.weight_ih_l0.copy_(p["w_ih"][m].T)
            gru.weight_hh_l0.copy_(p["w_hh"][m].T)
            gru.bias_ih_l0.copy_(p["b_ih"][m])
            gru.bias_hh_l0.copy_(p["b_hh"][m])
            lin.weight.copy_(p["w_out"][m].T)
            lin.bias.copy_(p["b_out"][m])
            x = codes[m]
            if sc.shift:  # start token K, then the codes before t
                x = torch.cat([torch.full_like(x[:, :1], K), x[:, :-1]], 1)
            want = lin(gru(emb(x))[0])
        torch.testing.assert_close(got[m], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gru", "gru_noshift"])
def test_gru_separates_classes_and_not_shuffled_labels(name):
    K = 8
    codes, y = _preferring(2, 600, K, seed=1)
    tr, te = torch.arange(600) < 300, torch.arange(600) >= 300
    sc = make_scorer(name, K, hidden=16, emb=16, lr=1e-2).fit(codes[:, tr], y[tr])
    auc = batched_auc(sc.score(codes[:, te]), y[te])
    assert (auc > 0.8).all(), auc
    # labels shuffled over all rows: independent of the codes, on both sides of the split
    shuffled = y[torch.randperm(600, generator=torch.Generator().manual_seed(5))]
    null = batched_auc(make_scorer(name, K, hidden=16, emb=16, lr=1e-2).fit(codes[:, tr], shuffled[tr])
                       .score(codes[:, te]), shuffled[te])
    assert ((null - 0.5).abs() < 0.12).all(), null


def test_gru_noshift_sees_the_code_it_predicts():
    """Codes uniform and independent: nothing is predictable from the past, so a true
    autoregressive model stays at log(1/K) per code, while the authors' unshifted model, whose
    input at t holds code t, learns to copy it (held-out rows)."""
    K = 8
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, K, (2, 800, 8), generator=g)
    y = torch.arange(800) % 2
    tr, te = torch.arange(800) < 600, torch.arange(800) >= 600
    kw = dict(hidden=16, emb=16, lr=1e-2)
    chance = math.log(1 / K)
    copy = GRUNoShiftScorer(K, **kw).fit(codes[:, tr], y[tr]).token_loglik(codes[:, te]).mean()
    true = GRUScorer(K, **kw).fit(codes[:, tr], y[tr]).token_loglik(codes[:, te]).mean()
    assert float(copy) > chance + 1.0, (float(copy), chance)
    assert abs(float(true) - chance) < 0.1, (float(true), chance)


def test_gru_deterministic_given_seed():
    codes, y = _preferring(3, 80, 6, seed=2)
    a = GRUScorer(6, epochs=2, hidden=8, emb=8, seed=4).fit(codes, y).score(codes)
    b = GRUScorer(6, epochs=2, hidden=8, emb=8, seed=4).fit(codes, y).score(codes)
    c = GRUScorer(6, epochs=2, hidden=8, emb=8, seed=5).fit(codes, y).score(codes)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gru_batched_equals_per_module_and_clips_per_model():
    """Modules are trained independently: module m of a batch of 3 equals a batch of module m
    alone (same seed: same initial weights only for module 0, so compare module 0), and the
    gradient clipping of one module does not scale another's."""
    codes, y = _preferring(3, 64, 6, seed=6)
    kw = dict(epochs=2, hidden=8, emb=8, seed=1, grad_clip=1e-3)
    full = GRUScorer(6, **kw).fit(codes, y)
    alone = GRUScorer(6, **kw)
    alone._init = lambda M, g: {k: v[:1] for k, v in GRUScorer._init(alone, 3, g).items()}  # same draws
    alone.fit(codes[:1], y)
    torch.testing.assert_close(full.score(codes)[:1], alone.score(codes[:1]), atol=1e-5, rtol=1e-4)


def test_gru_errors_and_defaults():
    assert {k: getattr(GRUScorer(), k) for k in GRU_DEFAULTS} == GRU_DEFAULTS  # the authors' settings
    assert GRU_DEFAULTS == {"epochs": 10, "hidden": 64, "emb": 64, "lr": 1e-3, "weight_decay": 0.01,
                            "batch_size": 32, "grad_clip": 1.0, "seed": 0}
    assert GRUNoShiftScorer.name == "gru_noshift" and not GRUNoShiftScorer.shift and GRUScorer.shift
    ok = torch.tensor([[[0, 1], [1, 0]]])
    with pytest.raises(ScorerError, match="0..2"):
        GRUScorer(3).fit(torch.tensor([[[0, 3], [1, 1]]]), torch.tensor([1, 0]))
    with pytest.raises(ScorerError, match="both classes"):
        GRUScorer(3).fit(ok, torch.tensor([1, 1]))
    with pytest.raises(ScorerError, match="0..2"):
        GRUNoShiftScorer(3).fit(torch.tensor([[[-1, 0], [1, 1]]]), torch.tensor([1, 0]))
    with pytest.raises(ScorerError, match="not fitted"):
        GRUNoShiftScorer(3).score(ok)
    for bad in ({"epochs": 0}, {"hidden": 0}, {"lr": 0.0}, {"weight_decay": -1.0}, {"batch_size": 1.5}):
        with pytest.raises(ScorerError, match="GRU"):
            GRUScorer(3, **bad)
    sc = GRUScorer(3, epochs=1, hidden=4, emb=4).fit(ok, torch.tensor([1, 0]))
    with pytest.raises(ScorerError, match="fitted on 1 modules, got 2"):
        sc.score(torch.zeros(2, 2, 2, dtype=torch.long))


def test_real_selector_runs_the_gru_scorers(monkeypatch):
    """REALSelector(scorer="gru_noshift", compare="markov") through real_relevance, GRU settings passed on."""
    import steerlens.pipeline.methods.real.selector as S
    from steerlens.pipeline.errors import PipelineError
    from steerlens.pipeline.methods.real.vqae import VQAEConfig

    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(2, 30, 16, generator=g) + 0.7, torch.randn(2, 30, 16, generator=g)
    res = S.real_relevance(pos, neg, VQAEConfig(n_groups=4, n_codes=4, epochs=2), scorers=("gru_noshift", "markov"),
                           scorer_kwargs={"gru_noshift": {"epochs": 2, "hidden": 8}}, progress=False)
    assert set(res.auc) == {"gru_noshift", "markov"} and res.auc["gru_noshift"].shape == (2,)
    assert ((res.auc["gru_noshift"] >= 0) & (res.auc["gru_noshift"] <= 1)).all()

    seen = {}

    def spy(pos, neg, cfg, **kw):
        seen.update(kw)
        return "result"

    monkeypatch.setattr(S, "real_relevance", spy)
    sel = S.REALSelector(scorer="gru_noshift", compare="markov", repeats=1, seed=2, gru={"epochs": 3, "hidden": 8})
    assert sel.params["gru"] == {"epochs": 3, "hidden": 8} and sel.params["compare"] == "markov"
    acts = type("A", (), {"paired": False, "stacked": lambda self, mods: (pos, neg)})()
    sel.candidates = lambda model: ["m0", "m1"]  # type: ignore[method-assign]
    assert sel.score(None, acts) == (["m0", "m1"], "result")
    assert seen["scorers"] == ["gru_noshift", "markov"]
    for name in ("gru", "gru_noshift"):  # the selector's seed offsets the GRU seed as the autoencoders'
        assert seen["scorer_kwargs"][name] == {"epochs": 3, "hidden": 8, "seed": 2000}
    assert "gru" not in S.REALSelector().params  # the default's config as before
    with pytest.raises(PipelineError, match="unknown GRU scorer settings \\['layers'\\]"):
        S.REALSelector(gru={"layers": 2})
    with pytest.raises(PipelineError, match="bad GRU scorer settings"):
        S.REALSelector(gru={"epochs": 0})
    with pytest.raises(PipelineError, match="unknown scorer 'lstm'"):
        S.REALSelector(scorer="lstm")
