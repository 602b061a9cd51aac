"""Statistics for evaluation results: seeded percentile bootstrap and the ``Record`` type.

Every reported figure is a :class:`Record` with its n and a bootstrap 95% interval
(percentile method, ``n_boot`` resamples of the per-example values, fixed ``seed``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from jaxtyping import Float


def _as_values(values) -> np.ndarray:
    v = np.asarray([float(x) for x in values] if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"expected a 1-D list of per-example values, got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError(f"{int(np.isnan(v).sum())} NaN value(s) in per-example values; drop or fix them first")
    return v


def bootstrap_ci(values: Sequence[float] | Float[np.ndarray, "n"], *, n_boot: int = 2000, seed: int = 0,
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


@dataclass
class Record:
    """One reported figure.

    ``value`` is the metric over ``n`` examples with a bootstrap interval ``[ci_low, ci_high]``;
    ``split`` and ``sample_ids`` say exactly which data it was computed on (so nothing is fitted
    on test data unknowingly); ``steering`` names the configuration; ``extra`` holds
    metric-specific details (e.g. counts per judge label, unparseable count)."""

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        return cls(**d)

    def fmt(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}] (n={self.n})"


def summarize(metric: str, values: Sequence[float], *, ids: Sequence[str], split: str, task: str,
              wall_time_s: float = 0.0, steering: str = "none", extra: Optional[dict] = None,
              n_boot: int = 2000, seed: int = 0) -> Record:
    """A :class:`Record` for the mean of per-example ``values`` (one per id) with its CI."""
    values = list(values)
    if len(values) != len(ids):
        raise ValueError(f"{metric}: {len(values)} values but {len(ids)} ids")
    value, lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    if not math.isfinite(value):
        raise ValueError(f"{metric}: non-finite value {value}")
    return Record(metric, value, len(values), lo, hi, split, list(ids), float(wall_time_s), task, steering,
                  dict(extra or {}))


__all__ = ["bootstrap_ci", "Record", "summarize"]
