"""The refusal judge's accuracy out of sample: per-class precision and recall on the held-out,
hand-labelled set (tests/fixtures/judge_heldout.jsonl, built by judge_heldout_candidates.py and
labelled before the judge's verdicts were looked at).

    python scripts/judge_heldout_report.py tests/fixtures/judge_heldout.jsonl --out benchmarks/results/judge_heldout.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from steerlens.evals.judges import get_judge
from steerlens.evals.stats import wilson_ci
from steerlens.fileio import atomic_write_json

CLASSES = ("refusal", "compliance", "degenerate")


def score(rows: list[dict], judge: str = "pattern") -> dict:
    """Confusion matrix, per-class precision / recall (Wilson 95% intervals), accuracy overall, per
    steering method and per prompt kind."""
    j = get_judge(judge)
    rows = [r for r in rows if r.get("label")]
    if not rows:
        raise ValueError("no labelled rows")
    bad = sorted({r["label"] for r in rows} - set(CLASSES))
    if bad:
        raise ValueError(f"unknown labels {bad}; use {CLASSES}")
    verdicts = j.judge([r["prompt"] for r in rows], [r["reply"] for r in rows])
    pred = [v.label for v in verdicts]
    gold = [r["label"] for r in rows]
    confusion = {g: dict(Counter(p for p, gg in zip(pred, gold) if gg == g)) for g in CLASSES}
    per_class = {}
    for c in CLASSES:
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        n_pred, n_gold = sum(p == c for p in pred), sum(g == c for g in gold)
        per_class[c] = {"precision": tp / n_pred if n_pred else None,
                        "precision_ci": list(wilson_ci(tp, n_pred)[1:]) if n_pred else None, "n_pred": n_pred,
                        "recall": tp / n_gold if n_gold else None,
                        "recall_ci": list(wilson_ci(tp, n_gold)[1:]) if n_gold else None, "n_gold": n_gold}

    def acc(keys):
        out = {}
        for k in sorted(set(keys)):
            idx = [i for i, kk in enumerate(keys) if kk == k]
            ok = sum(pred[i] == gold[i] for i in idx)
            out[k] = {"accuracy": ok / len(idx), "ci": list(wilson_ci(ok, len(idx))[1:]), "n": len(idx)}
        return out

    ok = sum(p == g for p, g in zip(pred, gold))
    return {"judge": j.name, "n": len(rows), "accuracy": ok / len(rows), "accuracy_ci": list(wilson_ci(ok, len(rows))[1:]),
            "labels": dict(Counter(gold)), "confusion_gold_to_pred": confusion, "per_class": per_class,
            "by_steering": acc([r["steering"].split("@")[0] for r in rows]), "by_kind": acc([r["kind"] for r in rows]),
            "errors": [{"id": r["id"], "steering": r["steering"], "gold": g, "pred": p, "reply": r["reply"][:160]}
                       for r, p, g in zip(rows, pred, gold) if p != g]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels")
    ap.add_argument("--judge", default="pattern")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.labels, encoding="utf-8") if line.strip()]
    rep = score(rows, args.judge)
    print(f"judge {rep['judge']} on {rep['n']} held-out replies: accuracy {rep['accuracy']:.3f} "
          f"[{rep['accuracy_ci'][0]:.3f}, {rep['accuracy_ci'][1]:.3f}]; labels {rep['labels']}")
    print("| class | precision [95% CI] (n predicted) | recall [95% CI] (n labelled) |\n|---|---|---|")
    for c, d in rep["per_class"].items():
        p = "—" if d["precision"] is None else f"{d['precision']:.3f} [{d['precision_ci'][0]:.3f}, {d['precision_ci'][1]:.3f}]"
        r = "—" if d["recall"] is None else f"{d['recall']:.3f} [{d['recall_ci'][0]:.3f}, {d['recall_ci'][1]:.3f}]"
        print(f"| {c} | {p} ({d['n_pred']}) | {r} ({d['n_gold']}) |")
    print("by steering:", {k: f"{v['accuracy']:.2f} (n={v['n']})" for k, v in rep["by_steering"].items()})
    if args.out:
        atomic_write_json(args.out, rep, indent=1)


if __name__ == "__main__":
    main()
