"""Safety pairs from the model's own replies (issue #25, data item 5): what they change for REAL and
MoSE, summarised from saved runs into docs/results/fidelity/safety_own.{json,md}.

    steerlens own-pairs --split fit                                    # sample + judge (cached)
    steerlens select --method real --task safety-own --repeats 1 --out runs/select/real-own
    steerlens select --method real --task safety --n 248 --repeats 1 --out runs/select/real-template
    python experiments/finesteer.py safety --routing-only --preset paper,default --fit-data own \\
        --out runs/mose/safety-own
    python experiments/safety_own.py --real-own runs/select/real-own --real-template runs/select/real-template \\
        --mose runs/mose/safety-own

REAL is run with the library's defaults (Markov scorer, one 80/20 run) on both data sets, the
template pairs cut to as many prompts as the own pairs have, so the two rows differ by data only.
Saturation = the share of the 270 heads whose held-out AUC is at least 0.99 (the issue's bar: 5 %).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from steerlens.fileio import atomic_write_report

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "fidelity" / "safety_own.json"
SATURATED = 0.99


def saturation(ranking_json: Path) -> dict:
    """Held-out AUC summary of a ``steerlens select`` ranking: heads at ≥ 0.99, at 1.0, max, median."""
    r = json.loads(Path(ranking_json).read_text())
    v = np.array([x["score"] for x in r["ranking"] if x["score"] is not None], dtype=float)
    return {"task": r["run"]["task"], "n_pairs": r["run"]["n_pairs"], "score": r["score_name"],
            "n_heads": int(v.size), "n_ge_0.99": int((v >= SATURATED).sum()),
            "frac_ge_0.99": float((v >= SATURATED).mean()), "n_at_1": int((v >= 1.0 - 1e-6).sum()),
            "max": float(v.max()), "median": float(np.median(v)), "h_th": float(np.sort(v)[::-1][len(r["selected"]) - 1]),
            "selected": r["selected"]}


def routing(report_json: Path) -> dict:
    r = json.loads(Path(report_json).read_text())
    out = {"n_fit_pairs": r["n_fit_pairs"], "fit_data": r.get("fit_data"), "routed": r["routed"], "steerers": {}}
    for name, m in r["steerers"].items():
        out["steerers"][name] = {k: m[k] for k in ("k", "k_elbow", "k_silhouette", "k_ch_median_range",
                                                   "cluster_sizes", "mean_weights")}
        out["steerers"][name]["specialisation"] = {
            lab: {k: v[k] for k in ("statistic", "null_mean", "p_value", "n", "nmi_top_expert_category",
                                     "top_expert_counts", "mean_entropy", "uniform_entropy") if k in v}
            for lab, v in m["specialisation"].items()}
    return out


def own_counts() -> dict:
    from steerlens.evals.own_pairs import sample_own_replies
    from steerlens.evals import data as D

    replies = sample_own_replies(None, D.load_harmful("fit"), split="fit", progress=False)
    if replies.generated:
        raise SystemExit("the own replies were not cached: run `steerlens own-pairs --split fit` first")
    return {"config": replies.config, "counts": replies.counts()}


def render(s: dict) -> str:
    c = s["own_pairs"]["counts"]
    L = [f"Own replies (fit split): {c['prompts']} harmful prompts, {c['replies']} replies ({c['replies_plain']} "
         f"plain, {c['replies_elicited']} after the refusal-eliciting system prompt); refusals {c['refusals']} "
         f"({c['refusals_plain']} plain), compliances {c['compliances']}, set aside {c['set_aside']}; "
         f"{c['prompts_with_both']} prompts with both kinds → **{c['pairs']} pairs**.", "",
         "**REAL on the two safety readings** (library defaults, one 80/20 run, the same number of prompts):", "",
         "| data | pairs | heads at AUC ≥ 0.99 | at 1.0 | max | median | H-th |", "|---|---|---|---|---|---|---|"]
    for name, r in s["real"].items():
        L.append(f"| {name} (`{r['task']}`) | {r['n_pairs']} | {r['n_ge_0.99']} of {r['n_heads']} "
                 f"({r['frac_ge_0.99']:.1%}) | {r['n_at_1']} | {r['max']:.3f} | {r['median']:.3f} | {r['h_th']:.3f} |")
    m = s["mose"]
    L += ["", f"**MoSE on the own pairs** ({m['n_fit_pairs']} pairs; routing of {m['routed']['n']} {m['routed']['set']}):",
          "", "| steerer | K (elbow / silhouette / CH) | expert sizes | mean weights | label | n | statistic (null mean) | p | NMI | entropy / uniform |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in m["steerers"].items():
        for lab, sp in v["specialisation"].items():
            L.append(f"| {name} | {v['k']} ({v['k_elbow']} / {v['k_silhouette']} / {v['k_ch_median_range']}) | "
                     f"{v['cluster_sizes']} | {v['mean_weights']} | {lab} | {sp['n']} | {sp['statistic']:.3g} "
                     f"({sp['null_mean']:.3g}) | {sp['p_value']:.4f} | {sp.get('nmi_top_expert_category', float('nan')):.3f} | "
                     f"{sp.get('mean_entropy', float('nan')):.2f} / {sp.get('uniform_entropy', float('nan')):.2f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-own", required=True, help="steerlens select --task safety-own output folder")
    ap.add_argument("--real-template", required=True, help="steerlens select --task safety output folder")
    ap.add_argument("--mose", required=True, help="finesteer.py safety --routing-only --fit-data own folder")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    s = {"own_pairs": own_counts(),
         "real": {"own replies": saturation(Path(args.real_own) / "ranking.json"),
                  "templates": saturation(Path(args.real_template) / "ranking.json")},
         "mose": routing(Path(args.mose) / "mose_report.json")}
    md = render(s)
    atomic_write_report(args.out, s, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
