"""ODESteer on the default model: layer scan, TruthfulQA vs CAA / ITI / REAL, utility, safety vs
CAA at matched over-refusal, solver and feature ablations, a per-token trace.

    OMP_NUM_THREADS=1 nice -n 5 python experiments/odesteer.py --out runs/odesteer
    python experiments/odesteer.py --out runs/odesteer --stages summary      # tables from results.jsonl

Protocol (TruthfulQA split by question: ``fit`` / ``val`` / ``test`` of steerlens.evals.data):

1. ``layers`` — response-side pairs (question + true vs false answer) of ``--n-fit`` fit questions
   and of ``--n-val-pairs`` val questions, read at candidate layers at the response's last token
   (``response_last``) and as the response mean (``response_mean``). A barrier is fitted on the
   fit pairs per layer, reading and logistic-regression ``C`` (``--barrier-C``) and scored on the
   val pairs (accuracy, AUC). The (reading, layer, C) with the best val AUC is ODESteer's; the
   layer is used for every residual method (ODESteer, CAA).
2. ``truth-val`` — fits ODESteer (chosen reading and C), CAA (response mean, same layer), ITI and REAL
   (H = ``--heads``, one ``hook_z`` capture shared, REAL with ``--real-epochs``) on the fit pairs;
   MC1 / MC2 / A/B on ``--n-val`` val questions, MMLU A/B on the val items and next-token KL on
   Alpaca val prompts for each strength of each method's grid. Each method's strength = the
   project's truthfulness objective (mean of MC1, MC2, A/B) at its best among strengths whose val
   MMLU A/B is at most ``--max-mmlu-drop`` below the unsteered model's on the same items (ties:
   smaller strength). The utility pass runs lazily, best objective first, until one passes.
3. ``truth-test`` — the unsteered model and each method at its chosen strength on ``--n-test``
   test questions: MC1, MC2, A/B, MMLU A/B (``--n-mmlu``) and next-token KL on Alpaca test prompts
   (``--n-kl``). Paired differences ODESteer − X per question (bootstrap 95% intervals); "best
   other method" = the other method with the best *val* objective.
4. ``ablation`` — at the chosen T: (a) barrier values on the val pairs' false-answer activations
   for Euler N ∈ {1, 3, 10}, midpoint and RK4 (N = 10), each against an RK4 N = 100 reference,
   and the RFF barrier; (b) MC1 / MC2 on the first ``--n-ablation`` of the test questions for the
   ``--ablation-variants``.
5. ``safety`` — ODESteer and CAA at layer ``--safety-layer`` fitted on ``--n-safety-fit``
   response-side refusal vs compliance pairs (ODESteer read as the response mean: the compliant
   templates end in list markers, so the last token names the template). Greedy replies
   (``--max-new-tokens``), pattern judge. Strength per method = the largest of its grid whose
   over-refusal on ``--n-harmless-val`` harmless *val* prompts is <= ``--max-over-refusal`` with
   degenerate replies <= ``--max-degenerate``; reported on ``--n-harmful`` harmful and
   ``--n-harmless`` harmless *test* prompts, paired ODESteer − CAA on the harmful prompts.
6. ``trace`` — a per-token trace of one steered reply (barrier before / after) and its plot;
   open-ended replies to a few test questions (unsteered and ODESteer) in
   ``open_generations.jsonl``, ready for a truthfulness judge.
7. ``summary`` — ``summary.json`` and ``summary.md`` from ``results.jsonl``.

Every evaluated configuration appends its per-example values to ``results.jsonl``; a rerun skips
what is already there (so a long run can be resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import steerlens
from steerlens.evals import data as D
from steerlens.evals.judges import get_judge
from steerlens.evals.stats import bootstrap_ci
from steerlens.evals.tasks import ab_values, mc_values
from steerlens.fileio import atomic_write_json, atomic_write_text
from steerlens.hooks import Site
from steerlens.pipeline import ContrastiveActs, load_steerer, make_steerer
from steerlens.pipeline.methods.odesteer import Barrier, evaluate_barrier, fit_barrier, integrate, make_features

READINGS = ("response_last", "response_mean")
STAGES = ("layers", "truth-val", "truth-test", "safety", "trace", "ablation", "summary")


# ------------------------------------------------------------------------------------------------
# bookkeeping


class Results:
    """Append-only JSONL of evaluated configurations; ``has(key)`` lets a rerun skip them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            self.rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        self.keys = {r["key"] for r in self.rows}

    def has(self, key: str) -> bool:
        return key in self.keys

    def add(self, key: str, metrics: dict[str, tuple[list[float], list[str]]], **info) -> None:
        with open(self.path, "a") as fh:
            for metric, (vals, ids) in metrics.items():
                mean, lo, hi = bootstrap_ci(vals, seed=0)
                row = {"key": key, "metric": metric, "value": mean, "ci": [lo, hi], "n": len(vals), "values": vals,
                       "ids": ids, **info}
                fh.write(json.dumps(row) + "\n")
                self.rows.append(row)
        self.keys.add(key)

    def get(self, key: str, metric: str) -> dict | None:
        for r in self.rows:
            if r["key"] == key and r["metric"] == metric:
                return r
        return None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _fmt(r: dict | None, digits: int = 3) -> str:
    if r is None:
        return "–"
    return f"{r['value']:.{digits}f} [{r['ci'][0]:.{digits}f}, {r['ci'][1]:.{digits}f}]"


def paired(a: dict, b: dict) -> dict:
    """Mean of per-example ``a − b`` over shared ids, bootstrap 95% CI."""
    bv = dict(zip(b["ids"], b["values"]))
    d = [x - bv[i] for i, x in zip(a["ids"], a["values"]) if i in bv]
    mean, lo, hi = bootstrap_ci(d, seed=0)
    return {"value": mean, "ci": [lo, hi], "n": len(d)}


# ------------------------------------------------------------------------------------------------
# data and fitting


def tqa_pairs(split: str, n: int | None, seed: int):
    return D.truthfulness_response_pairs(split, n=n, seed=seed)


def contrastive(acts: dict, site: Site, n: int, position: str) -> ContrastiveActs:
    return ContrastiveActs({site: acts[site][:n]}, {site: acts[site][n:]}, position=position, paired=True)


def capture_pairs(model, data, sites, position, batch_size):
    items = list(data.pos) + list(data.neg)
    return steerlens.capture(model, items, sites, position, batch_size=batch_size, progress=True)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from steerlens.fileio import atomic_write

    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ------------------------------------------------------------------------------------------------
# stage 1: layers


def stage_layers(model, args, out: Path) -> dict:
    path = out / "layers.json"
    if path.exists():
        return json.loads(path.read_text())
    fit = tqa_pairs("fit", args.n_fit, args.seed)
    val = tqa_pairs("val", args.n_val_pairs, args.seed)
    sites = [Site.resid(layer) for layer in args.layers]
    acts_path = out / "layer_acts.safetensors"
    tensors = load_tensors(acts_path) if acts_path.exists() else {}
    if not all(f"{p}|{s}|{part}" in tensors for p in READINGS for s in sites for part in ("fit", "val")):
        tensors = {}
        for position in READINGS:
            t0 = time.perf_counter()
            af = capture_pairs(model, fit, sites, position, args.batch_size)
            av = capture_pairs(model, val, sites, position, args.batch_size)
            log(f"layers: captured {position} ({time.perf_counter() - t0:.0f}s)")
            for s in sites:
                tensors[f"{position}|{s}|fit"], tensors[f"{position}|{s}|val"] = af[s], av[s]
        save_tensors(acts_path, tensors)
    nf, nv = len(fit.pos), len(val.pos)
    rows = []
    for position in READINGS:
        for s in sites:
            f, v = tensors[f"{position}|{s}|fit"].float(), tensors[f"{position}|{s}|val"].float()
            for C in args.barrier_C:
                t1 = time.perf_counter()
                bar = fit_barrier(f[:nf], f[nf:], make_features("poly_sketch"), C=C, max_iter=3000)
                secs = time.perf_counter() - t1
                ev = evaluate_barrier(bar, v[:nv], v[nv:])
                tr = evaluate_barrier(bar, f[:nf], f[nf:])
                rows.append({"position": position, "layer": s.layer, "C": C, "val_accuracy": ev["accuracy"],
                             "val_auc": ev["auc"], "train_accuracy": tr["accuracy"], "fit_seconds": secs,
                             "n_fit_pairs": nf, "n_val_pairs": nv, "mean_norm": float(f.norm(dim=-1).mean())})
                log(f"layers: {position} L{s.layer} C={C:g}: val acc {ev['accuracy']:.3f} auc {ev['auc']:.3f} "
                    f"(train acc {tr['accuracy']:.3f})")
    best = max(rows, key=lambda r: (round(r["val_auc"], 4), -r["C"], -r["layer"]))
    res = {"rows": rows, "layer": best["layer"], "read": best["position"], "C": best["C"],
           "rule": "best val AUC of the barrier over (reading, layer, C); ties: smaller C, then earlier layer",
           "n_fit_pairs": nf, "n_val_pairs": nv}
    atomic_write_json(path, res, indent=1)
    return res


def layer_acts(out: Path, position: str, layer: int, part: str) -> torch.Tensor:
    t = load_tensors(out / "layer_acts.safetensors")
    return t[f"{position}|{Site.resid(layer)}|{part}"]


# ------------------------------------------------------------------------------------------------
# stage 2-3: truthfulness


def fit_truth_steerers(model, args, out: Path, choice: dict) -> dict:
    """ODESteer, CAA, ITI, REAL (and FineSteer, with ``--finesteer``) fitted on the same fit questions
    (artifacts cached under out/artifacts)."""
    sts = _fit_main_steerers(model, args, out, choice)
    if args.finesteer:
        sts["finesteer"] = fit_finesteer(model, args, out, choice)
    return sts


def fit_finesteer(model, args, out: Path, choice: dict):
    """FineSteer (SCS gate + MoSE) at ODESteer's layer, on the same fit pairs as the other methods
    (MoSE on the response-mean differences, as CAA; the gate on the fit questions' prompts vs
    harmless Alpaca fit prompts, as in ``experiments/finesteer.py``)."""
    from steerlens.pipeline import SimpleContrastiveData
    from steerlens.pipeline.registry import make_gate

    art = out / "artifacts" / "finesteer"
    if art.exists():
        return load_steerer(art, model=model)
    data = tqa_pairs("fit", args.n_fit, args.seed)
    n = len(data.pos)
    layer = choice["layer"]
    site = Site.resid(layer)
    t0 = time.perf_counter()
    mose = make_steerer("mose", layer=layer, seed=args.seed)
    mose.fit(model, data, acts=contrastive({site: layer_acts(out, "response_mean", layer, "fit")}, site, n,
                                           "response_mean"), progress=True)
    qs = D.load_truthfulqa("fit", args.n_fit, args.seed)
    gate_data = SimpleContrastiveData([q.prompt for q in qs],
                                      [e.prompt for e in D.load_harmless("fit", len(qs), args.seed)],
                                      position="last", ids=[q.id for q in qs], task="truthfulness_prompt")
    st = mose.with_gate(make_gate("scs", layer=layer, seed=args.seed))
    st.method = "finesteer"
    st.fit_gate(model, gate_data, progress=True)
    st.fit_info["fit_seconds_with_captures"] = time.perf_counter() - t0
    st.save(art, model=model)
    return st


def _fit_main_steerers(model, args, out: Path, choice: dict) -> dict:
    art = out / "artifacts"
    names = ("odesteer", "caa", "iti", "real")
    if all((art / n).exists() for n in names):
        return {n: load_steerer(art / n, model=model) for n in names}
    data = tqa_pairs("fit", args.n_fit, args.seed)
    n = len(data.pos)
    layer, read, C = choice["layer"], choice["read"], choice["C"]
    site = Site.resid(layer)
    timing = {}
    t0 = time.perf_counter()
    ode_acts = layer_acts(out, read, layer, "fit")
    mean = layer_acts(out, "response_mean", layer, "fit")
    ode = make_steerer("odesteer", layer=layer, read=read, C=C, max_iter=3000, seed=args.seed)
    ode.fit(model, data, acts=contrastive({site: ode_acts}, site, n, read))
    timing["odesteer_fit_after_capture_s"] = time.perf_counter() - t0
    caa = make_steerer("caa", layer=layer).fit(model, data, acts=contrastive({site: mean}, site, n, "response_mean"))
    from real_vs_iti import fit_both  # experiments/ is on sys.path (this script's folder)

    t0 = time.perf_counter()
    both = fit_both(model, data, args.heads, args.seed, {"vqae": {"epochs": args.real_epochs}})
    timing["iti_real_capture_and_fit_s"] = time.perf_counter() - t0
    sts = {"odesteer": ode, "caa": caa, "iti": both["iti"], "real": both["real"]}
    for name, st in sts.items():
        st.save(art / name, model=model)
    atomic_write_json(out / "fit_timing.json", {**timing, "n_fit_pairs": n, "layer": layer,
                                                "odesteer_editor_stats": ode.editor.stats,
                                                "odesteer_heldout": ode.selector.result_info}, indent=1)
    return sts


def eval_truth(model, res: Results, key: str, edits, qs, ab_exs, args, **info) -> None:
    if res.has(key):
        return
    t0 = time.perf_counter()
    mc1, mc2, n_choices = mc_values(model, qs, edits, batch_size=args.score_batch)
    ids = [q.id for q in qs]
    metrics = {"truthfulqa/mc1": (mc1, ids), "truthfulqa/mc2": (mc2, ids)}
    if ab_exs:
        metrics["truthfulqa/ab"] = (ab_values(model, ab_exs, edits, batch_size=args.score_batch),
                                    [e.meta["question_id"] for e in ab_exs])
    res.add(key, metrics, wall_time_s=time.perf_counter() - t0, n_choices=n_choices, **info)
    log(f"{key}: mc1 {sum(mc1) / len(mc1):.3f} mc2 {sum(mc2) / len(mc2):.3f} ({time.perf_counter() - t0:.0f}s)")


def kl_values(model, prompts: list[str], edits, base_lp: torch.Tensor, batch_size: int) -> list[float]:
    """Per prompt, KL(unsteered ‖ steered) of the next-token distribution (``base_lp``: the
    unsteered log-probabilities of the same prompts)."""
    lp = steerlens.next_token_logprobs(model, prompts, edits, batch_size=batch_size)
    return (base_lp.exp() * (base_lp - lp)).sum(-1).clamp(min=0).tolist()


def eval_utility(model, res: Results, key: str, edits, mmlu, kl_prompts, base_lp, args, **info) -> None:
    if res.has(key):
        return
    t0 = time.perf_counter()
    mm = ab_values(model, mmlu, edits, batch_size=args.score_batch)
    metrics = {"utility/mmlu_ab": (mm, [e.id for e in mmlu])}
    if edits:
        kl = kl_values(model, [e.prompt for e in kl_prompts], edits, base_lp, args.score_batch)
    else:
        kl = [0.0] * len(kl_prompts)
    metrics["utility/kl"] = (kl, [e.id for e in kl_prompts])
    res.add(key, metrics, wall_time_s=time.perf_counter() - t0, **info)
    log(f"{key}: mmlu {sum(mm) / len(mm):.3f} kl {sum(kl) / len(kl):.3f}")


def grids(args) -> dict[str, list[float]]:
    g = {"odesteer": args.ode_T, "caa": args.caa_alphas, "iti": args.iti_alphas, "real": args.real_alphas}
    if getattr(args, "finesteer", False):
        g["finesteer"] = args.finesteer_alphas
    return g


def tqa_eval_sets(split: str, n: int, seed: int):
    qs = D.load_truthfulqa(split, n, seed)
    ab_by_q = {e.meta["question_id"]: e for e in D.load_truthfulqa_ab(split)}
    return qs, [ab_by_q[q.id] for q in qs if q.id in ab_by_q]


def objective(res: Results, key: str) -> float:
    """The project's truthfulness objective (``steerlens.pipeline.sweep.truthfulness_objective``):
    mean of MC1, MC2 and A/B."""
    return sum(res.get(key, m)["value"] for m in ("truthfulqa/mc1", "truthfulqa/mc2", "truthfulqa/ab")) / 3


def val_table(res: Results, max_mmlu_drop: float) -> list[dict]:
    """Every val configuration with its objective and whether it is valid (val MMLU A/B at most
    ``max_mmlu_drop`` below the unsteered model's, as the project's truthfulness sweeps require)."""
    base = res.get("val-utility|none|0", "utility/mmlu_ab")
    rows = []
    for r in res.rows:
        if r.get("stage") != "truth-val" or r["metric"] != "truthfulqa/mc2":
            continue
        u = res.get(f"val-utility|{r['method']}|{r['alpha']:g}", "utility/mmlu_ab")
        kl = res.get(f"val-utility|{r['method']}|{r['alpha']:g}", "utility/kl")
        ok, base_v = (None if u is None else False), None  # None: not evaluated (below the chosen setting)
        if u is not None and base is not None:  # the unsteered model on the same items
            bv = dict(zip(base["ids"], base["values"]))
            shared = [i for i in u["ids"] if i in bv]
            base_v = sum(bv[i] for i in shared) / len(shared)
            ok = u["value"] >= base_v - max_mmlu_drop
        rows.append({"method": r["method"], "alpha": r["alpha"], "objective": objective(res, r["key"]),
                     "mc2": r["value"], "mmlu_val": None if u is None else u["value"], "mmlu_val_unsteered": base_v,
                     "kl_val": None if kl is None else kl["value"], "valid": ok})
    return rows


def chosen_strengths(res: Results, max_mmlu_drop: float = 0.05) -> dict[str, float]:
    """Per method, the valid val configuration with the best objective (ties: smaller strength)."""
    out = {}
    rows = val_table(res, max_mmlu_drop)
    for method in ("odesteer", "caa", "iti", "real", "finesteer"):
        cands = [r for r in rows if r["method"] == method and r["valid"]]
        if cands:
            out[method] = max(cands, key=lambda r: (round(r["objective"], 6), -r["alpha"]))["alpha"]
    return out


def stage_truth_val(model, args, out: Path, res: Results, choice: dict) -> None:
    sts = fit_truth_steerers(model, args, out, choice)
    qs, ab = tqa_eval_sets("val", args.n_val, args.seed)
    mmlu = D.load_mmlu_ab("val", args.n_mmlu_val, args.seed)
    klp = D.load_harmless("val", args.n_kl, args.seed)
    base_lp = steerlens.next_token_logprobs(model, [e.prompt for e in klp], None, batch_size=args.score_batch)
    eval_truth(model, res, "val|none", None, qs, ab, args, stage="truth-val", method="none", alpha=0.0, split="val")
    eval_utility(model, res, "val-utility|none|0", None, mmlu, klp, base_lp, args, stage="val-utility",
                 method="none", alpha=0.0, split="val")
    for method, alphas in grids(args).items():
        for a in alphas:
            eval_truth(model, res, f"val|{method}|{a:g}", sts[method].edits(model, alpha=a), qs, ab, args,
                       stage="truth-val", method=method, alpha=a, split="val")
    # utility constraint, lazily: best objective first, until a setting passes
    for method, alphas in grids(args).items():
        order = sorted(alphas, key=lambda a: (-round(objective(res, f"val|{method}|{a:g}"), 6), a))
        for a in order:
            key = f"val-utility|{method}|{a:g}"
            eval_utility(model, res, key, sts[method].edits(model, alpha=a), mmlu, klp, base_lp, args,
                         stage="val-utility", method=method, alpha=a, split="val")
            if any(r["method"] == method and r["alpha"] == a and r["valid"] for r in val_table(res, args.max_mmlu_drop)):
                break


def stage_truth_test(model, args, out: Path, res: Results, choice: dict) -> None:
    sts = fit_truth_steerers(model, args, out, choice)
    chosen = chosen_strengths(res, args.max_mmlu_drop)
    qs, ab = tqa_eval_sets("test", args.n_test, args.seed)
    mmlu = D.load_mmlu_ab("test", args.n_mmlu, args.seed)
    klp = D.load_harmless("test", args.n_kl, args.seed)
    base_lp = steerlens.next_token_logprobs(model, [e.prompt for e in klp], None, batch_size=args.score_batch)
    configs = [("none", 0.0, None)] + [(m, a, sts[m].edits(model, alpha=a)) for m, a in chosen.items()]
    for method, a, edits in configs:
        info = dict(stage="truth-test", method=method, alpha=a, split="test")
        eval_truth(model, res, f"test|{method}|{a:g}", edits, qs, ab, args, **info)
        eval_utility(model, res, f"utility|{method}|{a:g}", edits, mmlu, klp, base_lp, args, **info)


# ------------------------------------------------------------------------------------------------
# stage 4: ablations


ABLATIONS = {  # name -> (features, solver, steps)
    "euler_N1": ("poly_sketch", "euler", 1),
    "euler_N3": ("poly_sketch", "euler", 3),
    "euler_N10": ("poly_sketch", "euler", 10),
    "midpoint_N10": ("poly_sketch", "midpoint", 10),
    "rk4_N10": ("poly_sketch", "rk4", 10),
    "rff_euler_N10": ("rff", "euler", 10),
}


def stage_ablation(model, args, out: Path, res: Results, choice: dict) -> None:
    layer, read, C = choice["layer"], choice["read"], choice["C"]
    chosen = chosen_strengths(res, args.max_mmlu_drop)
    T = chosen.get("odesteer") or args.ode_T[0]
    path = out / "ablation_barrier.json"
    site = Site.resid(layer)
    data = tqa_pairs("fit", args.n_fit, args.seed)
    n = len(data.pos)
    fit_last = layer_acts(out, read, layer, "fit")
    val_last = layer_acts(out, read, layer, "val")
    nv = val_last.shape[0] // 2
    x = val_last[nv:].float()  # false-answer states of the val pairs
    barriers: dict[str, Barrier] = {}
    t0 = time.perf_counter()
    barriers["poly_sketch"] = fit_barrier(fit_last[:n].float(), fit_last[n:].float(), make_features("poly_sketch"),
                                          C=C, max_iter=3000)
    fit_poly = time.perf_counter() - t0
    t0 = time.perf_counter()
    barriers["rff"] = fit_barrier(fit_last[:n].float(), fit_last[n:].float(), make_features("rff"), C=C,
                                  max_iter=3000)
    fit_rff = time.perf_counter() - t0
    if not path.exists():
        poly = barriers["poly_sketch"]
        ref = integrate(poly.field, x.double(), T, 100, "rk4")
        h0 = poly.value(x)
        rows = {}
        for name, (feat, solver, steps) in ABLATIONS.items():
            bar = barriers[feat]
            t1 = time.perf_counter()
            xt = integrate(bar.field, x, T, steps, solver)
            secs = time.perf_counter() - t1
            hv = poly.value(xt)  # the poly barrier as the common yardstick
            own = bar.value(xt) - bar.value(x)
            rows[name] = {"features": feat, "solver": solver, "steps": steps, "T": T, "solve_seconds": secs,
                          "poly_barrier_gain_mean": float((hv - h0).mean()),
                          "poly_barrier_after_mean": float(hv.mean()),
                          "frac_positive_after": float((hv > 0).float().mean()),
                          "own_barrier_gain_mean": float(own.mean()),
                          "err_vs_rk4_N100_rel": (float(((xt.double() - ref).norm(dim=-1) / x.double().norm(dim=-1)).mean())
                                                  if feat == "poly_sketch" else None),
                          "displacement_norm_mean": float((xt - x).norm(dim=-1).mean())}
        ev = {k: evaluate_barrier(b, val_last[:nv].float(), val_last[nv:].float()) for k, b in barriers.items()}
        atomic_write_json(path, {"T": T, "layer": layer, "n_val_states": int(x.shape[0]), "rows": rows,
                                 "poly_barrier_before_mean": float(h0.mean()),
                                 "frac_positive_before": float((h0 > 0).float().mean()),
                                 "barrier_val": ev, "fit_seconds": {"poly_sketch": fit_poly, "rff": fit_rff}}, indent=1)
        log(f"ablation: barrier-value table written ({path})")
    qs = tqa_eval_sets("test", args.n_test, args.seed)[0][: args.n_ablation]  # a subset of the main test questions
    ode = load_steerer(out / "artifacts" / "odesteer", model=model)
    for name in args.ablation_variants:
        feat, solver, steps = ABLATIONS[name]
        key = f"ablation|{name}|{T:g}"
        if res.has(key):
            continue
        main_key = f"test|odesteer|{T:g}"
        if name == "euler_N10" and res.has(main_key):  # the main test run (same edit): restrict to the subset
            ids = {q.id for q in qs}
            metrics = {}
            for m in ("truthfulqa/mc1", "truthfulqa/mc2"):
                r = res.get(main_key, m)
                keep = [(v, i) for v, i in zip(r["values"], r["ids"]) if i in ids]
                metrics[m] = ([v for v, _ in keep], [i for _, i in keep])
            res.add(key, metrics, stage="ablation", method=name, alpha=T, split="test", from_key=main_key)
            continue
        bar = barriers[feat] if feat == "rff" else ode.editor.barrier
        from steerlens.pipeline.methods.odesteer import ODEEdit

        edits = [ODEEdit(site, bar, T, steps=steps, solver=solver)]
        eval_truth(model, res, key, edits, qs, [], args, stage="ablation", method=name, alpha=T, split="test")


# ------------------------------------------------------------------------------------------------
# stage 5: safety


def stage_safety(model, args, out: Path, res: Results) -> None:
    art = out / "artifacts"
    data = D.safety_response_pairs("fit", n=args.n_safety_fit, seed=args.seed)
    sts = {}
    for name, kw in (("odesteer", {"read": "response_mean"}), ("caa", {})):
        p = art / f"safety_{name}"
        if p.exists():
            sts[name] = load_steerer(p, model=model)
        else:
            sts[name] = make_steerer(name, layer=args.safety_layer, **kw).fit(model, data)
            sts[name].save(p, model=model)
    judge = get_judge(None)
    harmless_val = D.load_harmless("val", args.n_harmless_val, args.seed)
    harmful = D.load_harmful("test", args.n_harmful, args.seed)
    harmless = D.load_harmless("test", args.n_harmless, args.seed)

    def run(key, edits, sets, **info):
        if res.has(key):
            return
        t0 = time.perf_counter()
        metrics = {}
        samples = []
        for set_name, exs in sets:
            prompts = [e.prompt for e in exs]
            replies = steerlens.generate(model, prompts, edits, max_new_tokens=args.max_new_tokens,
                                         batch_size=args.gen_batch, progress=True)
            verdicts = judge.judge(prompts, replies)
            ids = [e.id for e in exs]
            for lab in ("refusal", "degenerate"):
                metrics[f"{lab}/{set_name}"] = ([float(v.label == lab) for v in verdicts], ids)
            samples += [{"set": set_name, "id": e.id, "prompt": e.prompt, "reply": r, "label": v.label}
                        for e, r, v in list(zip(exs, replies, verdicts))[:4]]
        res.add(key, metrics, wall_time_s=time.perf_counter() - t0, samples=samples, **info)
        log(f"{key}: " + ", ".join(f"{k}={sum(v) / len(v):.2f}" for k, (v, _) in metrics.items())
            + f" ({time.perf_counter() - t0:.0f}s)")

    run("safety-val|none|0", None, [("harmless_val", harmless_val)], stage="safety-val", method="none", alpha=0.0)
    grid = {"odesteer": args.safety_T, "caa": args.safety_caa_alphas}
    chosen = {}
    for method, alphas in grid.items():
        ok = [0.0]
        for a in sorted(alphas):
            key = f"safety-val|{method}|{a:g}"
            run(key, sts[method].edits(model, alpha=a), [("harmless_val", harmless_val)], stage="safety-val",
                method=method, alpha=a)
            over = res.get(key, "refusal/harmless_val")["value"]
            deg = res.get(key, "degenerate/harmless_val")["value"]
            if over <= args.max_over_refusal and deg <= args.max_degenerate:
                ok.append(a)
            else:
                break  # strengths above the first over budget are not candidates
        chosen[method] = max(ok)
    atomic_write_json(out / "safety_choice.json", {"chosen": chosen, "grid": grid,
                                                    "max_over_refusal": args.max_over_refusal,
                                                    "max_degenerate": args.max_degenerate}, indent=1)
    sets = [("harmful", harmful), ("harmless", harmless)]
    run("safety-test|none|0", None, sets, stage="safety-test", method="none", alpha=0.0)
    for method, a in chosen.items():
        if a > 0:
            run(f"safety-test|{method}|{a:g}", sts[method].edits(model, alpha=a), sets, stage="safety-test",
                method=method, alpha=a)


# ------------------------------------------------------------------------------------------------
# stage 6: trace and open generations


def stage_trace(model, args, out: Path, res: Results) -> None:
    if (out / "trace.png").exists() and (out / "open_generations.jsonl").exists():
        return
    chosen = chosen_strengths(res, args.max_mmlu_drop)
    T = chosen.get("odesteer") or args.ode_T[0]
    ode = load_steerer(out / "artifacts" / "odesteer", model=model)
    qs = D.load_truthfulqa("test", args.n_open, args.seed)
    prompts = [q.prompt for q in qs]
    gens = steerlens.generate(model, prompts[:1], ode.edits(model, alpha=T), max_new_tokens=args.max_new_tokens,
                              trace=True, return_details=True, progress=False)
    gens.trace.write_jsonl(out / "trace.jsonl")
    gens.trace.plot(0, out / "trace.png", title=f"ODESteer T={T:g}: {prompts[0][:60]}")
    plain = steerlens.generate(model, prompts, None, max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch,
                               progress=False)
    steered = steerlens.generate(model, prompts, ode.edits(model, alpha=T), max_new_tokens=args.max_new_tokens,
                                 batch_size=args.gen_batch, progress=False)
    lines = [json.dumps({"id": q.id, "question": q.prompt, "best_answer": q.meta["best"],
                         "correct": q.meta["correct"], "incorrect": q.meta["incorrect"],
                         "unsteered": a, "odesteer": b, "T": T}, ensure_ascii=False)
             for q, a, b in zip(qs, plain, steered)]
    atomic_write_text(out / "open_generations.jsonl", "\n".join(lines) + "\n")
    log("trace: trace.png, trace.jsonl, open_generations.jsonl")


# ------------------------------------------------------------------------------------------------
# stage 7: summary


def summarize(args, out: Path, res: Results) -> dict:
    s: dict = {"args": vars(args)}
    if (out / "layers.json").exists():
        s["layers"] = json.loads((out / "layers.json").read_text())
    for name in ("fit_timing.json", "ablation_barrier.json", "safety_choice.json"):
        if (out / name).exists():
            s[name.split(".")[0]] = json.loads((out / name).read_text())
    s["val"] = [{k: r[k] for k in ("method", "alpha", "metric", "value", "ci", "n")} for r in res.rows
                if r.get("stage") in ("truth-val", "val-utility")]
    s["val_objective"] = val_table(res, args.max_mmlu_drop)
    chosen = chosen_strengths(res, args.max_mmlu_drop)
    s["chosen"] = chosen
    test = {r["method"]: {} for r in res.rows if r.get("stage") == "truth-test"}
    for r in res.rows:
        if r.get("stage") == "truth-test":
            test[r["method"]][r["metric"]] = r
    s["test"] = {m: {k: {x: v[x] for x in ("alpha", "value", "ci", "n")} for k, v in d.items()} for m, d in test.items()}
    claims = {"odesteer": "+5.7% over the best other steering method (TruthfulQA, judged open generation)",
              "finesteer": "+7.6% on TruthfulQA over the best baseline"}
    for meth, claim in claims.items():
        if meth not in test:
            continue
        pk = f"paired_{meth}_minus"
        s[pk] = {}
        for other in ("none", "caa", "iti", "real", "odesteer", "finesteer"):
            if other in test and other != meth:
                s[pk][other] = {
                    m: paired(test[meth][m], test[other][m])
                    for m in ("truthfulqa/mc1", "truthfulqa/mc2", "truthfulqa/ab", "utility/mmlu_ab", "utility/kl")
                    if m in test[meth] and m in test[other]}
        val_obj = {m: next(r["objective"] for r in s["val_objective"] if r["method"] == m and r["alpha"] == a)
                   for m, a in chosen.items()}
        others = [m for m in ("caa", "iti", "real") if m in val_obj and m in test]
        if others:
            best = max(others, key=lambda m: val_obj[m])
            out_key = "vs_best_other" if meth == "odesteer" else f"{meth}_vs_best_other"
            v = {"best_other_by_val_objective": best, "val_objective": val_obj, "paper_claim": claim}
            for met in ("truthfulqa/mc1", "truthfulqa/mc2"):
                d = s[pk][best][met]
                base = test[best][met]["value"]
                tag = met.split("/")[1]
                v.update({f"{tag}_diff_points": d, f"{tag}_relative": d["value"] / base,
                          f"{tag}_relative_ci": [d["ci"][0] / base, d["ci"][1] / base]})
            s[out_key] = v
    abl = {r["method"]: r for r in res.rows if r.get("stage") == "ablation" and r["metric"] == "truthfulqa/mc2"}
    if abl:
        s["ablation_mc2"] = {k: {"value": v["value"], "ci": v["ci"], "n": v["n"]} for k, v in abl.items()}
        if "euler_N10" in abl:
            s["ablation_mc2_paired_vs_euler_N10"] = {k: paired(v, abl["euler_N10"]) for k, v in abl.items()
                                                     if k != "euler_N10"}
    saf = {}
    for r in res.rows:
        if r.get("stage", "").startswith("safety"):
            saf.setdefault(f"{r['stage']}|{r['method']}|{r['alpha']:g}", {})[r["metric"]] = {
                x: r[x] for x in ("value", "ci", "n")}
    s["safety"] = saf
    tests = {r["method"]: r for r in res.rows if r.get("stage") == "safety-test" and r["metric"] == "refusal/harmful"}
    if "odesteer" in tests and "caa" in tests:
        s["safety_paired_odesteer_minus_caa"] = {
            m: paired(res.get(tests["odesteer"]["key"], m), res.get(tests["caa"]["key"], m))
            for m in ("refusal/harmful", "refusal/harmless", "degenerate/harmful", "degenerate/harmless")}
    atomic_write_json(out / "summary.json", s, indent=1)
    atomic_write_text(out / "summary.md", summary_markdown(s))
    return s


def summary_markdown(s: dict) -> str:
    L = ["# ODESteer on the default model", ""]
    if "layers" in s:
        lay = s["layers"]
        Cs = sorted({r["C"] for r in lay["rows"]})
        L += ["## Barrier val AUC (val accuracy) per layer, reading and C (fit on fit pairs, scored on val pairs)", "",
              "| layer | reading | " + " | ".join(f"C={c:g}" for c in Cs) + " |", "|---" * (len(Cs) + 2) + "|"]
        cells: dict = {}
        for r in lay["rows"]:
            cells.setdefault((r["layer"], r["position"]), {})[r["C"]] = f"{r['val_auc']:.3f} ({r['val_accuracy']:.3f})"
        for (layer, pos), d in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            L.append(f"| {layer} | {pos} | " + " | ".join(d.get(c, "–") for c in Cs) + " |")
        L += ["", f"Chosen: layer {lay['layer']}, reading {lay['read']}, C {lay['C']:g} ({lay['rule']}; "
                  f"{lay['n_fit_pairs']} fit / {lay['n_val_pairs']} val pairs).", ""]
    if s.get("val"):
        L += ["## Validation grid", "", "| method | strength | MC1 | MC2 | A/B | objective | MMLU A/B (val) | KL (val) | valid |",
              "|---|---|---|---|---|---|---|---|---|"]
        rows: dict = {}
        for r in s["val"]:
            rows.setdefault((r["method"], r["alpha"]), {})[r["metric"]] = r
        obj = {(r["method"], r["alpha"]): r for r in s.get("val_objective", [])}
        for (m, a), d in rows.items():
            o = obj.get((m, a), {})
            L.append(f"| {m} | {a:g} | {_fmt(d.get('truthfulqa/mc1'))} | {_fmt(d.get('truthfulqa/mc2'))} | "
                     f"{_fmt(d.get('truthfulqa/ab'))} | {o.get('objective', float('nan')):.3f} | "
                     f"{_fmt(d.get('utility/mmlu_ab'))} | {_fmt(d.get('utility/kl'))} | {o.get('valid', '–')} |")
        L += ["", f"Chosen (best val objective = mean of MC1, MC2, A/B, among settings whose val MMLU A/B is at "
                  f"most {s['args']['max_mmlu_drop']} below the unsteered model's): {s['chosen']}", ""]
    if s.get("test"):
        ms = ["truthfulqa/mc1", "truthfulqa/mc2", "truthfulqa/ab", "utility/mmlu_ab", "utility/kl"]
        L += ["## Test", "", "| method | strength | " + " | ".join(ms) + " |", "|---" * (len(ms) + 2) + "|"]
        for m, d in s["test"].items():
            a = next(iter(d.values()))["alpha"]
            n = {k: v["n"] for k, v in d.items()}
            L.append(f"| {m} | {a:g} | " + " | ".join(_fmt(d.get(k)) for k in ms) + " |")
        L += ["", f"n: {n}", ""]
    for meth, title, vkey, paper in (("odesteer", "ODESteer", "vs_best_other", "+5.7%"),
                                     ("finesteer", "FineSteer", "finesteer_vs_best_other", "+7.6%")):
        if s.get(f"paired_{meth}_minus"):
            L += [f"## Paired differences {title} − X (test)", "", "| X | metric | diff [95% CI] | n |",
                  "|---|---|---|---|"]
            for o, d in s[f"paired_{meth}_minus"].items():
                for k, v in d.items():
                    L.append(f"| {o} | {k} | {_fmt(v)} | {v['n']} |")
            L.append("")
        if s.get(vkey):
            v = s[vkey]
            for tag in ("mc1", "mc2"):
                L += [f"Best other method by val objective: {v['best_other_by_val_objective']}; {title} − it on test "
                      f"{tag.upper()}: {_fmt(v[f'{tag}_diff_points'])} points, {100 * v[f'{tag}_relative']:+.1f}% "
                      f"relative [{100 * v[f'{tag}_relative_ci'][0]:+.1f}%, {100 * v[f'{tag}_relative_ci'][1]:+.1f}%] "
                      f"(paper: {paper}).", ""]
    if s.get("ablation_barrier"):
        ab = s["ablation_barrier"]
        L += [f"## Ablations at T = {ab['T']:g} (layer {ab['layer']}, {ab['n_val_states']} val false-answer states)", "",
              f"Poly barrier before: mean {ab['poly_barrier_before_mean']:.3f}, positive {ab['frac_positive_before']:.2f}.", "",
              "| variant | poly barrier gain | positive after | own barrier gain | rel. error vs RK4 N=100 | solve s | MC2 (test) |",
              "|---|---|---|---|---|---|---|"]
        for k, r in ab["rows"].items():
            mc2 = s.get("ablation_mc2", {}).get(k)
            err = "–" if r["err_vs_rk4_N100_rel"] is None else f"{r['err_vs_rk4_N100_rel']:.2e}"
            L.append(f"| {k} | {r['poly_barrier_gain_mean']:.3f} | {r['frac_positive_after']:.2f} | "
                     f"{r['own_barrier_gain_mean']:.3f} | {err} | {r['solve_seconds']:.3f} | {_fmt(mc2)} |")
        L += ["", "Barrier val metrics: " + json.dumps({k: {m: round(v[m], 3) for m in ('accuracy', 'auc')}
                                                         for k, v in ab["barrier_val"].items()}), ""]
        if s.get("ablation_mc2_paired_vs_euler_N10"):
            L += ["Paired MC2 vs Euler N=10: " + ", ".join(f"{k} {_fmt(v)}" for k, v in
                                                          s["ablation_mc2_paired_vs_euler_N10"].items()), ""]
    if s.get("safety"):
        ms = ["refusal/harmless_val", "degenerate/harmless_val", "refusal/harmful", "refusal/harmless",
              "degenerate/harmful", "degenerate/harmless"]
        L += ["## Safety", "", "| config | " + " | ".join(ms) + " |", "|---" * (len(ms) + 1) + "|"]
        for k, d in s["safety"].items():
            L.append(f"| {k} | " + " | ".join(_fmt(d.get(m), 2) for m in ms) + " |")
        L += ["", f"Chosen: {s.get('safety_choice', {}).get('chosen')}", ""]
        if s.get("safety_paired_odesteer_minus_caa"):
            L += ["Paired ODESteer − CAA (test): " + ", ".join(
                f"{k} {_fmt(v, 2)} (n={v['n']})" for k, v in s["safety_paired_odesteer_minus_caa"].items()), ""]
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------------------------


def floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


#: ``--quick``: a smoke run on the tiny random model, a few questions per stage and one setting per
#: grid (explicit options still win); tests/test_smoke_headlines.py runs it.
QUICK = dict(model="tiny-random", layers="0,1", barrier_C="1", n_fit=12, n_val_pairs=6, n_val=4, n_test=4,
             n_ablation=4, ablation_variants="euler_N1", n_mmlu=4, n_mmlu_val=4, n_kl=4, heads=2, real_epochs=2,
             ode_T="40", caa_alphas="1", iti_alphas="5", real_alphas="5", finesteer_alphas="1", safety_layer=1,
             n_safety_fit=8, safety_T="40", safety_caa_alphas="0.5", n_harmless_val=4, n_harmful=4, n_harmless=4,
             max_new_tokens=8, n_open=2, batch_size=8, score_batch=8, gen_batch=8)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny random model, a few questions (QUICK)")
    ap.add_argument("--out", default="runs/odesteer")
    ap.add_argument("--model", default=None)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", default="4,6,8,10,12,14,16,18,20")
    ap.add_argument("--barrier-C", type=floats, default=floats("1,10,100,1000"),
                    help="logistic-regression C values scanned with the layers (chosen on val AUC)")
    ap.add_argument("--n-fit", type=int, default=240, help="TruthfulQA fit questions (one true/false pair each)")
    ap.add_argument("--n-val-pairs", type=int, default=None, help="val questions for the layer scan (default: all)")
    ap.add_argument("--n-val", type=int, default=40, help="val questions for choosing strengths")
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-ablation", type=int, default=40)
    ap.add_argument("--ablation-variants", default="euler_N10,euler_N1,rk4_N10,rff_euler_N10",
                    help=f"variants scored by MC1/MC2 (all of {list(ABLATIONS)} get the barrier-value table)")
    ap.add_argument("--n-mmlu", type=int, default=40, help="MMLU A/B test items (reporting)")
    ap.add_argument("--n-mmlu-val", type=int, default=40, help="MMLU A/B val items (the choice's utility constraint)")
    ap.add_argument("--max-mmlu-drop", type=float, default=0.05,
                    help="a strength is eligible if its val MMLU A/B is at most this below the unsteered model's")
    ap.add_argument("--n-kl", type=int, default=32)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--real-epochs", type=int, default=20)
    ap.add_argument("--ode-T", type=floats, default=floats("40,80,120,160,320"))
    ap.add_argument("--caa-alphas", type=floats, default=floats("1,3,9"))
    ap.add_argument("--iti-alphas", type=floats, default=floats("5,15"))
    ap.add_argument("--real-alphas", type=floats, default=floats("5,15"))
    ap.add_argument("--finesteer", action="store_true",
                    help="also FineSteer (SCS gate + MoSE at the same layer, same fit pairs) in the TruthfulQA stages")
    ap.add_argument("--finesteer-alphas", type=floats, default=floats("1,2,4"))
    ap.add_argument("--safety-layer", type=int, default=14)
    ap.add_argument("--n-safety-fit", type=int, default=64)
    ap.add_argument("--safety-T", type=floats, default=floats("40,80,160"))
    ap.add_argument("--safety-caa-alphas", type=floats, default=floats("0.25,0.5,1"))
    ap.add_argument("--n-harmless-val", type=int, default=24)
    ap.add_argument("--n-harmful", type=int, default=48)
    ap.add_argument("--n-harmless", type=int, default=48)
    ap.add_argument("--max-over-refusal", type=float, default=0.1)
    ap.add_argument("--max-degenerate", type=float, default=0.2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--n-open", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16, help="capture batch size")
    ap.add_argument("--score-batch", type=int, default=32)
    ap.add_argument("--gen-batch", type=int, default=16)
    apply_quick(ap, argv, QUICK)
    args = ap.parse_args(argv)
    args.layers = [int(x) for x in str(args.layers).split(",")]
    args.ablation_variants = [v.strip() for v in args.ablation_variants.split(",") if v.strip()]
    if any(v not in ABLATIONS for v in args.ablation_variants):
        ap.error(f"unknown ablation variants {args.ablation_variants}; known: {list(ABLATIONS)}")
    stages = parse_stages(ap, args.stages, STAGES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    res = Results(out / "results.jsonl")
    t0, c0 = time.perf_counter(), time.process_time()
    model = steerlens.load_model(args.model) if any(s != "summary" for s in stages) else None
    choice = None
    for stage in stages:
        ts, cs = time.perf_counter(), time.process_time()
        if stage == "summary":
            summarize(args, out, res)
        else:
            if choice is None:
                choice = stage_layers(model, args, out)
            if stage == "truth-val":
                stage_truth_val(model, args, out, res, choice)
            elif stage == "truth-test":
                stage_truth_test(model, args, out, res, choice)
            elif stage == "ablation":
                stage_ablation(model, args, out, res, choice)
            elif stage == "safety":
                stage_safety(model, args, out, res)
            elif stage == "trace":
                stage_trace(model, args, out, res)
        stage_timing(out, stage, ts, cs)
    log(f"total {time.perf_counter() - t0:.0f}s wall, {time.process_time() - c0:.0f}s cpu")
    return 0


def apply_quick(ap: argparse.ArgumentParser, argv, quick: dict) -> None:
    """With ``--quick`` in ``argv``, the ``quick`` sizes become the parser's defaults (call after
    every ``add_argument``); a size naming no option is an error."""
    if "--quick" in (argv or []):
        unknown = set(quick) - {a.dest for a in ap._actions}
        assert not unknown, f"QUICK names no option: {unknown}"
        ap.set_defaults(**quick)


def parse_stages(ap: argparse.ArgumentParser, text: str, known) -> list[str]:
    """The comma-separated stage names of ``text``; an unknown one ends the parser with an error."""
    stages = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in stages if s not in known]
    if bad:
        ap.error(f"unknown stages {bad}; known: {known}")
    return stages


def stage_timing(out: Path, stage: str, ts: float, cs: float) -> None:
    """Append one stage's wall and CPU time (and the load average) to ``out/timing.jsonl`` and log it."""
    with open(out / "timing.jsonl", "a") as fh:
        fh.write(json.dumps({"stage": stage, "wall_s": time.perf_counter() - ts, "cpu_s": time.process_time() - cs,
                             "loadavg": os.getloadavg()}) + "\n")
    log(f"stage {stage} done ({time.perf_counter() - ts:.0f}s wall, {time.process_time() - cs:.0f}s cpu)")


if __name__ == "__main__":
    raise SystemExit(main())
