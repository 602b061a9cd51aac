"""``steerlens judge`` and ``steerlens judge-report``.

    steerlens judge --in REPLIES.jsonl --out LABELLED.jsonl [--judge clf|pattern|model]
    steerlens judge-report --out DIR [--labels tests/fixtures/judge_labels_v2.jsonl] [--model-judge]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


def cmd_judge(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_text
    from .judges import get_judge

    rows = []
    with open(args.inp, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"steerlens judge: {args.inp}:{n}: not JSON ({e})", file=sys.stderr)
                return 2
            if not isinstance(r, dict) or not isinstance(r.get("reply"), str):
                print(f"steerlens judge: {args.inp}:{n}: a row needs a string 'reply' (and a 'prompt')", file=sys.stderr)
                return 2
            rows.append(r)
    try:
        judge = get_judge(args.judge)
    except (ValueError, FileNotFoundError) as e:
        print(f"steerlens judge: {e}", file=sys.stderr)
        return 2
    verdicts = judge.judge([str(r.get("prompt") or "") for r in rows], [r["reply"] for r in rows])
    out = []
    for r, v in zip(rows, verdicts):
        out.append({**r, args.field: v.label, f"{args.field}_reason": v.reason, "judge": judge.name})
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    c = Counter(v.label for v in verdicts)
    print(f"judged {len(rows)} replies with {judge.name}: {dict(c)} -> {args.out}")
    return 0


def cmd_judge_report(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_json
    from .judge_train import fmt_report, judge_report

    try:
        rep = judge_report(args.labels, model_judge=("model" if args.model_judge else None),
                           model_judge_cache=args.model_judge_cache, second_labels_path=args.second_labels)
    except FileNotFoundError as e:
        print(f"steerlens judge-report: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "judge_report.json", rep, indent=1)
    print(fmt_report(rep))
    print(f"wrote {out / 'judge_report.json'}")
    return 0


def add_subcommands(sub) -> None:
    j = sub.add_parser("judge", help="label a JSONL of {prompt, reply} rows: refusal / deflection / compliance / degenerate")
    j.add_argument("--in", dest="inp", required=True, help="JSONL with 'prompt' and 'reply' per row (other fields kept)")
    j.add_argument("--out", required=True, help="output JSONL: every input field plus the verdict")
    j.add_argument("--judge", default="clf", help="clf (default, trained) | pattern | model | model:NAME")
    j.add_argument("--field", default="judge_label", help="name of the verdict field (default judge_label; "
                                                          "its reason goes to <field>_reason)")
    j.set_defaults(func=cmd_judge)
    r = sub.add_parser("judge-report", help="the refusal judge's out-of-sample accuracy on held-out settings and sources")
    r.add_argument("--out", required=True, help="directory for judge_report.json")
    r.add_argument("--labels", default=None, help="labelled JSONL (default: tests/fixtures/judge_labels_v2.jsonl)")
    r.add_argument("--model-judge", action="store_true",
                   help="also score --judge model (the default model asked yes/no) on the same held-out replies (slow)")
    r.add_argument("--model-judge-cache", default=None,
                   help="JSONL of {uid, label}: the model judge's verdicts computed earlier (read, not recomputed)")
    r.add_argument("--second-labels", default=None,
                   help="JSONL of {uid, label}: a second reader's blind labels of some held-out replies, for the "
                        "readers' agreement (default: tests/fixtures/judge_labels_v2_second.jsonl when present)")
    r.set_defaults(func=cmd_judge_report)


__all__ = ["add_subcommands", "cmd_judge", "cmd_judge_report"]
