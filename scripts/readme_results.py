#!/usr/bin/env python
"""Copy the results table (results/RESULTS.md, written by scripts/sweep_baselines.py) into
README.md between the ``<!-- results:start -->`` and ``<!-- results:end -->`` markers.

Usage: python scripts/readme_results.py [--table results/RESULTS.md] [--readme README.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steerlens.fileio import atomic_write_text

START, END = "<!-- results:start -->", "<!-- results:end -->"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default="results/RESULTS.md")
    p.add_argument("--readme", default="README.md")
    args = p.parse_args(argv)
    table, readme = Path(args.table), Path(args.readme)
    if not table.exists():
        print(f"{table} not found: run `make results` (scripts/sweep_baselines.py) first", file=sys.stderr)
        return 1
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"{readme} has no {START} ... {END} markers", file=sys.stderr)
        return 1
    body = table.read_text().strip()
    # drop the table file's own top-level title; the README section has one
    lines = [ln for ln in body.splitlines() if not ln.startswith("# ")]
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, f"{head}{START}\n" + "\n".join(lines).strip() + f"\n{END}{tail}")
    print(f"updated {readme} from {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
