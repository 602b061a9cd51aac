"""Bootstrap intervals and records."""

import numpy as np
import pytest

from steerlens.evals.stats import Record, bootstrap_ci, summarize


def test_bootstrap_basic_and_seeded():
    v = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    m, lo, hi = bootstrap_ci(v, seed=0)
    assert m == pytest.approx(0.7) and lo < m < hi and 0 <= lo and hi <= 1
    assert bootstrap_ci(v, seed=0) == (m, lo, hi)
    assert bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])


def test_interval_narrows_with_n_and_covers():
    rng = np.random.default_rng(1)
    w_small = np.diff(bootstrap_ci(rng.random(20) < 0.3)[1:])[0]
    w_large = np.diff(bootstrap_ci(rng.random(500) < 0.3)[1:])[0]
    assert w_large < w_small / 2.5
    # coverage of the true rate over repeated samples (percentile bootstrap, n=100)
    hits = 0
    for k in range(200):
        x = rng.random(100) < 0.3
        _, lo, hi = bootstrap_ci(x, seed=k, n_boot=500)
        hits += lo <= 0.3 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_summarize_record_roundtrip():
    r = summarize("m", [1, 0, 1], ids=["a", "b", "c"], split="test", task="t", wall_time_s=1.5, steering="s")
    assert isinstance(r, Record) and r.n == 3 and r.sample_ids == ["a", "b", "c"] and r.split == "test"
    assert Record.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError):
        summarize("m", [1, 0], ids=["a"], split="test", task="t")


def test_paired_difference_pairs_by_key():
    from steerlens.evals.compare import paired_difference

    a = {"x": 1.0, "y": 1.0, "z": 0.0, "only_a": 5.0}
    b = {"x": 0.0, "y": 1.0, "z": 0.0, "only_b": -5.0}
    d = paired_difference(a, b)
    assert d["n"] == 3 and abs(d["value"] - 1 / 3) < 1e-12
    assert d["ci"][0] <= d["value"] <= d["ci"][1]
    with pytest.raises(ValueError, match="no shared"):
        paired_difference({"a": 1.0}, {"b": 1.0})


def test_largest_within_budget():
    from steerlens.evals.compare import largest_within_budget

    res = {1.0: {"over": 0.0, "deg": 0.0}, 2.0: {"over": 0.05, "deg": 0.0}, 4.0: {"over": 0.02, "deg": 0.3},
           8.0: {"over": 0.5, "deg": 0.9}}
    assert largest_within_budget(res, {"over": 0.1, "deg": 0.2}) == 2.0
    assert largest_within_budget(res, {"over": 0.1}) == 4.0
    assert largest_within_budget(res, {"over": 0.01}, baseline={"over": 0.0}, relative=True) == 1.0
    assert largest_within_budget(res, {"over": 0.03, "deg": 0.2}, baseline={"over": 0.02}, relative=True) == 2.0
    assert largest_within_budget(res, {"over": -1.0}) is None


def test_wilson_interval_is_honest_at_the_edges():
    from steerlens.evals.stats import wilson_ci

    p, lo, hi = wilson_ci(0, 32)
    assert p == 0 and lo == 0 and 0.10 < hi < 0.11  # 0/32: upper bound ~0.107, not 0
    p, lo, hi = wilson_ci(32, 32)
    assert p == 1 and hi == 1 and 0.89 < lo < 0.90
    p, lo, hi = wilson_ci(10, 20)
    assert lo < 0.5 < hi and abs((0.5 - lo) - (hi - 0.5)) < 1e-12
    r = summarize("refusal/x", [0.0] * 32, ids=[str(i) for i in range(32)], split="test", task="safety")
    assert r.ci_high > 0.1 and r.extra["ci"] == "wilson" and r.values == [0.0] * 32
    r = summarize("mc2", [0.2, 0.5, 0.7], ids=list("abc"), split="test", task="t")
    assert r.extra["ci"] == "bootstrap"


def test_newcombe_paired_interval():
    from steerlens.evals.stats import paired_ci

    same = [0.0] * 40
    d, lo, hi, how = paired_ci(same, same)
    assert how == "newcombe" and d == 0 and lo < 0 < hi  # no zero-width interval when all pairs agree
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.6).astype(float)
    b = np.where(rng.random(400) < 0.8, a, 1 - a)  # correlated pairs
    d, lo, hi, _ = paired_ci(a, b)
    assert lo < d < hi
    d2, lo2, hi2, _ = paired_ci(b, a)
    assert abs(d + d2) < 1e-12 and abs(lo + hi2) < 1e-9 and abs(hi + lo2) < 1e-9
    bd, blo, bhi = bootstrap_ci(a - b, seed=0)  # large n: close to the bootstrap of the differences
    assert abs(lo - blo) < 0.02 and abs(hi - bhi) < 0.02
    d, lo, hi, how = paired_ci([0.1, 0.4, 0.3], [0.0, 0.1, 0.5])
    assert how == "bootstrap"


def test_continuous_metric_of_zeros_is_not_a_rate():
    """KL values that are all 0 (a gate closed on every prompt) are a mean, not a 0/1 rate: the
    interval is the bootstrap's [0, 0], not Wilson's [0, 0.32] for 0 of 8."""
    from steerlens.evals.compare import paired_difference
    from steerlens.evals.stats import summarize

    guessed = summarize("utility/kl", [0.0] * 8, ids=list("abcdefgh"), split="test", task="utility")
    assert guessed.extra["ci"] == "wilson" and guessed.ci_high > 0.3
    told = summarize("utility/kl", [0.0] * 8, ids=list("abcdefgh"), split="test", task="utility", kind="mean")
    assert told.extra["ci"] == "bootstrap" and (told.ci_low, told.ci_high) == (0.0, 0.0)
    assert told.extra["kind"] == "mean"
    d = paired_difference(dict(zip("abcd", [0.0, 1.0, 0.0, 1.0])), dict(zip("abcd", [0.0] * 4)), kind="mean")
    assert d["ci_method"] == "bootstrap"
    with pytest.raises(ValueError):
        summarize("x", [0.0], ids=["a"], split="test", task="t", kind="median")


def test_error_bars_are_never_negative():
    from steerlens.evals.report import err_bars

    assert err_bars(0.0, 1e-12, 0.5) == [[0.0], [0.5]]  # interval a rounding error above the estimate
    assert err_bars(0.3, 0.1, 0.6) == [[pytest.approx(0.2)], [pytest.approx(0.3)]]
