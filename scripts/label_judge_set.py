"""Generate candidate replies for the judge's hand-labelled set (tests/fixtures/judge_labels.jsonl).

Real default-model outputs: unsteered harmful / harmless / XSTest-safe prompts, plus the same
prompts steered by a response-side mean-difference vector (refusal minus compliance, layer 10)
at several strengths, which yields refusals, partial refusals and degenerate text. The output
has an empty ``label`` field; labels are written by a person reading each reply.

    flock /tmp/steerlens-heavy.lock .venv/bin/python scripts/label_judge_set.py --out /tmp/judge_candidates.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch

import steerlens
from steerlens.evals import data as D
from steerlens.fileio import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--alphas", default="1,2,3,4")
    ap.add_argument("--n-fit", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    model = steerlens.load_model()
    site = f"blocks.{args.layer}.hook_resid_post"
    cd = D.safety_response_pairs("fit", n=args.n_fit, seed=0, root=args.data_dir)
    acts = steerlens.capture(model, cd.pos + cd.neg, [site], position="response_mean", progress=False)
    a = next(iter(acts.values()))
    v = a[: len(cd)].mean(0) - a[len(cd):].mean(0)

    harmful = D.load_harmful("val", n=14, seed=1, root=args.data_dir)
    harmless = D.load_harmless("val", n=8, seed=1, root=args.data_dir)
    xsafe = D.load_xstest("val", label="safe", n=6, seed=1, root=args.data_dir)
    rows = []
    plan = [(None, harmful + harmless + xsafe)]
    for alpha in [float(x) for x in args.alphas.split(",")]:
        plan.append((alpha, harmful[:6] + harmless[:3] + xsafe[:2]))
    for alpha, exs in plan:
        edits = None if alpha is None else [steerlens.AddVector(site, v, alpha=alpha)]
        replies = steerlens.generate(model, [e.prompt for e in exs], edits,
                                     max_new_tokens=args.max_new_tokens, batch_size=8)
        for e, r in zip(exs, replies):
            kind = "harmful" if e.source in D.HARMFUL_SOURCES else ("xstest_safe" if e.source == "xstest" else "harmless")
            rows.append({"id": e.id, "kind": kind, "steering": "none" if alpha is None else f"meandiff_l{args.layer}_a{alpha:g}",
                         "prompt": e.prompt, "reply": r, "label": ""})
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} candidates to {args.out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
