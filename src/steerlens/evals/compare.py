"""Comparing steering methods: paired differences and matched-strength selection.

Two methods evaluated on the same prompts are compared **paired**: per example the difference of
their values, then the mean and a bootstrap 95% interval of those differences (much tighter than
comparing two independent intervals). A method's strength is chosen on the **val** split by a
budget rule (e.g. the largest alpha whose over-refusal and degenerate rates on harmless val
prompts stay within budget), then reported on test: :func:`largest_within_budget`.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Optional

from .stats import bootstrap_ci


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float], *, seed: int = 0) -> dict:
    """Mean of ``a[k] − b[k]`` over the keys both have, with a bootstrap 95% CI and ``n``.

    Raises ``ValueError`` when the two share no example (nothing to pair)."""
    keys = [k for k in a if k in b]
    if not keys:
        raise ValueError("no shared examples to pair")
    diff = [float(a[k]) - float(b[k]) for k in keys]
    mean, lo, hi = bootstrap_ci(diff, seed=seed)
    return {"value": mean, "ci": [lo, hi], "n": len(diff)}


def largest_within_budget(results: Mapping[float, Mapping[str, float]], budgets: Mapping[str, float],
                          baseline: Optional[Mapping[str, float]] = None, relative: bool = False) -> Optional[float]:
    """The largest strength whose metrics are all within budget (``None`` if none is).

    Args:
        results: ``{alpha: {metric: value}}`` measured on the selection (val) split.
        budgets: ``{metric: max value}``; with ``relative=True`` the budget is added to the
            ``baseline`` (unsteered) value, e.g. over-refusal ≤ unsteered + 0.03.
        baseline: the unsteered model's ``{metric: value}`` (needed with ``relative``).
    """
    ok = []
    for alpha, met in results.items():
        within = True
        for metric, budget in budgets.items():
            v = met.get(metric)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                within = False
                break
            limit = budget + (baseline or {}).get(metric, 0.0) if relative else budget
            if v > limit + 1e-12:
                within = False
                break
        if within:
            ok.append(alpha)
    return max(ok) if ok else None


__all__ = ["paired_difference", "largest_within_budget"]
