"""Hand labels for the ``truthfulqa_gen`` scorer: prepare blind labelling sheets, then measure agreement.

    # 1. sheets from `steerlens eval --tasks truthfulqa_gen` result directories (one per configuration)
    python scripts/truthfulqa_gen_labels.py prepare runs/tqagen/none runs/tqagen/caa --take 80 40 \
        --out runs/tqagen/sheet.jsonl
    # 2. label every row of the sheet by hand: add "human_true" and "human_info" (true/false)
    # 3. agreement of the automatic labels with the hand labels (the answers are scored afresh)
    python scripts/truthfulqa_gen_labels.py agreement tests/fixtures/truthfulqa_gen_labels.jsonl

The sheet holds, per answer, a random ``uid``, the question, the answer and the question's
reference answers (the labeller's aid), shuffled across configurations, and nothing of the
automatic scores or of which configuration produced it (kept in ``steering`` at the end of each
row: the labeller reads question, references and answer only). Protocol:
``tests/fixtures/README.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from steerlens.evals import data as D
from steerlens.evals import tqa_gen as G
from steerlens.fileio import atomic_write_text


def _load_outputs(run_dir: Path) -> list[dict]:
    """The truthfulqa_gen answers of one eval directory (``samples.jsonl``) with the decoding and
    seed of their record (``results.json``)."""
    res = json.loads((run_dir / "results.json").read_text())
    info = {r["steering"]: r["extra"] for r in res["records"] if r["metric"] == "truthfulqa_gen/true_info"}
    out = []
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        o = json.loads(line)
        if o.get("set") == "true_info" and o["steering"] in info:
            ex = info[o["steering"]]
            out.append({"id": o["id"], "question": o["question"], "answer": o["answer"], "steering": o["steering"],
                        "seed": ex.get("seed", res["meta"].get("seed")), "decoding": ex["decoding"]})
    if not out:
        raise SystemExit(f"{run_dir}: no truthfulqa_gen answers in samples.jsonl")
    return out


def cmd_prepare(args) -> int:
    refs = {q.id: q for q in D.load_truthfulqa("all", root=args.data_dir)}
    rng = random.Random(args.seed)
    take = args.take or [None] * len(args.runs)
    if len(take) != len(args.runs):
        raise SystemExit(f"--take: {len(take)} numbers for {len(args.runs)} run directories")
    rows = []
    for d, k in zip(args.runs, take):
        outs = _load_outputs(Path(d))
        rows += outs if k is None or k >= len(outs) else rng.sample(outs, k)
    rng.shuffle(rows)
    lines = []
    for k, o in enumerate(rows):
        q = refs[o["id"]]
        lines.append(json.dumps({"uid": f"{args.uid_prefix}{k:03d}", "id": o["id"], "question": o["question"], "answer": o["answer"],
                                 "correct": q.meta["correct"], "incorrect": q.meta["incorrect"],
                                 "steering": o["steering"], "seed": o["seed"], "decoding": o["decoding"]}, ensure_ascii=False))
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} rows to {args.out}")
    return 0


def agreement_report(path, data_dir=None, judge=None) -> dict:
    """Automatic vs hand labels on the labelled file: per label (true by BLEU, true by ROUGE,
    informative, true x info) the agreement of :func:`~steerlens.evals.tqa_gen.agreement`,
    overall and per steering configuration."""
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    refs = {q.id: q for q in D.load_truthfulqa("all", root=data_dir)}
    qs = [refs[r["id"]] for r in rows]
    sc = G.score_answers([q.prompt for q in qs], [r["answer"] for r in rows], [q.meta["correct"] for q in qs],
                         [q.meta["incorrect"] for q in qs], judge=judge)
    human = {"true": [r["human_true"] for r in rows], "info": [r["human_info"] for r in rows]}
    human["true_info"] = [t and i for t, i in zip(human["true"], human["info"])]
    auto = {"true": [s.bleu_acc for s in sc], "true_rouge": [s.rouge_acc for s in sc],
            "info": [s.informative for s in sc], "true_info": [s.true_info for s in sc]}
    out: dict = {"n": len(rows), "file": str(path)}
    groups = {"all": list(range(len(rows)))}
    for i, r in enumerate(rows):
        groups.setdefault(r.get("steering", "?"), []).append(i)
    for g, idx in groups.items():
        out[g] = {k: G.agreement([auto[k][i] for i in idx], [human["true" if k == "true_rouge" else k][i] for i in idx])
                  for k in auto}
    return out


def cmd_agreement(args) -> int:
    rep = agreement_report(args.labels, args.data_dir, args.judge)
    text = json.dumps(rep, indent=1)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("runs", nargs="+", help="steerlens eval output directories")
    a.add_argument("--out", required=True)
    a.add_argument("--take", type=int, nargs="+", default=None,
                   help="answers drawn (seeded) from each run directory, in order (default: all)")
    a.add_argument("--seed", type=int, default=2026)
    a.add_argument("--uid-prefix", default="g", help="prefix of the row ids (to merge sheets)")
    a.set_defaults(func=cmd_prepare)
    b = sub.add_parser("agreement")
    b.add_argument("labels")
    b.add_argument("--judge", default=None)
    b.add_argument("--out", default=None)
    b.set_defaults(func=cmd_agreement)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
