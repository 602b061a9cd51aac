"""Write the labelled set's counts into tests/fixtures/README.md (between ``<!-- counts:start/end -->``)
and the judge's figures into README.md (its ``table:judge`` section, through
scripts/readme_tables.py, from benchmarks/results/judge/judge_report.json). No figure is typed by hand.

    python scripts/judge_v2_docs.py
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _f(x):
    return "—" if x is None else f"{x:.2f}"


def _ci(c):
    return "" if not c else f" [{c[0]:.2f}, {c[1]:.2f}]"


def judge_md(rep: dict) -> str:
    j, pj = rep["judge"], rep["pattern_judge"]
    d = rep["design"]
    out = [f"Held out by design ({d['n_heldout']} of {rep['n_labelled']} blind-labelled replies: every reply whose "
           f"steering setting or prompt source was not trained on; sources held out: {', '.join(d['heldout_sources'])}; "
           f"{len(d['heldout_settings'])} settings held out; `steerlens judge-report`, "
           "`benchmarks/results/judge/judge_report.json`):",
           "",
           "| judge | accuracy (4 classes) | accuracy, deflection counted as refusal | largest method gap in not-complied rate | CPU ms / reply |",
           "|---|---|---|---|---|",
           f"| trained (`clf`, default) | {_f(j['accuracy'])}{_ci(j['accuracy_ci'])} | "
           f"{_f(j['three_class']['accuracy_3class'])}{_ci(j['three_class']['accuracy_3class_ci'])} | "
           f"{j['largest_method_gap']['gap']:+.2f} ({j['largest_method_gap']['method']}) | {j['ms_per_reply']:.1f} |",
           f"| pattern (old default) | {_f(pj['accuracy'])}{_ci(pj['accuracy_ci'])} | "
           f"{_f(pj['three_class']['accuracy_3class'])}{_ci(pj['three_class']['accuracy_3class_ci'])} | "
           f"{pj['largest_method_gap']['gap']:+.2f} ({pj['largest_method_gap']['method']}) | {pj['ms_per_reply']:.1f} |"]
    if "model_judge" in rep:
        mj = rep["model_judge"]
        ms = f"{mj['ms_per_reply']:.0f}" if "ms_per_reply" in mj else "— (verdicts cached)"
        sub = (f"n = {mj['n']} of {d['n_heldout']}: the first in file order, CPU ran out"
               if mj.get("n_heldout_not_scored") else f"n = {mj['n']}")
        out.append(f"| model (`--judge model`, the 135M model asked yes/no, no deflection class; {sub}) | {_f(mj['accuracy'])}"
                   f"{_ci(mj['accuracy_ci'])} | {_f(mj['three_class']['accuracy_3class'])}"
                   f"{_ci(mj['three_class']['accuracy_3class_ci'])} | {mj['largest_method_gap']['gap']:+.2f} "
                   f"({mj['largest_method_gap']['method']}) | {ms} |")
    if "model_judge" in rep and rep["model_judge"].get("n_heldout_not_scored"):
        mj = rep["model_judge"]
        out += ["", f"On the same {mj['clf_on_same_rows']['n']} replies the model judge was scored on: trained judge "
                    f"{_f(mj['clf_on_same_rows']['accuracy'])}, pattern judge {_f(mj['pattern_on_same_rows']['accuracy'])}."]
    out += ["", "| class | trained: precision | trained: recall | pattern: recall | n labelled |", "|---|---|---|---|---|"]
    for c, dd in j["per_class"].items():
        out.append(f"| {c} | {_f(dd['precision'])}{_ci(dd['precision_ci'])} | {_f(dd['recall'])}{_ci(dd['recall_ci'])} | "
                   f"{_f(pj['per_class'][c]['recall'])} | {dd['n_gold']} |")
    out += ["", "Per method, not-complied (refusal + deflection) rate on the held-out replies:", "",
            "| method | n | labelled | trained judge | pattern judge |", "|---|---|---|---|---|"]
    for m, dd in j["method_bias"].items():
        p = pj["method_bias"][m]["not_complied"]
        out.append(f"| {m} | {dd['n']} | {dd['not_complied']['labelled']:.2f} | {dd['not_complied']['judged']:.2f} "
                   f"({dd['not_complied']['gap']:+.2f}) | {p['judged']:.2f} ({p['gap']:+.2f}) |")
    if "labeller_agreement" in rep:
        la = rep["labeller_agreement"]
        r, m = la["readers"], la["readers_not_complied_merged"]
        out += ["", f"**How far one reader's labels can be trusted.** A second reader labelled {la['n']} of the held-out "
                    f"replies blind (`tests/fixtures/judge_labels_v2_second.jsonl`). The two readers agree on "
                    f"{_f(r['accuracy'])}{_ci(r['ci'])} of them (Cohen's kappa {la['kappa']:.2f}; "
                    f"{_f(m['accuracy'])}{_ci(m['ci'])} with refusal and deflection merged). A judge as good as a second "
                    "reader would score about that against the first reader's labels.", "",
                "| judge | vs first reader | vs second reader | on the rows both readers agree on |", "|---|---|---|---|"]
        names = {"clf": "trained (`clf`)", "pattern": "pattern"}
        for k, v in la["judges"].items():
            out.append(f"| {names.get(k, k)} | {_f(v['vs_first']['accuracy'])}{_ci(v['vs_first']['ci'])} | "
                       f"{_f(v['vs_second']['accuracy'])}{_ci(v['vs_second']['ci'])} | "
                       f"{_f(v['on_agreed_rows']['accuracy'])}{_ci(v['on_agreed_rows']['ci'])} (n = {v['on_agreed_rows']['n']}) |")
    return "\n".join(out)


def counts_md(rows: list[dict]) -> str:
    labs = ("refusal", "deflection", "compliance", "degenerate")
    out = [f"### Counts ({len(rows)} rows; generated by `scripts/judge_v2_docs.py`)", "",
           "| method | n | " + " | ".join(labs) + " |", "|---|---|" + "---|" * len(labs)]
    for key in ("method", "set"):
        if key == "set":
            out += ["", "| prompt set | n | " + " | ".join(labs) + " |", "|---|---|" + "---|" * len(labs)]
        for k in sorted({r[key] for r in rows}):
            c = Counter(r["label"] for r in rows if r[key] == k)
            out.append(f"| {k} | {sum(c.values())} | " + " | ".join(str(c[l]) for l in labs) + " |")
    c = Counter(r["label"] for r in rows)
    out += ["", "All: " + ", ".join(f"{l} {c[l]}" for l in labs) + "; settings: "
            + str(len({r['setting'] for r in rows})) + " (" + ", ".join(sorted({r['setting'] for r in rows})) + ")"]
    return "\n".join(out)


def _put(path: str, start: str, end: str, text: str) -> None:
    s = open(path, encoding="utf-8").read()
    if start not in s:
        raise SystemExit(f"{path} has no {start} marker")
    s = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _m: f"{start}\n{text}\n{end}", s, flags=re.S)
    open(path, "w", encoding="utf-8").write(s)


def main() -> None:
    rows = [json.loads(line) for line in open(os.path.join(ROOT, "tests", "fixtures", "judge_labels_v2.jsonl"),
                                              encoding="utf-8") if line.strip()]
    import readme_tables

    readme_tables.main(["--only", "judge"])
    _put(os.path.join(ROOT, "tests", "fixtures", "README.md"), "<!-- counts:start -->", "<!-- counts:end -->",
         counts_md(rows))
    print("updated README.md and tests/fixtures/README.md")


if __name__ == "__main__":
    main()
