"""Statistics for evaluation results: intervals for rates and means, and the ``Record`` type.

Every reported figure is a :class:`Record` with its n and a 95% interval:

- **rates** (every per-example value is 0 or 1: refusal, MC1, A/B accuracy) get the Wilson score
  interval, which stays honest at 0 and 1 (0 of 32 gives [0, 0.107], not the bootstrap's [0, 0]);
- other means (MC2, KL) get a seeded percentile bootstrap (``n_boot`` resamples, fixed ``seed``).

Paired differences of two methods on the same examples: :func:`paired_ci` (Newcombe's score
interval for paired rates, bootstrap of the differences otherwise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from jaxtyping import Shaped


def _as_values(values) -> np.ndarray:
    v = np.asarray([float(x) for x in values] if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"expected a 1-D list of per-example values, got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError(f"{int(np.isnan(v).sum())} NaN value(s) in per-example values; drop or fix them first")
    return v


def bootstrap_ci(values: Sequence[float | int | bool] | Shaped[np.ndarray, "n"], *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95, stat=np.mean) -> tuple[float, float, float]:
    """``(statistic, ci_low, ci_high)``: the statistic of ``values`` and its percentile bootstrap
    interval at ``level`` (``n_boot`` resamples with replacement, ``numpy`` generator seeded by
    ``seed``). One value gives a zero-width interval; no values raise ``ValueError``."""
    v = _as_values(values)
    if v.size == 0:
        raise ValueError("no values to summarise (empty list)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    point = float(stat(v))
    if v.size == 1 or np.all(v == v[0]):
        return point, point, point
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    boots = stat(v[idx], axis=1) if stat in (np.mean, np.median) else np.array([stat(v[i]) for i in idx])
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return point, float(lo), float(hi)


def is_binary(values) -> bool:
    v = _as_values(values)
    return v.size > 0 and bool(np.all((v == 0) | (v == 1)))


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - (1 - level) / 2)


def wilson_ci(k: float, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """``(rate, low, high)``: ``k`` successes of ``n`` with the Wilson score interval."""
    if n <= 0:
        raise ValueError("no values to summarise (n = 0)")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n], got k={k}, n={n}")
    z = _z(level)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def rate_or_mean_ci(values, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                    kind: Optional[str] = None) -> tuple[float, float, float, str]:
    """``(value, low, high, method)``: Wilson for a rate, the percentile bootstrap for a mean.
    ``kind`` = ``"rate"`` / ``"mean"`` says which the values are; ``None`` guesses from the values
    (0/1 only: a rate). Say it for a continuous metric: KL values that are all 0 (a closed gate)
    are not a rate."""
    v = _as_values(values)
    if kind not in (None, "rate", "mean"):
        raise ValueError(f"kind must be 'rate', 'mean' or None, got {kind!r}")
    if kind == "rate" or (kind is None and is_binary(v)):
        return (*wilson_ci(float(v.sum()), int(v.size), level), "wilson")
    return (*bootstrap_ci(v, n_boot=n_boot, seed=seed, level=level), "bootstrap")


def paired_ci(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
              kind: Optional[str] = None) -> tuple[float, float, float, str]:
    """``(mean difference, low, high, method)`` of paired values ``a[i] − b[i]``.

    For 0/1 values: Newcombe's (1998, method 10) score interval for the difference of paired
    proportions, built from the two Wilson intervals and the correlation of the pairs; it does not
    collapse to zero width when every pair agrees. Otherwise the percentile bootstrap of the
    differences."""
    a, b = _as_values(a), _as_values(b)
    if a.size != b.size:
        raise ValueError(f"paired values of different lengths: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("no pairs")
    if kind == "mean" or not (is_binary(a) and is_binary(b)):
        return (*bootstrap_ci(a - b, n_boot=n_boot, seed=seed, level=level), "bootstrap")
    n = a.size
    both = float(np.sum((a == 1) & (b == 1)))
    only_a = float(np.sum((a == 1) & (b == 0)))
    only_b = float(np.sum((a == 0) & (b == 1)))
    neither = n - both - only_a - only_b
    p1, l1, u1 = wilson_ci(both + only_a, n, level)
    p2, l2, u2 = wilson_ci(both + only_b, n, level)
    denom = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    phi = 0.0 if denom == 0 else (both * neither - only_a * only_b) / math.sqrt(denom)
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return d, max(-1.0, lo), min(1.0, hi), "newcombe"


@dataclass
class Record:
    """One reported figure.

    ``value`` is the metric over ``n`` examples with a 95% interval ``[ci_low, ci_high]`` (Wilson
    for rates, bootstrap otherwise; ``extra["ci"]`` names it); ``split`` and ``sample_ids`` say
    exactly which data it was computed on (so nothing is fitted on test data unknowingly), and
    ``values`` holds the per-example values in the order of ``sample_ids`` (for paired
    comparisons); ``steering`` names the configuration; ``extra`` holds metric-specific details
    (e.g. counts per judge label, unparseable count)."""

    metric: str
    value: float
    n: int
    ci_low: float
    ci_high: float
    split: str
    sample_ids: list[str]
    wall_time_s: float
    task: str
    steering: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)
    values: Optional[list[float]] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        return cls(**d)

    def fmt(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}] (n={self.n})"


def summarize(metric: str, values: Sequence[float], *, ids: Sequence[str], split: str, task: str,
              wall_time_s: float = 0.0, steering: str = "none", extra: Optional[dict] = None,
              n_boot: int = 2000, seed: int = 0, kind: Optional[str] = None) -> Record:
    """A :class:`Record` for the mean of per-example ``values`` (one per id) with its 95% CI
    (Wilson for a rate, bootstrap for a mean; ``kind`` as in :func:`rate_or_mean_ci`, recorded in
    ``extra["kind"]`` so paired differences use the same rule)."""
    values = [float(x) for x in values]
    if len(values) != len(ids):
        raise ValueError(f"{metric}: {len(values)} values but {len(ids)} ids")
    value, lo, hi, how = rate_or_mean_ci(values, n_boot=n_boot, seed=seed, kind=kind)
    if not math.isfinite(value):
        raise ValueError(f"{metric}: non-finite value {value}")
    return Record(metric, value, len(values), lo, hi, split, list(ids), float(wall_time_s), task, steering,
                  {**dict(extra or {}), "ci": how, **({"kind": kind} if kind else {})}, values)


__all__ = ["bootstrap_ci", "wilson_ci", "rate_or_mean_ci", "paired_ci", "is_binary", "Record", "summarize"]
