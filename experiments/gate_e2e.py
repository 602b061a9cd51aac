"""End to end (issue #24): FineSteer with the chosen gate vs with the SCS gate, on held-out sources.

FineSteer is fitted as the main job fits it (specs/main.toml's ``finesteer`` table: REAL over
layers 8..16, MoSE, SCS gate at layer 14, ranks 4/4, 5% FPR, alpha 1, fit n 96) on the shared fit
split (AdvBench / HarmBench / JBB) only. The chosen gate replaces SCS on the *same* fitted
selector and editor (``Steerer.with_gate(...).fit_gate(...)``); its gate data are the shared
sources' fit prompts only (+ the design's hard negatives and fit-family wrappers), so every other
harmful source is held out for both gates.

Sets (test splits, seeded samples of ``--n``): the shared test split (in-distribution); each
held-out source group's test prompts; XSTest safe; OR-Bench-Hard; Alpaca; the shared test prompts
wrapped in the *held-out* jailbreak families (<= 1000 characters). Conditions: unsteered, FineSteer
with SCS, FineSteer with the chosen gate. A prompt whose gate is closed gets the unsteered reply
(a closed prompt gate leaves every activation untouched), so only open prompts are generated
steered; the fitted steerers are saved under OUT/fitted and reused by a rerun. Greedy, 32 new tokens, refusal judged by the default
trained judge (``clf``), Wilson 95% intervals; the gate's open rate beside each.

    PYTHONPATH=src nice -n 5 python experiments/gate_e2e.py [--quick] [--n 24] [--gate harm]
    # writes runs/gate_e2e/gate_e2e.json and gate_e2e.md
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["advbench", "harmbench", "jailbreakbench"]


def finesteer_table(model, quick: bool, read_spec) -> dict:
    """The main spec's ``finesteer`` table; with ``quick``, the tiny model's version (its last
    layer, no REAL, fit n 32, a short MoSE schedule)."""
    tab = copy.deepcopy(next(s for s in read_spec(ROOT / "src/steerlens/specs/main.toml")["steerer"]
                             if s["name"] == "finesteer"))
    if quick:
        tab.pop("selector", None)
        tab["fit"]["n"] = 32
        top = model.n_layers - 1
        tab["params"] = {**tab.get("params", {}), "layer": top, "gate_layer": top, "select_layers": None,
                         "max_epochs": 5, "warmup_steps": 1, "k": 2}
    return tab


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny random model, its last layer (no REAL), "
                                                         "fit n 32, small gate data, 6 prompts per set, "
                                                         "two held-out sources")
    ap.add_argument("--n", type=int, default=24, help="prompts per set")
    ap.add_argument("--gate", default="harm", help="the chosen gate: a name of gate_eval.DEFAULT_GATES")
    ap.add_argument("--out", default=str(ROOT / "runs" / "gate_e2e"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--open-only", action="store_true",
                    help="only the gates' open rates per set (one prompt pass each, no generation): "
                         "writes gate_open.json / gate_open.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    import steerlens
    from steerlens.evals import data as D
    from steerlens.evals import safety_sources as S
    from steerlens.evals.judges import NOT_COMPLIED, get_judge
    from steerlens.evals.stats import wilson_ci
    from steerlens.evals.tasks import edits_for
    from steerlens.fileio import atomic_write_json, atomic_write_text
    from steerlens.hooks import generate
    from steerlens.interp import gate_eval as G
    from steerlens.pipeline.registry import make_gate
    from steerlens.pipeline.spec import fit_steerer, read_spec

    t0 = time.time()
    n = 6 if a.quick else a.n
    name = a.model or ("tiny-random" if a.quick else None)
    model = steerlens.load_model(name) if name else steerlens.load_model()
    judge = get_judge("clf")

    # -- FineSteer as the main job fits it, with SCS (both steerers saved under OUT/fitted and reused)
    from steerlens.pipeline.steerer import load_steerer

    fitted = Path(a.out) / "fitted"
    tab = finesteer_table(model, a.quick, read_spec)
    spec = G.normalise_spec(a.gate, G.default_gates()[a.gate])
    if a.quick:
        spec["layers"] = [min(spec["layers"][0], model.n_layers - 1)]
    if spec["reading"] != "last" or len(spec["layers"]) != 1:
        raise SystemExit(f"gate {a.gate!r} is not deployable as a prompt gate (reading last, one layer)")
    if (fitted / "scs").exists() and (fitted / a.gate).exists() and not a.quick:
        fs_scs, fs_new = load_steerer(fitted / "scs", model), load_steerer(fitted / a.gate, model)
        print(f"loaded both fitted steerers from {fitted}", flush=True)
    else:
        fs_scs = fit_steerer(model, tab, progress=False)
        print(f"fitted FineSteer (SCS) in {time.time() - t0:.0f} s; sites {[str(s) for s in fs_scs.selection.sites()]}",
              flush=True)
        # -- the chosen gate on the same selector and editor, fitted on the shared sources only
        gd = G.harm_gate_data(groups=SHARED, hard_negatives=spec["hard_negatives"], max_template_chars=300 if a.quick else 1000,
                              caps={"harm_fit": 8, "alpaca_fit": 12, "orbench_fit": 6, "aug_harm": 1,
                                    "aug_benign": 3} if a.quick else None,
                              augment_wrapped=spec["augment_wrapped"], balance=spec["balance"])
        gate = make_gate(spec["kind"], **{**spec["params"], "layer": spec["layers"][0], "fpr": 0.05})
        fs_new = fs_scs.with_gate(gate).fit_gate(model, gd)
        print(f"fitted the {a.gate} gate in {time.time() - t0:.0f} s (n pos {len(gd.pos)}, neg {len(gd.neg)})",
              flush=True)
        if not a.quick:
            fs_scs.save(fitted / "scs", model)
            fs_new.save(fitted / a.gate, model)

    # -- the sets
    def sample(xs, k, tag):
        xs = list(xs)
        rng = random.Random(f"gate-e2e:{tag}")
        return [xs[i] for i in sorted(rng.sample(range(len(xs)), k))] if len(xs) > k else xs

    sets: dict[str, list[str]] = {"shared_test": sample([e.prompt for e in D.load_harmful("test")], n, "shared")}
    held = [g for g in S.HARM_SOURCE_GROUPS if g not in SHARED]
    if a.quick:
        held = held[:2]
    for g in held:
        sets[f"heldout:{g}"] = sample([e.prompt for e in S.load_harmful_all("test", groups=[g])], n, g)
    sets["xstest_safe"] = sample([e.prompt for e in D.load_xstest("test", "safe")], n, "xs")
    sets["orbench_hard"] = sample([e.prompt for e in S.load_benign_source("orbench_hard_1k", "test")], n, "orh")
    sets["alpaca"] = sample([e.prompt for e in D.load_harmless("test", 200)], n, "alpaca")
    templates = S.load_jailbreak_templates()
    _, held_fams = S.split_families(templates, 0.5, 0)
    tw = [t for t in templates if t.family in held_fams and len(t.template) <= 1000]
    rng = random.Random("gate-e2e:wrap")
    sets["wrapped_shared_test"] = [rng.choice(tw).wrap(p) for p in sets["shared_test"]]

    conds = {"unsteered": None, "finesteer_scs": fs_scs, f"finesteer_{a.gate}": fs_new}
    if a.open_only:
        opened = {c: {} for c in list(conds)[1:]}
        for sname, prompts in sets.items():
            for c in opened:
                k = int(conds[c].decide(model, prompts).scale.gt(0).sum())
                p, lo, hi = wilson_ci(k, len(prompts))
                opened[c][sname] = {"open": p, "ci": [lo, hi], "n": len(prompts)}
            print(sname, {c: round(opened[c][sname]["open"], 2) for c in opened}, flush=True)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"model": model.name, "gate": a.gate, "n_per_set": n, "fit": tab["fit"], "open": opened,
               "wall_s": round(time.time() - t0, 1)}
        atomic_write_json(out / "gate_open.json", doc)
        lines = [f"# Gate open rate per set: FineSteer's SCS gate vs the `{a.gate}` gate, both fitted on the shared "
                 f"sources only ({model.name}, n {n} per set; Wilson 95%)", "",
                 "| set | " + " | ".join(opened) + " |", "|---|" + "---|" * len(opened)]
        for sname in sets:
            lines.append(f"| {sname} | " + " | ".join(
                f"{opened[c][sname]['open']:.2f} [{opened[c][sname]['ci'][0]:.2f}, {opened[c][sname]['ci'][1]:.2f}]"
                for c in opened) + " |")
        atomic_write_text(out / "gate_open.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    res: dict = {"model": model.name, "n_per_set": n, "gate": a.gate, "gate_spec": spec, "quick": a.quick,
                 "max_new_tokens": a.max_new_tokens, "judge": judge.name, "fit": tab["fit"],
                 "sites": [str(s) for s in fs_scs.selection.sites()], "sets": {k: len(v) for k, v in sets.items()},
                 "results": {}}
    base: dict[str, list] = {}
    for cname, st in conds.items():
        res["results"][cname] = {}
        for sname, prompts in sets.items():
            ts = time.time()
            if st is None:
                gens = generate(model, prompts, None, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                                progress=False)
                base[sname] = list(gens)
                texts, open_ = list(gens), None
            else:
                # a row whose prompt gate is closed is the unsteered row (the hook contract), so only
                # the open rows are generated (batched among themselves)
                open_ = st.decide(model, prompts).scale.gt(0).tolist()
                idx = [i for i, o in enumerate(open_) if o]
                texts = list(base[sname])
                if idx:
                    sub = [prompts[i] for i in idx]
                    gens = generate(model, sub, edits_for(st, model, sub), max_new_tokens=a.max_new_tokens,
                                    batch_size=a.batch_size, progress=False)
                    for i, t in zip(idx, gens):
                        texts[i] = t
            verdicts = judge.judge(prompts, texts)
            k = sum(v.label in NOT_COMPLIED for v in verdicts)
            deg = sum(v.label == "degenerate" for v in verdicts)
            p, lo, hi = wilson_ci(k, len(prompts))
            row = {"refusal": p, "ci": [lo, hi], "n": len(prompts), "k": k, "degenerate": deg / len(prompts),
                   "not_complied": [v.label in NOT_COMPLIED for v in verdicts]}
            if open_ is not None:
                row["gate_open"] = sum(open_) / len(open_)
            res["results"][cname][sname] = row
            print(f"{cname:>20} {sname:>28} refusal {p:.2f} [{lo:.2f}, {hi:.2f}] "
                  f"open {row.get('gate_open', float('nan')):.2f} ({time.time() - ts:.0f} s)", flush=True)
    res["wall_s"] = round(time.time() - t0, 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gate_e2e.json", res)
    atomic_write_text(out / "gate_e2e.md", table(res))
    print(table(res))
    return 0


def table(res: dict) -> str:
    conds = list(res["results"])
    sets = list(res["sets"])
    lines = [f"# FineSteer end to end: SCS gate vs `{res['gate']}` gate ({res['model']}, judge {res['judge']}, "
             f"greedy, {res['max_new_tokens']} new tokens, n {res['n_per_set']} per set"
             f"{', QUICK' if res['quick'] else ''})", "",
             f"Fitted on the shared fit split only (fit {res['fit']}); sites {res['sites']}. "
             "Refusal [Wilson 95%] (gate open rate).", "",
             "| set | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
    for s in sets:
        cells = []
        for c in conds:
            r = res["results"][c][s]
            cells.append(f"{r['refusal']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"
                         + (f" ({r['gate_open']:.2f})" if "gate_open" in r else ""))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if len(conds) == 3 and all("not_complied" in res["results"][c][s] for c in conds[1:] for s in sets):
        from steerlens.evals.stats import paired_ci

        a, b = conds[2], conds[1]
        lines += ["", f"Paired difference {a} − {b} in refusal (same prompts; Newcombe 95%):", "",
                  "| set | difference [95% CI] | n |", "|---|---|---|"]
        for s in sets:
            d, lo, hi, _ = paired_ci(res["results"][a][s]["not_complied"], res["results"][b][s]["not_complied"])
            lines.append(f"| {s} | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] | {res['results'][a][s]['n']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
