"""Comparing steering methods: paired differences and matched-strength selection.

Two methods evaluated on the same prompts are compared **paired**: per example the difference of
their values, then the mean and a bootstrap 95% interval of those differences (much tighter than
comparing two independent intervals). A method's strength is chosen on the **val** split by a
budget rule (e.g. the largest alpha whose over-refusal and degenerate rates on harmless val
prompts stay within budget), then reported on test: :func:`largest_within_budget`.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Optional, Sequence

from .stats import Record, paired_ci


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float], *, seed: int = 0,
                      kind: Optional[str] = None) -> dict:
    """Mean of ``a[k] − b[k]`` over the keys both have, with a 95% CI (Newcombe's paired score
    interval for 0/1 values, bootstrap otherwise) and ``n``.

    Raises ``ValueError`` when the two share no example (nothing to pair)."""
    keys = [k for k in a if k in b]
    if not keys:
        raise ValueError("no shared examples to pair")
    d, lo, hi, how = paired_ci([a[k] for k in keys], [b[k] for k in keys], seed=seed, kind=kind)
    return {"value": d, "ci": [lo, hi], "n": len(keys), "ci_method": how}


def record_values(r: Record) -> dict:
    """``{sample id: value}`` of a record (needs the per-example values)."""
    if r.values is None:
        raise ValueError(f"{r.metric} ({r.steering}) has no per-example values to pair")
    return dict(zip(r.sample_ids, r.values))


def paired_table(records: Sequence[Record], base: str, *, metrics: Optional[Sequence[str]] = None) -> list[dict]:
    """Per configuration other than ``base`` and per metric both have: the paired difference
    ``config − base`` over their shared examples (one row each)."""
    by = {(r.steering, r.metric): r for r in records}
    configs = list(dict.fromkeys(r.steering for r in records))
    rows = []
    for c in configs:
        if c == base:
            continue
        for m in dict.fromkeys(r.metric for r in records if r.steering == c):
            if metrics is not None and m not in metrics:
                continue
            if (base, m) not in by or by[(c, m)].values is None or by[(base, m)].values is None:
                continue
            d = paired_difference(record_values(by[(c, m)]), record_values(by[(base, m)]),
                                  kind=by[(c, m)].extra.get("kind") or by[(base, m)].extra.get("kind"))
            rows.append({"config": c, "base": base, "metric": m, "value": by[(c, m)].value,
                         "base_value": by[(base, m)].value, "diff": d["value"], "ci": d["ci"], "n": d["n"],
                         "ci_method": d["ci_method"],
                         # what the difference is of, when the values are not the metric itself
                         "diff_of": by[(c, m)].extra.get("values", m)})
    return rows


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


__all__ = ["paired_difference", "paired_table", "record_values", "largest_within_budget"]
