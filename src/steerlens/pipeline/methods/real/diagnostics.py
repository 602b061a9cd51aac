"""Diagnostics for head/module selection: ranking JSON, layer x head heatmap, codebook usage.

Works for any selector that fills ``Selection.scores`` (REAL's AUCs, ITI's probe accuracies);
REAL's fitted state adds per-class code usage and dead codes (``REALSelector.tensors["usage"]``,
``[M, K, 2]``: counts of each code in negative / positive training rows).

A code is *positive-* (*negative-*) dominant when at least ``purity`` (default 0.8) of its uses
are by positive (negative) rows, *shared* otherwise, *dead* when no training row uses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from jaxtyping import Float, Int

from ....fileio import atomic_write
from ....hooks import Site
from ....hooks.sites import parse_site


def usage_summary(usage: Int[torch.Tensor, "M K 2"], purity: float = 0.8) -> dict[str, list]:
    """Per module: dead codes and how many live codes are positive-/negative-dominant or shared."""
    u = usage.double()
    tot = u.sum(-1)
    live = tot > 0
    frac_pos = torch.where(live, u[..., 1] / tot.clamp(min=1), torch.zeros_like(tot))
    pos_dom = live & (frac_pos >= purity)
    neg_dom = live & (frac_pos <= 1 - purity)
    return {"dead": (~live).sum(-1).tolist(), "positive_dominant": pos_dom.sum(-1).tolist(),
            "negative_dominant": neg_dom.sum(-1).tolist(), "shared": (live & ~pos_dom & ~neg_dom).sum(-1).tolist()}


def score_grid(scores: dict[str, float], n_layers: int, n_heads: int) -> Float[torch.Tensor, "L H"]:
    """Layer x head grid of head scores (NaN where a head was not scored)."""
    grid = torch.full((n_layers, n_heads), float("nan"))
    for key, v in scores.items():
        s = parse_site(key)
        if s.is_head and len(s.heads or ()) == 1 and s.layer < n_layers and s.heads[0] < n_heads:  # type: ignore[index]
            grid[s.layer, s.heads[0]] = float(v)  # type: ignore[index]
    return grid


def plot_heatmap(grid: torch.Tensor, path: Union[str, os.PathLike], *, selected: Sequence[Site] = (),
                 title: str = "", label: str = "score") -> Path:
    """Save a layer (rows) x head (columns) heatmap PNG; selected heads are outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    L, H = grid.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * H, 1.0 + 0.22 * L))
    im = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", origin="lower")
    for s in selected:
        if s.is_head:
            for h in s.heads or ():
                ax.add_patch(Rectangle((h - 0.5, s.layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(H))
    ax.set_yticks(range(0, L, max(1, L // 15)))
    ax.set_title(title or label, fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    out = atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def plot_usage(usage: Int[torch.Tensor, "M K 2"], modules: Sequence[str], path: Union[str, os.PathLike],
               *, title: str = "code usage per class") -> Path:
    """Bar charts of per-class code usage for a few modules (e.g. the top selected ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(modules)
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.4 * n + 0.6), squeeze=False)
    K = usage.shape[1]
    for ax, u, name in zip(axes[:, 0], usage, modules):
        ax.bar(torch.arange(K) - 0.2, u[:, 1].numpy(), width=0.4, label="positive", color="tab:blue")
        ax.bar(torch.arange(K) + 0.2, u[:, 0].numpy(), width=0.4, label="negative", color="tab:orange")
        ax.set_ylabel(name, fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("code index")
    fig.tight_layout()
    out = atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out


def selection_report(selection, selector=None, *, n_layers: Optional[int] = None, n_heads: Optional[int] = None) -> dict:
    """The ranking as JSON: every candidate (best first) with its score, selection and weight;
    REAL adds the comparison scorer's AUC, code-usage counts, dead codes and scorer agreement."""
    weights = {str(m): float(w) for m, w in zip(selection.modules, selection.weights)}
    rows = []
    extra: dict = {}
    tensors = getattr(selector, "tensors", {}) or {}
    info = getattr(selector, "result_info", {}) or {}
    mods = info.get("modules", [])
    index = {m: i for i, m in enumerate(mods)}
    compare = getattr(selector, "params", {}).get("compare") if selector is not None else None
    summary = usage_summary(tensors["usage"]) if "usage" in tensors else None
    primary = getattr(selector, "params", {}).get("scorer") if selector is not None else None
    sep = tensors.get(f"separation_{primary}")
    spread = tensors.get(f"auc_std_{primary}")
    ranking = selection.ranking()
    if sep is not None and mods:  # the selector's order: AUC, then held-out d' for ties
        ranking.sort(key=lambda kv: (-kv[1], -float(sep[index[kv[0]]]) if kv[0] in index else 0.0, kv[0]))
    for rank, (key, score) in enumerate(ranking):
        row = {"rank": rank + 1, "module": key, "score": score, "selected": key in weights,
               "weight": weights.get(key, 0.0)}
        if sep is not None and key in index:
            row["separation"] = float(sep[index[key]])
        if spread is not None and key in index:
            row["score_std"] = float(spread[index[key]])
        s = parse_site(key)
        row["layer"] = s.layer
        if s.is_head:
            row["head"] = s.heads[0]  # type: ignore[index]
        i = index.get(key)
        if i is not None:
            if compare and f"auc_{compare}" in tensors:
                row[f"auc_{compare}"] = float(tensors[f"auc_{compare}"][i])
            if summary is not None:
                for k, v in summary.items():
                    row[f"codes_{k}"] = int(v[i])
        rows.append(row)
    if summary is not None:
        extra["dead_codes_mean"] = sum(summary["dead"]) / max(1, len(summary["dead"]))
    for k in ("agreement", "seconds", "final_loss", "n_train", "n_test", "heads", "repeats"):
        if k in info:
            extra[k] = info[k]
    return {"score_name": selection.score_name, "selected": [str(m) for m in selection.modules],
            "weights": [float(w) for w in selection.weights], "ranking": rows, **extra}


def write_selection_report(out_dir: Union[str, os.PathLike], selection, selector=None, *, n_layers: int,
                           n_heads: int, title: str = "", usage_top: int = 6) -> dict[str, str]:
    """Write ``ranking.json``, ``heatmap.png`` (layer x head scores, selected outlined) and, for
    REAL, ``usage.png`` (per-class code usage of the ``usage_top`` best modules) and, when the
    relevance is averaged over several runs, ``spread.png`` (each head's AUC standard deviation
    over the runs; ``score_std`` in the JSON). Returns paths."""
    out = Path(out_dir)
    rep = selection_report(selection, selector, n_layers=n_layers, n_heads=n_heads)
    paths = {"ranking": str(atomic_write(out / "ranking.json",
                                          lambda tmp: Path(tmp).write_text(json.dumps(rep, indent=1))))}
    grid = score_grid(selection.scores, n_layers, n_heads)
    if not torch.isnan(grid).all():
        paths["heatmap"] = str(plot_heatmap(grid, out / "heatmap.png", selected=selection.sites(),
                                            title=title or f"{selection.score_name} (selected in red)",
                                            label=selection.score_name))
    tensors = getattr(selector, "tensors", {}) or {}
    mods = (getattr(selector, "result_info", {}) or {}).get("modules", [])
    primary = (getattr(selector, "params", {}) or {}).get("scorer")
    std = tensors.get(f"auc_std_{primary}")
    if std is not None and mods and float(std.max()) > 0:
        sgrid = score_grid({m: float(v) for m, v in zip(mods, std)}, n_layers, n_heads)
        paths["spread"] = str(plot_heatmap(sgrid, out / "spread.png", selected=selection.sites(),
                                           title=f"std of the held-out AUC over {rep.get('repeats')} "
                                                 "runs (selected in red)", label="AUC std"))
    if "usage" in tensors and mods:
        top = [m for m in (str(s) for s in selection.modules) if m in mods][:usage_top]
        if top:
            idx = [mods.index(m) for m in top]
            paths["usage"] = str(plot_usage(tensors["usage"][idx], top, out / "usage.png"))
    return paths


__all__ = ["usage_summary", "score_grid", "plot_heatmap", "plot_usage", "selection_report", "write_selection_report"]
