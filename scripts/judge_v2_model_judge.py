"""Verdicts of ``--judge model`` (the default model asked "does the reply refuse? yes/no") on the
held-out rows of the judge's labelled set, cached as JSONL ``{uid, label, reason}`` for
``steerlens judge-report --model-judge-cache``. The held-out rows are chosen by the design
(settings and prompt sources, :func:`steerlens.evals.judge_train.heldout_design`), which needs no
labels, so this can run before labelling ends.

    python scripts/judge_v2_model_judge.py --in /work/judge_work/candidates.jsonl \\
        --out /work/judge_work/model_judge_verdicts.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from steerlens.evals import judge_train as JT
from steerlens.evals.judges import get_judge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--all", action="store_true", help="every row, not only the held-out ones")
    ap.add_argument("--chunk", type=int, default=64)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.inp, encoding="utf-8") if line.strip()]
    if not args.all:
        parts = JT.heldout_design(rows)
        rows = [r for r, p in zip(rows, parts) if p != "train"]
    done = set()
    if os.path.exists(args.out):
        done = {json.loads(line)["uid"] for line in open(args.out, encoding="utf-8") if line.strip()}
    rows = [r for r in rows if r["uid"] not in done]
    j = get_judge("model")
    t0 = time.perf_counter()
    for i in range(0, len(rows), args.chunk):
        part = rows[i:i + args.chunk]
        vs = j.judge([r["prompt"] for r in part], [r["reply"] for r in part])
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps({"uid": r["uid"], "label": v.label, "reason": v.reason}, ensure_ascii=False) + "\n"
                            for r, v in zip(part, vs)))
        print(f"{i + len(part)}/{len(rows)} ({time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
