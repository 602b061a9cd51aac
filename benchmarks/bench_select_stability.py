"""Stability of head selection: two independent runs of the default ``steerlens select``.

``steerlens select --task truthfulness --heads 16`` with ``--seed 0`` and ``--seed 1`` on the same
data (TruthfulQA ``fit`` split, one true/false answer pair per question, data drawn with seed 0),
compared over the 270 heads of the default model:

- REAL: the relevance (held-out AUC of the Markov scorer on the VQ codes) averaged over
  ``repeats`` runs (folds x seeds, :func:`steerlens.pipeline.methods.real.selector.repeat_plan`). Both seeds
  are fitted once with ``--max-repeats`` runs; since the plan of ``R`` runs is the prefix of the plan
  of ``R_max`` runs, every ``R`` in ``--repeats-grid`` is evaluated from prefixes (``R = 1`` is the
  old single-run selection: one fold of a 5-fold partition, one initialisation). The default
  ``repeats`` is checked against the goal: Spearman >= 0.9 and top-16 overlap >= 14/16.
- ITI: the held-out probe accuracy ranking with ``seed`` 0 vs 1 (its split), and ITI vs REAL.

Per head: the spread (std over runs) of REAL's AUC. Time: the capture pass (shared, once), each
REAL run and each ITI fit, so the cost of a default select at each ``R`` is reported.
``projection``: a per-head Gaussian noise model fitted on all runs (:func:`project`), checked on the
measured R and used to project larger R (labelled as a projection). ``--analyse-only`` recomputes
it from the saved runs.

    OMP_NUM_THREADS=1 python benchmarks/bench_select_stability.py --out benchmarks/results/select_stability.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def _selection(modules, auc, sep, h):
    from steerlens.pipeline.selectors import top_h_selection

    return [str(m) for m in top_h_selection(modules, auc, h, "auc", weights="relative", tiebreak=sep).modules]


def _agree(a: torch.Tensor, b: torch.Tensor, sel_a, sel_b) -> dict:
    from scipy.stats import spearmanr

    return {"spearman": float(spearmanr(a.double().numpy(), b.double().numpy()).statistic),
            "top_overlap": len(set(sel_a) & set(sel_b)), "top": len(sel_a)}


def project(auc_runs: torch.Tensor, heads: int, grid=(1, 2, 5, 10, 20, 40), trials: int = 400, seed: int = 0) -> list:
    """A noise model of the averaged relevance, fitted on every run of both seeds: head ``m``'s
    R-run mean is ``mu_m + N(0, sd_m^2 / R)`` (``mu``, ``sd``: mean and std over all runs). Two
    independent selections are simulated per ``R``; the model is checked against the measured
    R values (same JSON) and used to project larger R. A projection, not a measurement."""
    import numpy as np
    from scipy.stats import spearmanr

    mu, sd = auc_runs.double().mean(0).numpy(), auc_runs.double().std(0).numpy()
    rng = np.random.default_rng(seed)
    out = []
    for R in grid:
        sp, ov = [], []
        for _ in range(trials):
            a = mu + rng.standard_normal(mu.size) * sd / np.sqrt(R)
            b = mu + rng.standard_normal(mu.size) * sd / np.sqrt(R)
            sp.append(spearmanr(a, b).statistic)
            ov.append(len(set(np.argsort(-a)[:heads]) & set(np.argsort(-b)[:heads])))
        out.append({"repeats": R, "spearman_mean": float(np.mean(sp)),
                    "top_overlap_p10_p50_p90": [float(x) for x in np.percentile(ov, [10, 50, 90])],
                    "p_overlap_ge_14": float(np.mean(np.array(ov) >= 14))})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/select_stability.json")
    ap.add_argument("--task", default="truthfulness")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--n", type=int, default=None, help="questions (default: the whole fit split)")
    ap.add_argument("--max-repeats", type=int, default=10)
    ap.add_argument("--repeats-grid", default="1,2,5,10")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--model", default=None)
    ap.add_argument("--acts", default=None, help="cache file for the captured activations (reused when present)")
    ap.add_argument("--quick", action="store_true", help="tiny model, few questions (smoke test)")
    ap.add_argument("--analyse-only", action="store_true",
                    help="only (re)compute the projection from the saved runs (<out>.runs.pt) into <out>")
    args = ap.parse_args(argv)
    runs_path = Path(args.out).with_suffix(".runs.pt")
    if args.analyse_only:
        from steerlens.fileio import atomic_write_json

        runs = torch.load(runs_path)
        res = json.loads(Path(args.out).read_text())
        res["projection"] = project(torch.cat([runs[0]["auc_runs"], runs[1]["auc_runs"]]), res["heads"])
        atomic_write_json(Path(args.out), res)
        for row in res["projection"]:
            print(row)
        return 0

    import steerlens
    from steerlens.fileio import atomic_write_json
    from steerlens.pipeline import make_steerer
    from steerlens.pipeline.fitdata import fit_data
    from steerlens.pipeline.methods.real.selector import DEFAULT_REPEATS

    if args.quick:
        args.model, args.n, args.max_repeats, args.repeats_grid, args.epochs, args.heads = \
            "tiny-random", 20, 4, "1,2,4", 2, 3
    grid = [int(x) for x in args.repeats_grid.split(",")]
    if max(grid) > args.max_repeats:
        raise SystemExit("--repeats-grid goes beyond --max-repeats")
    model = steerlens.load_model(args.model)
    data = fit_data(args.task, args.n, 0)
    from steerlens.pipeline.actcache import load_acts, save_acts

    t0 = time.perf_counter()
    acts = load_acts(args.acts, data) if args.acts else None
    cached = acts is not None
    if acts is None:
        acts = make_steerer("real").read_contrastive(model, data, progress=True)
        if args.acts:
            save_acts(acts, args.acts, data)
    t_capture = time.perf_counter() - t0
    print(f"capture: {t_capture:.1f}s{' (from cache)' if cached else ''}", flush=True)

    real = {}
    for seed in (0, 1):
        st = make_steerer("real", heads=args.heads, seed=seed, repeats=args.max_repeats, vqae={"epochs": args.epochs})
        t0 = time.perf_counter()
        mods, res = st.selector.score(model, acts, progress=False)
        real[seed] = {"modules": mods, "auc_runs": res.runs["markov"],  # type: ignore[attr-defined]
                      "sep_runs": res.separation_runs["markov"],  # type: ignore[attr-defined]
                      "seconds": time.perf_counter() - t0}
        print(f"REAL seed {seed}: {args.max_repeats} runs in {real[seed]['seconds']:.1f}s", flush=True)
        torch.save({s: {k: v for k, v in r.items() if k != "modules"} for s, r in real.items()}, runs_path)
    mods = real[0]["modules"]
    out_real = []
    for R in grid:
        # exactly what REALSelector(repeats=R) selects: mean AUC, ties by mean held-out d'
        sc = {s: real[s]["auc_runs"][:R].mean(0) for s in (0, 1)}
        sel = {s: _selection(mods, sc[s], real[s]["sep_runs"][:R].mean(0), args.heads) for s in (0, 1)}
        row = {"repeats": R, **_agree(sc[0], sc[1], sel[0], sel[1]),
               "seconds_per_select": real[0]["seconds"] / args.max_repeats * R,
               "selected_seed0": sel[0], "selected_seed1": sel[1],
               "spread_mean": float(torch.stack([real[s]["auc_runs"][:R].std(0) for s in (0, 1)]).mean())
               if R > 1 else None}
        out_real.append(row)
        print(f"REAL repeats={R}: spearman {row['spearman']:.3f}, top-{args.heads} overlap "
              f"{row['top_overlap']}/{args.heads}, select {row['seconds_per_select']:.1f}s", flush=True)

    iti = {}
    for seed in (0, 1):
        st = make_steerer("iti", heads=args.heads, seed=seed)
        t0 = time.perf_counter()
        sel = st.selector.fit(model, acts)
        iti[seed] = {"scores": torch.tensor([sel.scores[str(m)] for m in mods]),
                     "selected": [str(m) for m in sel.modules], "seconds": time.perf_counter() - t0}
    iti_agree = _agree(iti[0]["scores"], iti[1]["scores"], iti[0]["selected"], iti[1]["selected"])
    print(f"ITI seed 0 vs 1: spearman {iti_agree['spearman']:.3f}, overlap {iti_agree['top_overlap']}/{args.heads}")
    default = next((r for r in out_real if r["repeats"] == DEFAULT_REPEATS), None)
    sc_def = real[0]["auc_runs"][:DEFAULT_REPEATS].mean(0)
    sep_def = real[0]["sep_runs"][:DEFAULT_REPEATS].mean(0)
    real_vs_iti = _agree(sc_def, iti[0]["scores"], _selection(mods, sc_def, sep_def, args.heads), iti[0]["selected"])
    single = real[0]["auc_runs"][0]
    real1_vs_iti = _agree(single, iti[0]["scores"], _selection(mods, single, real[0]["sep_runs"][0], args.heads),
                          iti[0]["selected"])
    spread = real[0]["auc_runs"][:DEFAULT_REPEATS].std(0)
    result = {
        "benchmark": "select_stability", "task": args.task, "model": model.name, "n_pairs": len(data),
        "heads": args.heads, "epochs": args.epochs, "default_repeats": DEFAULT_REPEATS,
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.platform(), "quick": args.quick,
        "capture_cached": cached,
        "seconds": {"capture": t_capture, "real_run": real[0]["seconds"] / args.max_repeats,
                    "iti_fit": [iti[0]["seconds"], iti[1]["seconds"]]},
        "real": out_real, "iti_seed0_vs_seed1": iti_agree,
        "real_vs_iti_seed0": {"default_repeats": real_vs_iti, "single_run": real1_vs_iti},
        "goal": {"spearman": 0.9, "top_overlap": 14,
                 "met_at_default": bool(default and default["spearman"] >= 0.9 and default["top_overlap"] >= 14)},
        "per_head_auc": {str(m): {"mean": float(sc_def[i]), "std": float(spread[i])} for i, m in enumerate(mods)},
        "note": "REAL runs share the captured activations; a select at R repeats costs capture + R x real_run.",
        "projection": project(torch.cat([real[0]["auc_runs"], real[1]["auc_runs"]]), args.heads),
    }
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
