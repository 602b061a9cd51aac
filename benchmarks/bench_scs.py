"""SCS gate cost: generation tokens/s of CAA + SCS gate against CAA alone (default model, batch 8).

Variants are interleaved (A, B, C, ..., then reversed) and summarised by medians, all in one run:

- ``caa``: CAA at layer 14 (no gate);
- ``caa+scs@L{g}``: the same CAA with a fitted SCS gate at layer ``g``, on 4 harmful + 4 benign
  prompts (the gate opens some rows, so texts and lengths differ from ``caa``: compare tokens/s);
- ``caa+scs@L{g}-open``: the same gate with its threshold lowered so every row is open: the
  generated tokens are identical to ``caa``, so the ratio is the gate's pure overhead.

A gate at or before the edited layer (``g <= 14``) is read inside the normal forward pass; a gate
after it (``g > 14``) needs the short prompt pre-pass (up to layer ``g``) the runners add.

    python benchmarks/bench_scs.py --out benchmarks/results/scs.json
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
from steerlens.pipeline import make_steerer
from steerlens.pipeline.methods.finesteer import SCSGate
from steerlens.pipeline.fitdata import gate_data

from common import interleaved, machine_info, medians, plain_hf, plain_hf_generate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/scs.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--caa-layer", type=int, default=14)
    ap.add_argument("--gate-layers", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--n-fit", type=int, default=32, help="fitting prompts / pairs (speed does not depend on fit quality)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.new_tokens, args.n_fit = 1, 8, 8
    t0 = time.time()
    model = steerlens.load_model()
    caa = make_steerer("caa", layer=args.caa_layer, alpha=1.0).fit(model, D.safety_response_pairs("fit", n=args.n_fit))
    gd = gate_data("safety", args.n_fit)
    half = args.batch_size // 2
    prompts = [e.prompt for e in D.load_harmful("val", half)] + [e.prompt for e in D.load_harmless("val", args.batch_size - half)]
    variants = {"caa": caa}
    for g in args.gate_layers:
        st = caa.with_gate(SCSGate(g, rank_benign=16, rank_target=4)).fit_gate(model, gd)
        variants[f"caa+scs@L{g}"] = st
        forced = copy.copy(st.gate)  # the same fitted gate, every row open: same tokens as caa, gate still computed
        forced.threshold = -1e30
        variants[f"caa+scs@L{g}-open"] = st.with_gate(forced)

    counts: dict[str, int] = {}
    opened: dict[str, float] = {}

    def runner(name, st):
        edits = st.edits(model, prompts)

        def run():
            gens = generate(edits)
            counts[name] = sum(len(x.token_ids) for x in gens)
            if "scs" in name:
                opened[name] = sum(x.gates["scs"]["scale"] > 0 for x in gens) / len(gens)
        return run

    def generate(edits):
        return steerlens.generate(model, prompts, edits, max_new_tokens=args.new_tokens, batch_size=args.batch_size,
                                  progress=False, return_details=True)

    fns = {k: runner(k, st) for k, st in variants.items()}
    hf_run = plain_hf_generate(plain_hf(model), model, prompts, args.new_tokens)
    fns["plain_hf"] = lambda: counts.__setitem__("plain_hf", hf_run())
    for fn in fns.values():  # warm-up
        fn()
    times = interleaved(fns, args.repeats)
    med = medians(times)
    tps = {k: counts[k] / med[k] for k in med}
    same_tokens = {}
    base_ids = [x.token_ids for x in generate(variants["caa"].edits(model, prompts))]
    for k in variants:
        if k.endswith("-open"):
            same_tokens[k] = [x.token_ids for x in generate(variants[k].edits(model, prompts))] == base_ids
    result = {
        "benchmark": "scs",
        "machine": machine_info(),
        "model": model.name, "batch_size": args.batch_size, "new_tokens_cap": args.new_tokens, "repeats": args.repeats,
        "caa_layer": args.caa_layer, "gate_layers": args.gate_layers,
        "tokens_generated": counts, "seconds_median": med, "seconds_all": times, "tokens_per_s": tps,
        "ratio_tokens_per_s_vs_caa": {k: tps[k] / tps["caa"] for k in tps if k != "caa"},
        "ratio_time_per_call_vs_caa": {k: med["caa"] / med[k] for k in med if k != "caa"},
        # the outside reference: what a user would otherwise run (the bridge's own cost included)
        "ratio_tokens_per_s_vs_plain_hf": {k: tps[k] / tps["plain_hf"] for k in tps if k != "plain_hf"},
        "gate_open_fraction": opened, "open_variant_same_tokens_as_caa": same_tokens,
        "goal": "CAA+SCS >= 0.95x CAA-alone generation tokens/s",
        "wall_s": time.time() - t0,
    }
    atomic_write_json(args.out, result, indent=2)
    print(json.dumps({k: result[k] for k in ("ratio_tokens_per_s_vs_caa", "ratio_tokens_per_s_vs_plain_hf",
                                             "gate_open_fraction", "open_variant_same_tokens_as_caa", "wall_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
