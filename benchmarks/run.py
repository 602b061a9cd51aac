"""Run every benchmark (benchmarks/bench_*.py), each writing <out>/<name>.json.

    python benchmarks/run.py --out benchmarks/results [--quick] [--only hooks,real]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    args = ap.parse_args()
    here = Path(__file__).parent
    names = sorted(p.stem[len("bench_"):] for p in here.glob("bench_*.py"))
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - set(names)
        if unknown:
            print(f"unknown benchmark(s) {sorted(unknown)}; have {names}", file=sys.stderr)
            return 2
        names = wanted
    failed = []
    for name in names:
        cmd = [sys.executable, str(here / f"bench_{name}.py"), "--out", str(Path(args.out) / f"{name}.json")]
        if args.quick:
            cmd.append("--quick")
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
