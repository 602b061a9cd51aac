"""Which gate recognises harm rather than the phrasing of its fitting sets? (issue #24)

Reads (cached by experiments/gate_generalisation_read.py): every protocol prompt at layers
0..21, readings last / post / mean. Selection never looks at a test split: a configuration is
scored by its leave-one-source-out worst-group TPR on the *fit* split of the held-out source (which
the fold holding that source out never sees), threshold at 5% FPR on Alpaca val. The chosen
configurations are then reported on the test splits with the full protocol.

    PYTHONPATH=src python experiments/gate_generalisation.py   # writes $GATES_WORK/research/*
    PYTHONPATH=src python experiments/gate_generalisation.py --quick --work /tmp/g   # smoke run, tiny model
"""
import argparse
import json
import os
import sys
import time

import torch

import steerlens
from steerlens.interp import gate_eval as G
from steerlens.fileio import atomic_write_json

WORK = os.environ.get("GATES_WORK", "/work/gates_work")
OUT = os.path.join(WORK, "research")
MODEL = os.environ.get("MODEL")  # default model unless set (tiny-random for a smoke run)
UPTO = int(os.environ.get("MAX_LAYER", "21"))
QUICK = bool(os.environ.get("QUICK"))
torch.set_num_threads(int(os.environ.get("THREADS", "2")))


def select_loso(spec, sets, reads, fpr=0.05):
    """Worst (and per-group) TPR on each held-out group's FIT split, fold without that group."""
    per = {}
    for g in sets.groups:
        gate, score = G.fit_fold(spec, sets, reads, g, fpr)
        per[g] = float((score(sets.harm_fit[g]) > gate.threshold).double().mean())
    return min(per.values()), per


def lookalike_val(spec, sets, reads, fpr=0.05):
    """FPR on the look-alikes' fit splits (in-sample when they are hard negatives: reported only)."""
    gate, score = G.fit_fold(spec, sets, reads, None, fpr)
    return {"xstest_safe_fit_fpr": float((score(sets.xstest["safe_fit"]) > gate.threshold).double().mean()),
            "orbench_hard_fit_fpr": float((score(sets.orbench["hard_fit"]) > gate.threshold).double().mean())}


DATA = {"plain": {}, "broad": {"hard_negatives": True, "augment_wrapped": True, "balance": True},
        "balanced": {"balance": True}, "hardneg": {"hard_negatives": True, "augment_wrapped": True}}
KINDS = {"scs": ("scs", {"rank_benign": 16, "rank_target": 4}), "probe": ("probe", {"C": 0.1}),
         "dir1": ("harm_dir", {"shrinkage": 1.0}), "dir05": ("harm_dir", {"shrinkage": 0.5}),
         "dir09": ("harm_dir", {"shrinkage": 0.9})}


def spec_of(kind, data, reading, layers):
    k, p = KINDS[kind]
    return G.normalise_spec(f"{kind}/{data}/{reading}/L{'+'.join(map(str, layers))}",
                            {"kind": k, "params": {**p, "layer": layers[-1]}, "reading": reading, "layers": layers,
                             **DATA[data]})


#: ``--quick``: a few prompts per set (the tiny random model, its last layer only)
QUICK_CAPS = {"harm_fit": 6, "harm_test": 4, "alpaca_fit": 12, "alpaca_val": 12, "alpaca_test": 8, "orbench_fit": 6,
              "orbench_test": 6, "wrapped_test": 2, "wrapped_benign": 4, "aug_harm": 1, "aug_benign": 4}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny random model, last layer, QUICK_CAPS")
    ap.add_argument("--model", default=MODEL, help="model (default: $MODEL, else SmolLM2-135M-Instruct)")
    ap.add_argument("--work", default=WORK, help="reads cache and research/ outputs (default: $GATES_WORK)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    quick = QUICK or args.quick
    model_name = args.model or ("tiny-random" if args.quick else None)
    work, out = args.work, os.path.join(args.work, "research")
    os.makedirs(out, exist_ok=True)
    m = steerlens.load_model(model_name) if model_name else steerlens.load_model()
    caps = QUICK_CAPS if args.quick else json.loads(os.environ["CAPS"]) if os.environ.get("CAPS") else None
    sets = G.build_eval_sets(args.data_dir, caps=caps, max_template_chars=300 if args.quick else 1000)
    upto = min(UPTO, m.n_layers - 1)
    reads = G.read_sets(m, sets, layers=list(range(upto + 1)), readings=("last", "post", "mean"),
                        cache_dir=os.path.join(work, "reads") if not model_name else os.path.join(work, "reads_" + model_name))
    t0 = time.time()
    rows = []
    step = int(os.environ.get("LAYER_STEP", "2"))
    layers = list(range(2, upto + 1, step)) if not quick else [upto]
    # stage 1: single layer, every reading, cheap gates, plain vs broad data
    for reading in ("last", "post"):
        for layer in layers:
            for kind, data in (("dir1", "plain"), ("dir1", "broad"), ("dir05", "broad"), ("scs", "plain")):
                if True:
                    sp = spec_of(kind, data, reading, [layer])
                    worst, per = select_loso(sp, sets, reads)
                    rows.append({"name": sp["name"], "kind": kind, "data": data, "reading": reading, "layers": [layer],
                                 "sel_worst": worst, "sel_per": per})
                    print(sp["name"], round(worst, 3), round(time.time() - t0), "s", flush=True)
        print(reading, "done", round(time.time() - t0), "s", flush=True)
        atomic_write_json(os.path.join(out, "stage1.json"), rows)
    # stage 2: probes and the other data recipes at the best layers of stage 1 (last-token)
    best_layers = sorted({r["layers"][0] for r in sorted([r for r in rows if r["reading"] == "last"],
                                                         key=lambda r: -r["sel_worst"])[:2]} | {min(14, upto)})
    for layer in best_layers:
        for kind, data in [("probe", "broad"), ("dir1", "balanced"), ("dir1", "hardneg"), ("dir09", "broad")]:
            sp = spec_of(kind, data, "last", [layer])
            worst, per = select_loso(sp, sets, reads)
            rows.append({"name": sp["name"], "kind": kind, "data": data, "reading": "last", "layers": [layer],
                         "sel_worst": worst, "sel_per": per})
            print(sp["name"], round(worst, 3), round(time.time() - t0), "s", flush=True)
    print("stage 2 done", round(time.time() - t0), "s", flush=True)
    atomic_write_json(os.path.join(out, "stage1.json"), rows)
    # stage 3: several layers at once (concatenated), best reading/kind from stage 1
    top = sorted(rows, key=lambda r: -r["sel_worst"])
    for reading in ("last", "post"):
        cand = [r for r in top if r["reading"] == reading and r["kind"] in ("dir1", "dir05", "dir09")][:1]
        for r in cand:
            l = r["layers"][0]
            for ls in ([max(0, l - 2), l], [l, min(upto, l + 2)]):
                ls = sorted(set(ls))
                sp = spec_of(r["kind"], r["data"], reading, ls)
                worst, per = select_loso(sp, sets, reads)
                rows.append({"name": sp["name"], "kind": r["kind"], "data": r["data"], "reading": reading,
                             "layers": ls, "sel_worst": worst, "sel_per": per})
    print("stage 3 done", round(time.time() - t0), "s", flush=True)
    atomic_write_json(os.path.join(out, "stage1.json"), rows)
    # look-alike FPR (fit splits) of the top configurations, for the record
    deploy = [r for r in rows if r["reading"] == "last" and len(r["layers"]) == 1]
    ranked = sorted(deploy, key=lambda r: (-r["sel_worst"], r["name"]))
    for r in ranked[:8]:
        r.update(lookalike_val(spec_of(r["kind"], r["data"], r["reading"], r["layers"]), sets, reads))
    atomic_write_json(os.path.join(out, "stage1.json"), rows)
    best = ranked[0]
    best_any = sorted(rows, key=lambda r: (-r["sel_worst"], r["name"]))[0]
    summary = {"best_deployable": best, "best_any_reading": best_any, "top_deployable": ranked[:8],
               "by_layer_last": {k: {str(r["layers"][0]): r["sel_worst"] for r in rows
                                     if r["reading"] == "last" and len(r["layers"]) == 1 and r["kind"] + "/" + r["data"] == k}
                                 for k in sorted({r["kind"] + "/" + r["data"] for r in rows})}}
    atomic_write_json(os.path.join(out, "selection.json"), summary)
    print("best deployable", best["name"], best["sel_worst"], "| best any", best_any["name"], best_any["sel_worst"])


    return 0


if __name__ == "__main__":
    raise SystemExit(main())
