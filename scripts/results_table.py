#!/usr/bin/env python
"""Write the results table (best setting of each method, chosen on val, reported on test).

Usage: python scripts/results_table.py [SWEEP_DIR ...] [--out results/RESULTS.md]
Default sweep dirs: every runs/sweeps/*/ that holds a sweep.json (written by `steerlens sweep`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steerlens.fileio import atomic_write_text
from steerlens.pipeline.sweep import results_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="*", help="sweep output directories (default: runs/sweeps/*)")
    p.add_argument("--out", default="results/RESULTS.md")
    args = p.parse_args(argv)
    dirs = args.dirs or sorted(str(d) for d in Path("runs/sweeps").glob("*") if (d / "sweep.json").exists())
    if not dirs:
        print("no sweep results: run `python -m steerlens sweep ... --out runs/sweeps/NAME` first", file=sys.stderr)
        return 1
    text = "# Steering results (default model)\n\n" + results_table(dirs)
    out = Path(args.out)
    atomic_write_text(out, text)
    print(f"wrote {out} ({len(dirs)} sweeps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
