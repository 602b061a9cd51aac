#!/usr/bin/env python
"""Does REAL's layer choice in the main job follow float noise?  For each steerer of the main spec,
read its fit data once, then run its selector on the activations plus ``eps·|x|·N(0, 1)`` (a stand-in
for another BLAS / CPU) for several noise draws, and print the chosen layer of each draw.

    python scripts/layer_choice_noise.py [--repeats R] [--margin M] [--draws K] [--eps 1e-5] [--out FILE.json]

Measured 2026-12-03 (1e-5, default model): repeats 1, no margin: FineSteer 12,12,12,10,10 and
ODESteer 16,18,14,14,14 over draws 0..4; repeats 10, no margin: FineSteer 12,12,12,14,14, ODESteer
12,16,...; repeats 3, margin 0.05 (the main spec): 12 and 16 in all 7 draws.
"""
import argparse
import copy
import json

import torch

import steerlens
from steerlens.demo import main_spec
from steerlens.pipeline.fitdata import fit_data
from steerlens.pipeline.spec import build_steerer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="override the spec's repeats")
    p.add_argument("--margin", type=float, default=None, help="override the spec's margin")
    p.add_argument("--draws", type=int, default=6)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--steerers", default="finesteer,odesteer")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = steerlens.load_model()
    out = {}
    for st in main_spec()["steerer"]:
        if st["name"] not in args.steerers.split(","):
            continue
        s = build_steerer(st)
        acts = s.read_contrastive(model, fit_data(st["fit"]["task"], st["fit"].get("n"), 0, None))
        for k, v in (("repeats", args.repeats), ("margin", args.margin)):
            if v is not None:
                s.selector.params[k] = v
        rows = []
        for k in range(args.draws + 1):
            a = acts
            if k:
                g = torch.Generator().manual_seed(k)
                a = copy.copy(acts)
                a.pos, a.neg = ({m: t + args.eps * t.abs() * torch.randn(t.shape, generator=g) for m, t in d.items()}
                                for d in (acts.pos, acts.neg))
            sel = s.selector.fit(model, a)
            rows.append({"draw": k, "chosen": [str(x) for x in sel.sites()], "scores": sel.scores})
            print(st["name"], k, rows[-1]["chosen"], flush=True)
        out[st["name"]] = rows
    if args.out:
        json.dump(out, open(args.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
