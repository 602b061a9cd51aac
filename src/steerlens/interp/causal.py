"""The causal check of a head selection: are the heads REAL (or ITI) calls relevant causally relevant?

:func:`run_causal_check` (``steerlens patch``) on one task:

1. **effect map** on ``split`` (default ``val``): attribution patching of every head's
   mean-ablation on the behaviour metric (safety: log-probability of a refusal opening after
   harmful requests; truthfulness: MC2), ``effect_map.json`` / ``effect_map.png``;
2. **exact check**: exact patching of a set of heads (all, or the strongest half by attribution
   plus a random half) on the first ``exact_n`` examples; Spearman / Pearson between the exact
   and attributed effects on the same examples (``exact_check.json``, ``exact_vs_attribution.png``);
3. **selections** on the ``fit`` split: REAL's relevance (mean held-out AUC over ``repeats`` runs)
   and ITI's held-out probe accuracy for every head;
4. **comparison**: Spearman between each selector's scores and the heads' causal importance
   ``|effect|`` (and the signed effect), and the overlap of the top-H sets (chance level
   ``H² / n_heads``);
5. **ablation** on ``ablate_split`` (default ``test``): the metric with REAL's top-H heads
   mean-ablated together, ITI's top-H, the top-H of the effect map itself, and random H-sets
   (several seeds): change from the clean model per example, mean with bootstrap 95% interval
   and n, paired differences between sets on the same examples.

Everything is written to ``out_dir``: ``effect_map.{json,png}``, ``exact_check.json``,
``comparison.{json,md}``.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..fileio import atomic_write, atomic_write_json, atomic_write_text
from ..hooks import Site
from ..hooks.sites import parse_site
from ..models import as_model
from .metrics import BehaviourMetric, task_metric
from .patching import ablate_heads, attribution_patching, exact_patching, head_means, metric_values


# ------------------------------------------------------------------------------------------------
# rankings
# ------------------------------------------------------------------------------------------------

def grid_of(scores: dict[str, float], n_layers: int, n_heads: int) -> torch.Tensor:
    """``{"blocks.L.attn.hook_z[h]": score}`` -> ``[layers, heads]`` (NaN where missing)."""
    g = torch.full((n_layers, n_heads), float("nan"))
    for k, v in scores.items():
        s = parse_site(k)
        if s.kind == "z" and s.heads and len(s.heads) == 1:
            g[s.layer, s.heads[0]] = float(v)
    return g


def top_heads(grid: torch.Tensor, h: int, tiebreak: Optional[torch.Tensor] = None) -> list[tuple[int, int]]:
    """The ``h`` heads with the highest values (ties: ``tiebreak`` higher first, then layer/head order)."""
    L, H = grid.shape
    tb = torch.zeros_like(grid) if tiebreak is None else tiebreak
    cells = [(l, k) for l in range(L) for k in range(H) if not torch.isnan(grid[l, k])]
    cells.sort(key=lambda c: (-float(grid[c]), -float(tb[c]), c))
    return cells[:h]


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Spearman and Pearson correlation of two ``[layers, heads]`` grids over the heads both have."""
    from scipy.stats import pearsonr, spearmanr

    ok = ~(torch.isnan(a) | torch.isnan(b))
    x, y = a[ok].double().numpy(), b[ok].double().numpy()
    if x.size < 3:
        return {"n_heads": int(x.size), "spearman": float("nan"), "pearson": float("nan")}
    return {"n_heads": int(x.size), "spearman": float(spearmanr(x, y).statistic), "pearson": float(pearsonr(x, y).statistic)}


def _fmt_heads(heads: Sequence[tuple[int, int]]) -> list[str]:
    return [f"L{l}H{h}" for l, h in heads]


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------

def plot_effect_map(grid: torch.Tensor, path: Union[str, os.PathLike], *, title: str = "", label: str = "effect",
                    outlines: Optional[dict[str, tuple[Sequence[tuple[int, int]], str]]] = None) -> Path:
    """Layer x head heatmap of effects (diverging colours centred on 0); ``outlines``:
    ``{name: (heads, colour)}`` drawn as boxes (e.g. REAL's top-H in red, ITI's in blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    L, H = grid.shape
    g = grid.numpy()
    lim = float(np.nanmax(np.abs(g))) or 1.0
    fig, ax = plt.subplots(figsize=(2.2 + 0.5 * H, 1.2 + 0.24 * L))
    im = ax.imshow(g, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    handles = []
    for k, (name, (heads, colour)) in enumerate((outlines or {}).items()):
        pad = 0.08 * k
        for l, h in heads:
            ax.add_patch(Rectangle((h - 0.5 + pad, l - 0.5 + pad), 1 - 2 * pad, 1 - 2 * pad, fill=False,
                                   edgecolor=colour, linewidth=1.4))
        handles.append(Rectangle((0, 0), 1, 1, fill=False, edgecolor=colour, label=name))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08 - 0.5 / L),
                  ncol=len(handles), frameon=False)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(H))
    ax.set_yticks(range(0, L, max(1, L // 15)))
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    out = atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def plot_scatter(x: torch.Tensor, y: torch.Tensor, path: Union[str, os.PathLike], *, xlabel: str, ylabel: str,
                 title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(x.numpy(), y.numpy(), s=10, alpha=0.7)
    lo = float(min(x.min(), y.min()))
    hi = float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    out = atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------

def _summary(values: np.ndarray, seed: int = 0) -> dict:
    from ..evals.stats import bootstrap_ci

    v, lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": v, "ci_low": lo, "ci_high": hi, "n": int(len(values))}


def select_scores(model, task: str, *, heads: int, repeats: Optional[int] = None, fit_n: Optional[int] = None,
                  seed: int = 0, acts_path: Optional[Union[str, os.PathLike]] = None, data_root=None,
                  epochs: int = 20, progress: bool = False, real_runs: Optional[dict] = None,
                  fit_task: Optional[str] = None, real_preset: Optional[str] = None) -> dict[str, dict]:
    """REAL's and ITI's scores for every head on the ``fit`` split of fit task ``fit_task``
    (default: ``task``; one capture, optionally cached in ``acts_path``):
    ``{"real": {"scores", "tiebreak", "std", "selected", "seconds"}, "iti": ...}``.
    ``real_preset``: REAL's parameter preset (e.g. ``"paper"``; ``None``: the defaults).
    ``real_runs`` (``{"auc_runs": [R, M], "sep_runs": [R, M]}``, modules layer-major): REAL's
    per-run results computed before with the same data and settings; the first ``repeats`` runs
    are averaged exactly as :class:`~steerlens.pipeline.methods.real.REALSelector` does."""
    from ..pipeline import make_steerer
    from ..pipeline.actcache import load_acts, save_acts
    from ..pipeline.fitdata import fit_data

    m = as_model(model)
    data = fit_data(fit_task or task, fit_n, seed, data_root)
    real_kw: dict[str, Any] = {"heads": heads, "seed": seed, "vqae": {"epochs": epochs}}
    if repeats is not None:
        real_kw["repeats"] = repeats
    real = make_steerer("real", **real_kw, **({"preset": real_preset} if real_preset else {}))
    t0 = time.perf_counter()
    acts = load_acts(acts_path, data) if acts_path else None
    if acts is None:
        acts = real.read_contrastive(m, data, progress=progress)
        if acts_path:
            save_acts(acts, acts_path, data)
    t_capture = time.perf_counter() - t0
    out: dict[str, dict] = {}
    t0 = time.perf_counter()
    if real_runs is not None:
        from ..pipeline.methods.real.selector import top_h_by_auc

        R = real.selector.params["repeats"]
        auc_runs, sep_runs = real_runs["auc_runs"][:R], real_runs["sep_runs"][:R]
        if auc_runs.shape[0] < R:
            raise ValueError(f"real_runs has {auc_runs.shape[0]} runs; REAL averages {R}")
        mod_sites = real.selector.candidates(m)
        sel = top_h_by_auc(mod_sites, auc_runs.mean(0), heads, f"heldout_auc_{real.selector.params['scorer']}",
                           tiebreak=sep_runs.mean(0))
        mods, sep = [str(x) for x in mod_sites], sep_runs.mean(0)
        std = auc_runs.std(0) if R > 1 else None
    else:
        sel = real.selector.fit(m, acts)
        sep = real.selector.tensors[f"separation_{real.selector.params['scorer']}"]
        mods = real.selector.result_info["modules"]
        std = real.selector.tensors.get(f"auc_std_{real.selector.params['scorer']}")
    out["real"] = {"scores": grid_of(sel.scores, m.n_layers, m.n_heads),
                   "tiebreak": grid_of({k: float(v) for k, v in zip(mods, sep)}, m.n_layers, m.n_heads),
                   "std": None if std is None else grid_of({k: float(v) for k, v in zip(mods, std)}, m.n_layers,
                                                           m.n_heads),
                   "selected": [(s.layer, s.heads[0]) for s in sel.modules], "score_name": sel.score_name,
                   "repeats": real.selector.params["repeats"], "seconds": time.perf_counter() - t0,
                   "from_runs": real_runs is not None}
    iti = make_steerer("iti", heads=heads, seed=seed)
    t0 = time.perf_counter()
    mods_i, acc, isep = iti.selector.score(m, acts)
    isel = iti.selector.fit(m, acts)
    out["iti"] = {"scores": grid_of(isel.scores, m.n_layers, m.n_heads),
                  "tiebreak": grid_of({str(k): float(v) for k, v in zip(mods_i, isep)}, m.n_layers, m.n_heads),
                  "selected": [(s.layer, s.heads[0]) for s in isel.modules], "score_name": isel.score_name,
                  "seconds": time.perf_counter() - t0}
    out["_meta"] = {"n_pairs": len(data), "split": data.split, "capture_seconds": t_capture,
                    "fingerprint": data.fingerprint()}
    return out


def run_causal_check(model, task: str, out_dir: Union[str, os.PathLike], *, split: str = "val", n: int = 64,
                     mode: str = "mean", batch_size: int = 32, exact_n: int = 16,
                     exact_heads: Union[str, int] = 32, heads: int = 16, repeats: Optional[int] = None,
                     fit_n: Optional[int] = None, acts_path=None, ablate_split: str = "test", ablate_n: int = 64,
                     random_sets: int = 5, seed: int = 0, data_root=None, metric_kw: Optional[dict] = None,
                     epochs: int = 20, compare: bool = True, progress: bool = True, resume: bool = True,
                     real_runs: Optional[dict] = None, fit_task: Optional[str] = None,
                     real_preset: Optional[str] = None) -> dict:
    """See the module docstring. ``exact_heads``: ``"all"`` or a number of heads (half the
    strongest by attribution, half at random). ``resume``: reuse the effect map and the exact
    check already in ``out_dir`` when they were computed on the same examples with the same
    settings. ``real_runs``: REAL's per-run held-out AUCs and d' (``{"auc_runs": [R, M],
    "sep_runs": [R, M]}``, e.g. from ``benchmarks/bench_select_stability.py`` with the same data,
    seed and settings) instead of training the autoencoders again. ``fit_task`` / ``real_preset``:
    the selections' fit data and REAL's preset (:func:`select_scores`). Returns the comparison dict
    (also written)."""
    m = as_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(metric_kw or {})
    if task == "truthfulness":
        kw.setdefault("max_true", 2)
        kw.setdefault("max_false", 2)
    L, H = m.n_layers, m.n_heads
    log = (lambda *a: print(*a, flush=True)) if progress else (lambda *a: None)

    # 1. effect map (attribution); resumed from out_dir when the same examples and settings were mapped
    metric = task_metric(task, split, n, seed, data_root, **kw)
    em_path, means_path = out / "effect_map.json", out / "head_means.pt"
    prev = json.loads(em_path.read_text()) if resume and em_path.exists() else None
    if prev is not None and (prev.get("ids"), prev.get("mode"), prev.get("metric_kw"), prev.get("task")) == (
            list(metric.ids), mode, kw, task):
        effect = torch.tensor([[float("nan") if v is None else v for v in row] for row in prev["grid"]])
        n_effect, attr_seconds = int(prev["n"]), float(prev["seconds"])
        means = torch.load(means_path) if means_path.exists() else None
        if means is None:
            means = head_means(m, metric, batch_size=batch_size)
        log(f"effect map: reused {em_path} ({n_effect} examples, computed in {attr_seconds:.1f}s)")
    else:
        em, means = attribution_patching(m, metric, mode=mode, batch_size=batch_size, progress=progress)
        effect, n_effect, attr_seconds = em.mean(), em.n, em.seconds
        log(f"attribution patching: {L * H} heads x {len(metric)} examples ({len(metric.items)} items) "
            f"in {em.seconds:.1f}s")
        em_json = em.to_json()
        em_json.update({"task": task, "split": split, "metric_kw": kw, "seed": seed})
        atomic_write_json(em_path, em_json)
    atomic_write(means_path, lambda tmp: torch.save(means, tmp))

    # 2. exact check on a subset of examples and heads (attribution recomputed on the same examples)
    sub_idx = list(range(min(exact_n, len(metric))))
    sub = metric.subset(sub_idx)
    ex_path = out / "exact_check.json"
    prev = json.loads(ex_path.read_text()) if resume and ex_path.exists() else None
    if prev is not None and prev.get("ids") == list(sub.ids) and prev.get("request") == str(exact_heads):
        exact_json = prev
        log(f"exact check: reused {ex_path}")
    else:
        em_sub, _ = attribution_patching(m, sub, mode=mode, means=means, batch_size=batch_size)
        attr_sub = em_sub.mean()
        if exact_heads == "all":
            chosen = [(l, h) for l in range(L) for h in range(H)]
        else:
            k = int(exact_heads)
            by_abs = top_heads(attr_sub.abs(), k // 2)
            rest = [(l, h) for l in range(L) for h in range(H) if (l, h) not in by_abs]
            chosen = sorted(by_abs + random.Random(seed).sample(rest, k - len(by_abs)))
        ex = exact_patching(m, sub, chosen, mode=mode, means=means, base=em_sub.base, batch_size=batch_size,
                            progress=progress)
        ex_mean = ex.mean()
        agree = agreement(attr_sub, ex_mean)
        agree_abs = agreement(attr_sub.abs(), ex_mean.abs())
        log(f"exact patching: {len(chosen)} heads x {len(sub)} examples in {ex.seconds:.1f}s; "
            f"Spearman(attribution, exact) = {agree['spearman']:.3f}")
        exact_json = {"heads": _fmt_heads(chosen), "request": str(exact_heads), "ids": list(sub.ids),
                      "selection": "all" if exact_heads == "all" else
                      f"{len(chosen) // 2} strongest by |attribution| + {len(chosen) - len(chosen) // 2} random "
                      f"(seed {seed})",
                      "n_examples": len(sub), "signed": agree, "absolute": agree_abs, "seconds": ex.seconds,
                      "seconds_per_head": ex.seconds / max(1, len(chosen)), "attribution_seconds": em_sub.seconds,
                      "pairs": [{"head": f"L{l}H{h}", "attribution": float(attr_sub[l, h]),
                                 "exact": float(ex_mean[l, h])} for l, h in chosen]}
        atomic_write_json(ex_path, exact_json)
    xs = torch.tensor([p["attribution"] for p in exact_json["pairs"]])
    ys = torch.tensor([p["exact"] for p in exact_json["pairs"]])
    plot_scatter(xs, ys, out / "exact_vs_attribution.png", xlabel="attribution estimate", ylabel="exact effect",
                 title=f"{metric.name}, {len(xs)} heads x {exact_json['n_examples']} examples: Spearman "
                       f"{exact_json['signed']['spearman']:.2f}")

    importance = effect.abs()
    result: dict[str, Any] = {"task": task, "metric": metric.name, "mode": mode, "effect_split": split,
                              "n_effect": n_effect, "heads": heads, "exact_check": {k: exact_json[k] for k in (
                                  "selection", "n_examples", "signed", "absolute", "seconds_per_head")},
                              "attribution_seconds": attr_seconds, "chance_overlap": heads * heads / (L * H),
                              "n_heads_total": L * H}
    outlines: dict = {}
    if compare:
        # 3. selections
        sels = select_scores(m, task, heads=heads, repeats=repeats, fit_n=fit_n, seed=seed, acts_path=acts_path,
                             data_root=data_root, epochs=epochs, progress=progress, real_runs=real_runs,
                             fit_task=fit_task, real_preset=real_preset)
        result["selections"] = {k: {"selected": _fmt_heads(v["selected"]), "score_name": v["score_name"],
                                    "seconds": v["seconds"], **({"repeats": v["repeats"]} if "repeats" in v else {})}
                                for k, v in sels.items() if k != "_meta"}
        result["fit_data"] = sels["_meta"]
        for k in ("real", "iti"):  # how easy the reading is: REAL's saturation check reads these
            g = sels[k]["scores"][~torch.isnan(sels[k]["scores"])]
            result["selections"][k]["score_summary"] = {"max": float(g.max()), "median": float(g.median()),
                                                        "frac_ge_0.99": float((g >= 0.99).float().mean())}
        outlines = {f"REAL top-{heads}": (sels["real"]["selected"], "black"),
                    f"ITI top-{heads}": (sels["iti"]["selected"], "limegreen")}
        # 4. rank agreement with causal importance
        causal_top = top_heads(importance, heads)
        table = []
        for name in ("real", "iti"):
            sc = sels[name]["scores"]
            row = {"selector": name, "score": sels[name]["score_name"],
                   "vs_abs_effect": agreement(sc, importance), "vs_effect": agreement(sc, effect),
                   "top_overlap": len(set(sels[name]["selected"]) & set(causal_top))}
            table.append(row)
        table.append({"selector": "real_vs_iti", "score": "scores", "vs_abs_effect": agreement(
            sels["real"]["scores"], sels["iti"]["scores"]), "vs_effect": None,
            "top_overlap": len(set(sels["real"]["selected"]) & set(sels["iti"]["selected"]))})
        if sels["real"]["std"] is not None:
            result["real_auc_std"] = {"mean": float(torch.nanmean(sels["real"]["std"])),
                                      "max": float(sels["real"]["std"][~torch.isnan(sels["real"]["std"])].max())}
        result["rank_agreement"] = table
        result["causal_top"] = _fmt_heads(causal_top)

        # the map and the rank agreement are written now: the ablation below is the long part
        plot_effect_map(effect, out / "effect_map.png", outlines=outlines, label=f"Δ {metric.name}",
                        title=f"{task}: {mode}-ablating each head, Δ {metric.name}\n(attribution patching, "
                              f"n={n_effect} {split} examples)")
        atomic_write_json(out / "comparison.json", {**result, "ablation": None})

        # 5. ablation on held-out examples; each set's per-example values are kept in
        # ablation_values.json as soon as they exist, so a stopped run resumes where it was
        ab_metric = task_metric(task, ablate_split, ablate_n, seed, data_root, **kw)
        # the positive control: the heads whose single ablation lowers the metric most (by |effect|
        # the top set mixes signs, and its effects can cancel when ablated together)
        lowering = top_heads(-effect, heads)
        result["causal_lowering"] = _fmt_heads(lowering)
        sets = {f"REAL top-{heads}": sels["real"]["selected"], f"ITI top-{heads}": sels["iti"]["selected"],
                f"effect-map top-{heads}": causal_top, f"effect-map most lowering {heads}": lowering}
        all_heads = [(l, h) for l in range(L) for h in range(H)]
        rand = {f"random-{heads} seed {s}": random.Random(1000 + s).sample(all_heads, heads) for s in range(random_sets)}
        av_path = out / "ablation_values.json"
        key = {"ids": list(ab_metric.ids), "mode": mode, "metric_kw": kw, "task": task}
        store = json.loads(av_path.read_text()) if resume and av_path.exists() else {}
        if store.get("key") != key:
            store = {"key": key, "values": {}}
        vals_of = store["values"]

        def run_set(name: str, hs) -> torch.Tensor:
            tag = "base" if hs is None else f"{name} {_fmt_heads(hs)}"
            if tag in vals_of:
                log(f"ablate {name}: reused from {av_path}")
                return torch.tensor(vals_of[tag], dtype=torch.float64)
            v = (metric_values(m, ab_metric, batch_size=batch_size, progress=progress) if hs is None else
                 ablate_heads(m, ab_metric, hs, mode=mode, means=means, batch_size=batch_size))
            vals_of[tag] = [float(x) for x in v]
            atomic_write_json(av_path, store)
            return v.double()

        base = run_set("base", None)
        deltas = {}
        for name, hs in {**sets, **rand}.items():
            deltas[name] = (run_set(name, hs) - base).numpy()
            log(f"ablate {name}: change {deltas[name].mean():+.4f}")
        rand_mean = np.mean([deltas[k] for k in rand], axis=0)
        ablation = {"split": ablate_split, "n": len(ab_metric), "base": _summary(base.double().numpy()),
                    "sets": {k: {**_summary(v), "heads": _fmt_heads(({**sets, **rand})[k])} for k, v in deltas.items()},
                    "random_mean": _summary(rand_mean),
                    "paired": {f"{a} - random mean": _summary(deltas[a] - rand_mean) for a in sets}}
        names = list(sets)
        ablation["paired"][f"{names[0]} - {names[1]}"] = _summary(deltas[names[0]] - deltas[names[1]])
        result["ablation"] = ablation
    plot_effect_map(effect, out / "effect_map.png", outlines=outlines, label=f"Δ {metric.name}",
                    title=f"{task}: {mode}-ablating each head, Δ {metric.name}\n(attribution patching, "
                          f"n={n_effect} {split} examples)")
    result["files"] = {k: str(out / f) for k, f in (("effect_map_png", "effect_map.png"),
                                                    ("effect_map_json", "effect_map.json"),
                                                    ("exact_check", "exact_check.json"),
                                                    ("comparison_json", "comparison.json"),
                                                    ("comparison_md", "comparison.md"))}
    atomic_write_json(out / "comparison.json", result)
    atomic_write_text(out / "comparison.md", comparison_markdown(result))
    return result


def _ci(d: dict, digits: int = 4) -> str:
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}] (n={d['n']})"


def comparison_markdown(r: dict) -> str:
    """The comparison table (``comparison.md``)."""
    lines = [f"# Causal check of head selection: {r['task']} ({r['metric']}, {r['mode']}-ablation)", ""]
    ec = r["exact_check"]
    lines += [f"Effect map: attribution patching, {r['n_effect']} examples of `{r['effect_split']}`, "
              f"{r['attribution_seconds']:.1f}s.",
              f"Exact check ({ec['selection']}, {ec['n_examples']} examples): Spearman "
              f"{ec['signed']['spearman']:.3f} (signed), {ec['absolute']['spearman']:.3f} (|effect|); Pearson "
              f"{ec['signed']['pearson']:.3f}; {ec['seconds_per_head']:.1f}s per head exactly.", ""]
    if "rank_agreement" in r:
        H = r["heads"]
        lines += [f"## Selector scores vs causal importance ({r['n_heads_total']} heads; top-{H} overlap, chance "
                  f"{r['chance_overlap']:.2f})", "",
                  "| selector | score | Spearman vs \\|effect\\| | Spearman vs effect | top-H overlap |",
                  "|---|---|---|---|---|"]
        for row in r["rank_agreement"]:
            ve = row["vs_effect"]
            lines.append(f"| {row['selector']} | {row['score']} | {row['vs_abs_effect']['spearman']:.3f} | "
                         f"{'' if ve is None else format(ve['spearman'], '.3f')} | {row['top_overlap']}/{H} |")
        ab = r["ablation"]
        lines += ["", f"## Ablating H={H} heads together on `{ab['split']}` (change of {r['metric']}, mean "
                  f"[95% bootstrap CI])", "", f"Clean: {_ci(ab['base'])}", "",
                  "| heads ablated | change |", "|---|---|"]
        for k, v in ab["sets"].items():
            lines.append(f"| {k} | {_ci(v)} |")
        lines.append(f"| mean of the random sets | {_ci(ab['random_mean'])} |")
        lines += ["", "Paired differences (same examples):", ""]
        for k, v in ab["paired"].items():
            lines.append(f"- {k}: {_ci(v)}")
    return "\n".join(lines) + "\n"


__all__ = ["run_causal_check", "select_scores", "plot_effect_map", "agreement", "top_heads", "grid_of",
           "comparison_markdown"]
