"""MoSE diagnostics: per-input routing records, expert weights by input category, and whether the
experts specialise.

- :func:`route_prompts` — per prompt: the expert weights ``a`` (K), ``‖s(q)‖`` and, for a gated
  steerer, the gate's score and decision (one capture pass at the steered layer plus the gate's
  own decision pass; the same numbers the hooks compute in ``generate``).
- :func:`category_weights` — mean expert weights per input category (with n).
- :func:`specialisation` — does the mean routing differ between categories more than chance?
  Statistic = ``Σ_c n_c ‖ā_c − ā‖² / n`` (the between-category spread of the weights); p-value
  by permuting the category labels (seeded), plus the normalised mutual information between
  each input's top expert and its category, and the mean routing entropy (``log K`` = uniform).
- :func:`plot_expert_weights` — one heatmap per data set: categories × experts, mean weight.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ....hooks.activations import capture
from ...errors import PipelineError

UNLABELLED = "(no category)"


def _editor(steerer):
    ed = getattr(steerer, "editor", steerer)
    if not hasattr(ed, "route") or getattr(ed, "module", None) is None:
        raise PipelineError(f"expected a fitted MoSE steerer or editor, got {type(ed).__name__}")
    return ed


def route_prompts(model, steerer, prompts: Sequence[str], *, batch_size: int = 16,
                  progress: bool = False) -> list[dict]:
    """Per prompt: ``expert_weights`` (list of K), ``top_expert``, ``s_norm`` and, when the steerer
    has a gate, ``gate_score`` and ``gate_scale`` (the decision: 0 closed, 1 open)."""
    ed = _editor(steerer)
    prompts = list(prompts)
    site = ed.query_module  # the router's input site (query_offset)
    q = capture(model, prompts, [site], "last", batch_size=batch_size, progress=progress)[site]
    s, a = ed.route(q)
    out = [{"expert_weights": [round(float(x), 6) for x in a[i]], "top_expert": int(a[i].argmax()),
            "s_norm": float(s[i].norm())} for i in range(len(prompts))]
    gate = getattr(steerer, "gate", None)
    if gate is not None and not gate.always_open:
        dec = steerer.decide(model, prompts, progress=progress)
        for o, sc, sl in zip(out, dec.scores.tolist(), dec.scale.tolist()):
            o["gate_score"], o["gate_scale"] = float(sc), float(sl)
    return out


def _labels(categories: Sequence[Optional[str]]) -> list[str]:
    return [UNLABELLED if c in (None, "") else str(c) for c in categories]


def category_weights(weights, categories: Sequence[Optional[str]], *, min_n: int = 1) -> list[dict]:
    """``[{category, n, mean}]`` (mean expert weights, K floats), largest category first (ties by
    name); categories with fewer than ``min_n`` inputs are pooled into ``"(other)"``."""
    w = np.asarray(weights, dtype=np.float64)
    cats = _labels(categories)
    if w.ndim != 2 or w.shape[0] != len(cats):
        raise PipelineError(f"weights {w.shape} do not match {len(cats)} categories")
    counts = Counter(cats)
    cats = [c if counts[c] >= min_n else "(other)" for c in cats]
    counts = Counter(cats)
    order = sorted(counts, key=lambda c: (-counts[c], c))
    arr = np.asarray(cats)
    return [{"category": c, "n": int(counts[c]), "mean": [round(float(x), 6) for x in w[arr == c].mean(0)]}
            for c in order]


def _between(w: np.ndarray, codes: np.ndarray, n_cat: int) -> float:
    tot = w.mean(0)
    sums = np.zeros((n_cat, w.shape[1]))
    np.add.at(sums, codes, w)
    ns = np.bincount(codes, minlength=n_cat).astype(float)
    means = sums / np.maximum(ns, 1)[:, None]
    return float((ns * ((means - tot) ** 2).sum(1)).sum() / w.shape[0])


def specialisation(weights, categories: Sequence[Optional[str]], *, n_perm: int = 1000, seed: int = 0) -> dict:
    """Between-category spread of the expert weights vs a label-permutation null (module docstring)."""
    from sklearn.metrics import normalized_mutual_info_score

    w = np.asarray(weights, dtype=np.float64)
    cats = _labels(categories)
    if w.shape[0] != len(cats) or w.shape[0] < 2:
        raise PipelineError(f"need one category per input and at least 2 inputs ({w.shape[0]} vs {len(cats)})")
    uniq = sorted(set(cats))
    codes = np.asarray([uniq.index(c) for c in cats])
    obs = _between(w, codes, len(uniq))
    rng = np.random.default_rng(seed)
    null = np.asarray([_between(w, rng.permutation(codes), len(uniq)) for _ in range(int(n_perm))])
    k = w.shape[1]
    ent = -(w * np.log(np.clip(w, 1e-12, None))).sum(1)
    top = w.argmax(1)
    return {"statistic": obs, "null_mean": float(null.mean()), "null_q95": float(np.quantile(null, 0.95)),
            "p_value": float((1 + (null >= obs).sum()) / (1 + len(null))), "n_perm": int(n_perm),
            "n": int(w.shape[0]), "n_categories": len(uniq), "k": int(k),
            "nmi_top_expert_category": float(normalized_mutual_info_score(codes, top)),
            "top_expert_counts": np.bincount(top, minlength=k).tolist(),
            "mean_entropy": float(ent.mean()), "uniform_entropy": math.log(k) if k > 0 else 0.0}


def plot_expert_weights(panels: dict, path, *, min_n: int = 3, title: Optional[str] = None) -> Path:
    """One heatmap per panel ``name -> (weights [n, K], categories)``: mean weight of each expert
    (columns) per input category (rows, with n; categories under ``min_n`` pooled as "(other)"),
    last row = all inputs. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ....fileio import atomic_savefig

    rows = {}
    for name, (w, cats) in panels.items():
        w = np.asarray(w, dtype=np.float64)
        tab = category_weights(w, cats, min_n=min_n)
        tab.append({"category": "all", "n": int(w.shape[0]), "mean": w.mean(0).tolist()})
        rows[name] = tab
    heights = [max(2.0, 0.32 * len(t) + 1.2) for t in rows.values()]
    width = max(5.0, 1.2 + 0.75 * max(len(t[0]["mean"]) for t in rows.values()) + 3.0)
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, tab) in zip(axes[:, 0], rows.items()):
        m = np.asarray([r["mean"] for r in tab])
        im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(1e-9, float(m.max())))
        ax.set_yticks(range(len(tab)))
        ax.set_yticklabels([f"{r['category'][:34]} (n={r['n']})" for r in tab], fontsize=7)
        ax.set_xticks(range(m.shape[1]))
        ax.set_xticklabels([f"E{j}" for j in range(m.shape[1])], fontsize=8)
        ax.axhline(len(tab) - 1.5, color="w", lw=1.5)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if m[i, j] < 0.6 * m.max() else "k")
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    fig.suptitle(title or "MoSE: mean expert weight by input category", fontsize=9)
    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return Path(out)


__all__ = ["route_prompts", "category_weights", "specialisation", "plot_expert_weights", "UNLABELLED"]
