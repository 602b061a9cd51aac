"""Gate cost (issue #24): generation speed of a gated steerer against the same steerer ungated.

One run, variants interleaved (A B ..., then reversed) and summarised by medians. The steerer is
CAA at layer 14 (FineSteer's default edited layer; the editor's own cost does not depend on the
gate); the gates are FineSteer's stage-1 kinds at their generalisation-protocol layers: ``scs`` @14,
``probe`` @14 and ``harm_dir`` @16 (after the edited layer: read in the short prompt pre-pass).
Each gate also runs ``-open`` (threshold lowered so every row is open: the same tokens as the
ungated run, so the ratio is the gate's pure overhead). Target: gated >= 0.95x ungated.

    python benchmarks/bench_gate_cost.py --out benchmarks/results/gate_cost.json [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import steerlens
from steerlens.evals import data as D
from steerlens.fileio import atomic_write_json
from steerlens.pipeline import make_gate, make_steerer
from steerlens.pipeline.fitdata import gate_data

from common import interleaved, machine_info, medians

GATES = {"scs": ("scs", 14, {"rank_benign": 4, "rank_target": 4}), "probe": ("probe", 14, {"C": 0.1}),
         "harm_dir": ("harm_dir", 16, {"shrinkage": 0.5})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/gate_cost.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-fit", type=int, default=32)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.new_tokens, args.n_fit = 2, 8, 8
    t0 = time.time()
    model = steerlens.load_model()
    caa = make_steerer("caa", layer=14, alpha=1.0).fit(model, D.safety_response_pairs("fit", n=args.n_fit))
    gd = gate_data("safety", args.n_fit)
    half = args.batch_size // 2
    prompts = [e.prompt for e in D.load_harmful("val", half)] + [e.prompt for e in D.load_harmless("val", args.batch_size - half)]
    variants = {"ungated": caa}
    for name, (kind, layer, params) in GATES.items():
        st = caa.with_gate(make_gate(kind, layer=layer, **params)).fit_gate(model, gd)
        variants[name] = st
        forced = copy.copy(st.gate)
        forced.threshold = -1e30
        variants[f"{name}-open"] = st.with_gate(forced)
    counts: dict[str, int] = {}

    def gen(edits):
        return steerlens.generate(model, prompts, edits, max_new_tokens=args.new_tokens, batch_size=args.batch_size,
                                  progress=False, return_details=True)

    def runner(name, st):
        def run():  # edits (the gate's decision included) are resolved per call, as in evaluation
            counts[name] = sum(len(x.token_ids) for x in gen(st.edits(model, prompts)))
        return run

    fns = {k: runner(k, st) for k, st in variants.items()}
    for fn in fns.values():  # warm-up
        fn()
    times = interleaved(fns, args.repeats)
    med = medians(times)
    tps = {k: counts[k] / med[k] for k in med}
    base = [x.token_ids for x in gen(caa.edits(model, prompts))]
    same = {k: [x.token_ids for x in gen(variants[k].edits(model, prompts))] == base for k in variants if k.endswith("-open")}
    result = {"benchmark": "gate_cost", "machine": machine_info(), "model": model.name, "batch_size": args.batch_size,
              "new_tokens_cap": args.new_tokens, "repeats": args.repeats, "gates": {k: list(v) for k, v in GATES.items()},
              "tokens_generated": counts, "seconds_median": med, "seconds_all": times, "tokens_per_s": tps,
              "ratio_tokens_per_s_vs_ungated": {k: tps[k] / tps["ungated"] for k in tps if k != "ungated"},
              "ratio_time_per_call_vs_ungated": {k: med["ungated"] / med[k] for k in med if k != "ungated"},
              "open_variant_same_tokens_as_ungated": same, "goal": "gated >= 0.95x ungated generation speed",
              "quick": args.quick, "wall_s": time.time() - t0}
    atomic_write_json(args.out, result, indent=2)
    print(json.dumps({k: result[k] for k in ("ratio_tokens_per_s_vs_ungated", "ratio_time_per_call_vs_ungated",
                                             "open_variant_same_tokens_as_ungated", "wall_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
