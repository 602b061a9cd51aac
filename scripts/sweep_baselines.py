#!/usr/bin/env python
"""The baseline sweeps behind the results table (`make results`).

Runs, on the default model, each sweep below into runs/sweeps/<name>/ (best setting chosen on the
val split, reported on the test split), then writes results/RESULTS.md with
scripts/results_table.py. A sweep whose sweep.json already exists is skipped unless --force.

    python scripts/sweep_baselines.py [--only caa-safety,iti-truthfulness] [--force] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SWEEPS = {
    "caa-safety": dict(method="caa", task="safety", n_fit=64, layers=[8, 10, 14], alphas=[0.5, 1, 1.5, 2], eval_limit=32),
    "repe-safety": dict(method="repe", task="safety", n_fit=64, layers=[8, 10, 14], alphas=[0.5, 1, 1.5, 2], eval_limit=32),
    "iti-truthfulness": dict(method="iti", task="truthfulness", n_fit=160, heads=[8, 32], alphas=[5, 15], eval_limit=32),
}
QUICK = dict(n_fit=16, eval_limit=8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(SWEEPS))
    p.add_argument("--root", default="runs/sweeps")
    p.add_argument("--table", default="results/RESULTS.md")
    p.add_argument("--model", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="re-run sweeps that already have results")
    p.add_argument("--quick", action="store_true", help=f"small sizes for a smoke run ({QUICK})")
    args = p.parse_args(argv)

    import steerlens
    from steerlens.pipeline.sweep import sweep

    names = list(SWEEPS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SWEEPS]
    if unknown:
        print(f"unknown sweep(s) {unknown}; known: {list(SWEEPS)}", file=sys.stderr)
        return 2
    model = steerlens.load_model(args.model)
    for name in names:
        out = Path(args.root) / name
        if (out / "sweep.json").exists() and not args.force:
            print(f"{name}: results exist in {out} (use --force to re-run)")
            continue
        cfg = dict(SWEEPS[name])
        if args.quick:
            cfg.update(QUICK)
        t0 = time.perf_counter()
        res = sweep(model, cfg.pop("method"), cfg.pop("task"), out_dir=out, data_root=args.data_dir, **cfg)
        print(f"{name}: best {res['best']} ({time.perf_counter() - t0:.0f} s)")
    sys.path.insert(0, str(Path(__file__).parent))
    from results_table import main as table_main

    dirs = [str(Path(args.root) / n) for n in SWEEPS if (Path(args.root) / n / "sweep.json").exists()]
    return table_main(dirs + ["--out", args.table])


if __name__ == "__main__":
    sys.exit(main())
