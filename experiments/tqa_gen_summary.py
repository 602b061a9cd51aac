"""Open-ended TruthfulQA (``truthfulqa_gen``) scored offline, per method with paired differences
against the unsteered model: True, Info and True × Info (issue #25, ODESteer's headline metric).

    steerlens eval --tasks truthfulqa_gen --steering none runs/odesteer_authors/artifacts/rows --alpha 0.2 \\
        --split test --out runs/tqagen/ode
    steerlens eval --tasks truthfulqa_gen --steering runs/mose/tqa-authors/artifacts/caa --alpha 4 --split test \\
        --out runs/tqagen/caa
    steerlens fit --method iti --task truthfulness --out runs/tqagen/iti-art
    steerlens eval --tasks truthfulqa_gen --steering runs/tqagen/iti-art --alpha 5 --split test --out runs/tqagen/iti
    python experiments/tqa_gen_summary.py runs/tqagen/ode runs/tqagen/caa runs/tqagen/iti

"True" is the TruthfulQA paper's BLEU comparison (max BLEU to a true reference above max BLEU to a
false one), "Info" is "not a non-answer". This offline judge agrees with 128 hand labels only at
chance (kappa 0.06 true, 0.05 info; ``tests/fixtures/README.md``), so the figures say what that
judge measures, not what the authors' 7B judges would.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from steerlens.evals.compare import paired_difference
from steerlens.evals.stats import rate_or_mean_ci
from steerlens.fileio import atomic_write_report

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "fidelity" / "tqa_gen_offline.json"
METRICS = ("true", "info", "true_info")


def per_example(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{steering: {metric: {question id: 0/1}}}`` from an eval folder's samples.jsonl."""
    out: dict = {}
    for line in (Path(run) / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        t, i = float(bool(r["bleu_acc"])), float(bool(r["informative"]))
        d = out.setdefault(r["steering"], {m: {} for m in METRICS})
        d["true"][r["id"]], d["info"][r["id"]], d["true_info"][r["id"]] = t, i, t * i
    return out


def summarize(runs: list[Path]) -> dict:
    methods: dict = {}
    for run in runs:
        alpha = json.loads((Path(run) / "results.json").read_text())["meta"].get("alpha")
        for name, vals in per_example(run).items():
            key = name if name == "none" else f"{name} (α {alpha:g})" if alpha is not None else name
            if name == "none" and "none" in methods:
                continue  # the unsteered rows of another run: the same sampled decoding, kept once
            methods[key] = {"run": str(run), "values": vals}
    if "none" not in methods:
        raise SystemExit("no unsteered run among the inputs (pass --steering none in one of them)")
    base = methods["none"]["values"]
    s: dict = {"judge": "offline: BLEU true-vs-false (True), not a non-answer (Info); agreement with 128 hand "
                        "labels kappa 0.06 / 0.05 (chance)", "methods": {}, "paired_vs_unsteered": {}}
    for k, v in methods.items():
        s["methods"][k] = {"run": v["run"]}
        for m in METRICS:
            vals = list(v["values"][m].values())
            x, lo, hi, how = rate_or_mean_ci(vals, kind="rate")
            s["methods"][k][m] = {"value": x, "ci": [lo, hi], "n": len(vals), "ci_method": how}
        if k != "none":
            s["paired_vs_unsteered"][k] = {m: paired_difference(v["values"][m], base[m], kind="rate") for m in METRICS}
    return s


def render(s: dict) -> str:
    f = lambda d: f"{d['value']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"  # noqa: E731
    L = [f"Judge: {s['judge']}.", "", "| method | True | Info | True × Info | n |", "|---|---|---|---|---|"]
    for k, d in s["methods"].items():
        L.append(f"| {k} | {f(d['true'])} | {f(d['info'])} | {f(d['true_info'])} | {d['true']['n']} |")
    L += ["", "Paired differences, method − unsteered (same questions; Newcombe 95% CI):", "",
          "| method | ΔTrue | ΔInfo | ΔTrue × Info | n |", "|---|---|---|---|---|"]
    g = lambda d: f"{d['value']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"  # noqa: E731
    for k, d in s["paired_vs_unsteered"].items():
        L.append(f"| {k} | {g(d['true'])} | {g(d['info'])} | {g(d['true_info'])} | {d['true']['n']} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="steerlens eval --tasks truthfulqa_gen output folders")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    s = summarize([Path(r) for r in args.runs])
    md = render(s)
    atomic_write_report(args.out, s, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
