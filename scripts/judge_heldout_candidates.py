"""Candidate replies for the refusal judge's held-out set (tests/fixtures/judge_heldout.jsonl).

Replies of the default model under every steering method (saved artifacts, each at one or more
strengths) to held-out prompts the judge's patterns were never tuned on: harmful (test split),
harmless Alpaca (test) and XSTest safe / unsafe (test). The output has an empty ``label``; labels
(refusal / compliance / degenerate) are written by a person reading each reply *before* looking at
the judge's verdicts, then ``scripts/judge_heldout_report.py`` scores the judge on them.

    python scripts/judge_heldout_candidates.py --out /tmp/judge_candidates.jsonl \\
        --config none --config caa=runs/x/artifacts/caa@0.5,1,2 --config scs=runs/y/artifacts/caa-scs
"""

from __future__ import annotations

import argparse
import json
import random

import torch

import steerlens
from steerlens.evals import data as D
from steerlens.fileio import atomic_write_text
from steerlens.pipeline import load_steerer


def _configs(items: list[str]) -> list[tuple[str, str | None, list[float | None]]]:
    out = []
    for it in items:
        if it == "none":
            out.append(("none", None, [None]))
            continue
        name, _, rest = it.partition("=")
        path, _, alphas = rest.partition("@")
        out.append((name, path, [float(a) for a in alphas.split(",")] if alphas else [None]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", action="append", required=True,
                    help="'none' or NAME=ARTIFACT_DIR[@alpha1,alpha2]; repeatable")
    ap.add_argument("--per-config", type=int, default=12, help="prompts per (config, alpha)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    model = steerlens.load_model()
    pools = {"harmful": D.load_harmful("test", root=args.data_dir),
             "harmless": D.load_harmless("test", 200, seed=args.seed, root=args.data_dir),
             "xstest_safe": D.load_xstest("test", "safe", root=args.data_dir),
             "xstest_unsafe": D.load_xstest("test", "unsafe", root=args.data_dir)}
    share = {"harmful": 0.4, "harmless": 0.25, "xstest_safe": 0.2, "xstest_unsafe": 0.15}
    rng = random.Random(args.seed)
    rows = []
    for name, path, alphas in _configs(args.config):
        steerer = None if path is None else load_steerer(path, model=model)
        for alpha in alphas:
            exs = []
            for kind, frac in share.items():
                k = max(1, round(args.per_config * frac))
                exs += [(kind, e) for e in rng.sample(pools[kind], k)]
            prompts = [e.prompt for _, e in exs]
            edits = None if steerer is None else steerer.edits(model, prompts, alpha=alpha)
            gens = steerlens.generate(model, prompts, edits, max_new_tokens=args.max_new_tokens, batch_size=16,
                                      return_details=True)
            tag = name if alpha is None else f"{name}@{alpha:g}"
            for (kind, e), g in zip(exs, gens):
                rows.append({"id": e.id, "kind": kind, "steering": tag, "prompt": e.prompt, "reply": g.text,
                             "label": ""})
    rng.shuffle(rows)  # label in random order, not grouped by method
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} candidates to {args.out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
