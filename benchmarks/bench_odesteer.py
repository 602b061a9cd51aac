"""ODESteer benchmark on the default model: generation speed, field and solver costs, fitting time.

Measured in one run (ratios from interleaved variants, medians over repeats):

- generation tokens/s at batch 8 (greedy, up to ``--new-tokens`` new tokens, counted up to EOS):
  unsteered vs ODESteer (Euler, N = 10, default ``T``, ``positions="current_last"``) with the
  hand-loop and the torchdiffeq backends; goal: steered / unsteered >= 0.8;
- the vector field on ``[rows, d_model]`` activations: closed-form gradient of the sketch vs
  autograd through the same features (and their largest difference);
- one ODE solve (Euler N = 10, midpoint, RK4) with the hand loop vs torchdiffeq's fixed-grid
  solvers (same steps; largest difference reported);
- fitting time: response-side capture at one layer, the held-out barrier fit and the full
  barrier fit (TruthfulQA ``fit`` split).

    python benchmarks/bench_odesteer.py --out benchmarks/results/odesteer.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import steerlens
from steerlens.evals import data as D
from steerlens.fileio import atomic_write_json
from steerlens.pipeline import make_steerer
from steerlens.pipeline.methods.odesteer import DEFAULT_LAYER, DEFAULT_T, Barrier, integrate

from common import PROMPTS, interleaved, machine_info, medians, plain_hf, plain_hf_generate

def bench_generation(model, steerer, T: float, new_tokens: int, repeats: int) -> dict:
    edits = {
        "unsteered": None,
        "ode_euler10_loop": [e.replace(backend="loop") for e in steerer.edits(model, alpha=T)],
        "ode_euler10_torchdiffeq": [e.replace(backend="torchdiffeq") for e in steerer.edits(model, alpha=T)],
    }
    prompts = PROMPTS[:8]
    names = ["plain_hf", *edits]
    tokens: dict[str, list[int]] = {k: [] for k in names}
    hf_run = plain_hf_generate(plain_hf(model), model, prompts, new_tokens)

    def run(name):
        def fn():
            if name == "plain_hf":
                tokens[name].append(hf_run())
                return
            gens = steerlens.generate(model, prompts, edits[name], max_new_tokens=new_tokens, batch_size=8,
                                      progress=False, return_details=True)
            tokens[name].append(sum(len(g.token_ids) for g in gens))  # counted as plain_hf counts: up to EOS
        return fn

    for k in names:  # warm-up
        run(k)()
    tokens = {k: [] for k in names}
    times = interleaved({k: run(k) for k in names}, repeats)
    tps = {k: [n / t for n, t in zip(tokens[k], times[k])] for k in names}
    m = medians(tps)
    return {"batch_size": 8, "new_tokens": new_tokens, "repeats": repeats, "T": T, "solver": "euler", "steps": 10,
            "tokens": tokens, "seconds": times, "tokens_per_s_median": m,
            "ratio_steered_over_unsteered": {k: m[k] / m["unsteered"] for k in m if k not in ("unsteered", "plain_hf")},
            "ratio_over_plain_hf": {k: m[k] / m["plain_hf"] for k in m if k != "plain_hf"},
            "goal": "steered / unsteered tokens/s >= 0.8"}


def bench_field(barrier: Barrier, x: torch.Tensor, repeats: int) -> dict:
    auto = Barrier(barrier.features, barrier.w, barrier.b, barrier.pi, gradient="autograd")
    gc, ga = barrier.grad(x), auto.grad(x)
    with torch.no_grad():
        times = interleaved({"closed_form": lambda: barrier.grad(x), "autograd": lambda: auto.grad(x)}, repeats)
    m = medians(times)
    return {"rows": int(x.shape[0]), "d": int(x.shape[1]), "n_features": barrier.features.n_features,
            "seconds_median": m, "speedup_closed_form_over_autograd": m["autograd"] / m["closed_form"],
            "max_abs_diff": float((gc - ga).abs().max()), "max_abs_grad": float(ga.abs().max())}


def bench_solvers(barrier: Barrier, x: torch.Tensor, T: float, repeats: int) -> dict:
    out = {}
    for solver, steps in (("euler", 10), ("midpoint", 10), ("rk4", 10), ("euler", 1)):
        fns = {b: (lambda b=b: integrate(barrier.field, x, T, steps, solver, b)) for b in ("loop", "torchdiffeq")}
        diff = float((fns["loop"]() - fns["torchdiffeq"]()).abs().max())
        with torch.no_grad():
            m = medians(interleaved(fns, repeats))
        out[f"{solver}_N{steps}"] = {"seconds_median": m, "loop_speedup": m["torchdiffeq"] / m["loop"],
                                     "max_abs_diff": diff}
    return {"rows": int(x.shape[0]), "T": T, "per_solver": out}


def bench_fit(model, n_questions: int, layer: int) -> dict:
    data = D.truthfulness_response_pairs("fit", n=n_questions, seed=0)
    st = make_steerer("odesteer", layer=layer)
    t0 = time.perf_counter()
    acts = st.read_contrastive(model, data)
    t_cap = time.perf_counter() - t0
    t1 = time.perf_counter()
    st.fit(model, data, acts=acts)
    t_fit = time.perf_counter() - t1
    sel = st.selector.result_info["heldout"][f"blocks.{layer}.hook_resid_post"]
    return {"n_pairs": len(data.pos), "layer": layer, "capture_seconds": t_cap,
            "fit_seconds_after_capture": t_fit, "heldout_fit_seconds": sel["fit_seconds"],
            "full_fit_seconds": st.editor.stats["fit_seconds"], "heldout_accuracy": sel["accuracy"],
            "heldout_auc": sel["auc"], "train_accuracy": st.editor.stats["train_accuracy"],
            "position": acts.position}, st, acts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/odesteer.json")
    ap.add_argument("--quick", action="store_true", help="fewer questions, tokens and repeats")
    ap.add_argument("--n-questions", type=int, default=300, help="TruthfulQA fit questions for the fitting time")
    ap.add_argument("--layer", type=int, default=DEFAULT_LAYER)
    ap.add_argument("--T", type=float, default=DEFAULT_T)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_questions, args.new_tokens, args.repeats = 60, 16, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = steerlens.load_model()
    fit, st, acts = bench_fit(model, args.n_questions, args.layer)
    bar = st.editor.barrier
    site = st.selection.modules[0]
    x8 = acts.neg[site][:8].float()
    x64 = torch.cat([acts.neg[site], acts.pos[site]])[:64].float()
    res = {
        "benchmark": "odesteer", "argv": sys.argv[1:], "quick": args.quick,
        "machine": machine_info(),
        "model": model.name, "fit": fit,
        "field": {"rows8": bench_field(bar, x8, 20 * args.repeats), "rows64": bench_field(bar, x64, 5 * args.repeats)},
        "solvers": bench_solvers(bar, x8, args.T, 10 * args.repeats),
        "generation": bench_generation(model, st, args.T, args.new_tokens, args.repeats),
    }
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(args.out, res, indent=1)
    g = res["generation"]
    print(f"tokens/s batch 8: {g['tokens_per_s_median']}  ratio: {g['ratio_steered_over_unsteered']}")
    print(f"field speedup closed/autograd: {res['field']['rows8']['speedup_closed_form_over_autograd']:.2f} (8 rows), "
          f"{res['field']['rows64']['speedup_closed_form_over_autograd']:.2f} (64 rows)")
    print("solver loop speedup:", {k: round(v["loop_speedup"], 2) for k, v in res["solvers"]["per_solver"].items()})
    print(f"fit: {fit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
