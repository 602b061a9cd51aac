"""The operating-point arithmetic behind experiments/gate_reachability.py."""
import numpy as np

import gate_reachability as g


def test_tpr_at_fpr_allows_exactly_the_fpr_share_of_negatives():
    neg = np.array([0.1, 0.3, 0.6, 0.0, -1, -2, -3, -4, -5, -6])
    pos = np.array([0.5, 0.9, 0.2])
    assert g.tpr_at_fpr(pos, neg, 0.10) == 2 / 3   # one negative (0.6) may score above the threshold
    assert g.tpr_at_fpr(pos, neg, 0.0) == 1 / 3    # none may
    assert g.tpr_at_fpr(pos, neg, 1.0) == 1.0
    assert g.tpr_at_fpr(neg, neg, 0.2) <= 0.2      # a useless score cannot beat its own FPR


def test_oof_scores_separate_separable_data_and_are_deterministic():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (40, 5)), rng.normal(3, 1, (40, 5))]
    y = np.r_[np.zeros(40), np.ones(40)].astype(int)
    s1, s2 = g.oof_scores(X, y, 1.0), g.oof_scores(X, y, 1.0)
    assert np.array_equal(s1, s2)
    assert g.tpr_at_fpr(s1[y == 1], s1[y == 0], 0.05) >= 0.9
