#!/usr/bin/env python
"""Every results table in README.md, regenerated from saved run outputs (never typed by hand).

A README section ``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->`` is rendered by ``SECTIONS[NAME]``
from the files it names (committed under ``docs/results/`` and ``benchmarks/results/judge/``):

- ``main``: the main job (``make demo``): its table with intervals (and the spread over seeds), the
  paired differences, run facts (n, judge, REAL's layers, times), from ``docs/results/main/``;
- ``judge``: the refusal judge's held-out figures, from ``benchmarks/results/judge/judge_report.json``;
- ``gates``: the gate generalisation protocol, from ``docs/results/gates/generalisation.json``;
- ``eval_speed``: ``benchmarks/bench_eval.py``'s shared-pass evaluation vs the full path, from
  ``docs/results/bench/eval.json`` (copy a new run's JSON there).

Usage::

    python scripts/readme_tables.py                      # rewrite README.md's sections from the files
    python scripts/readme_tables.py --check              # exit 1 and name each section that differs
    python scripts/readme_tables.py --collect-main runs/demo   # copy a demo run's outputs into docs/results/main

``tests/test_readme_tables.py`` runs ``--check``: a README table that disagrees with its source fails CI.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
MAIN_DIR = Path("docs/results/main")
GATES_JSON = Path("docs/results/gates/generalisation.json")
REACH_JSON = Path("docs/results/gates/reachability.json")
OPEN_JSON = Path("docs/results/gates/gate_open.json")
LOSO_E2E_JSON = Path("docs/results/gates/loso_e2e.json")
JUDGE_JSON = Path("benchmarks/results/judge/judge_report.json")
EVAL_BENCH_JSON = Path("docs/results/bench/eval.json")
MOSE_JSON = Path("docs/results/fidelity/mose.json")
ODE_MC_JSON = Path("docs/results/fidelity/odesteer_mc.json")
REAL_JSON = Path("docs/results/fidelity/real_paper.json")

#: files copied from a demo run directory by ``--collect-main`` (relative to the run directory)
MAIN_FILES = ("eval/results.json", "paired.json", "together.json", "summary.json", "spec.json", "seeds.json")


def _load(root: Path, rel: Path | str) -> dict | list:
    p = root / rel
    if not p.exists():
        raise FileNotFoundError(f"{rel}: source file missing (run the job that writes it, then --collect-*)")
    return json.loads(p.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# renderers
# ------------------------------------------------------------------------------------------------

def render_main(root: Path) -> str:
    from steerlens.demo import TABLE, one_table, paired_lines, seed_note

    d = root / MAIN_DIR
    res = _load(root, MAIN_DIR / "results.json")
    summ = _load(root, MAIN_DIR / "summary.json")
    paired = _load(root, MAIN_DIR / "paired.json")
    together = _load(root, MAIN_DIR / "together.json") if (d / "together.json").exists() else []
    seeds = _load(root, MAIN_DIR / "seeds.json") if (d / "seeds.json").exists() else {"seeds": [0], "rows": []}
    sel = _load(root, MAIN_DIR / "selection.json") if (d / "selection.json").exists() else {}
    meta, records = res["meta"], res["records"]
    ns = sorted({r["n"] for r in records if r["metric"] in {m for m, _ in TABLE}})
    k = len(seeds["seeds"])
    layers = "; ".join(f"{name}: " + ", ".join(f"seed {s} {'/'.join(v)}" for s, v in per.items())
                       for name, per in sel.items()) or "—"
    facts = (f"Run facts (from `{MAIN_DIR}/`): started {meta.get('started', '?')}, "
             f"{meta.get('workers', 1)} worker(s), {meta['split']} split, n = {'/'.join(map(str, ns))} per set, "
             f"judge `{meta.get('judge')}`, {k} fit seed(s); fit {summ.get('fit_seconds')} s and evaluation "
             f"{summ.get('eval_seconds')} s for seed 0. Sites REAL chose — {layers}.")
    key = [m for m, _ in TABLE]
    parts = [facts, "", one_table(records, summ["configs"], seeds["rows"])]
    if k > 1:
        parts += ["", seed_note(seeds["seeds"])]
    parts += ["", "Paired against the unsteered model (same prompts, seed 0):", "", paired_lines(paired, key)]
    if together:
        parts += ["", "All steerers on against each alone (paired, seed 0):", "", paired_lines(together, key)]
    return "\n".join(parts)


def render_judge(root: Path) -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from judge_v2_docs import judge_md

    return judge_md(_load(root, JUDGE_JSON))


def render_gates(root: Path) -> str:
    from steerlens.interp.gate_eval import write_table

    lines = write_table(_load(root, GATES_JSON)).strip().splitlines()
    # the protocol's own headings become bold lines inside the README's section
    lines = [f"**{ln.lstrip('#').strip()}**" if ln.startswith("#") else ln for ln in lines]
    out = "\n".join(lines) + f"\n\n(Source: `{GATES_JSON}`.)"
    if (root / REACH_JSON).exists():
        out += "\n\n" + render_reachability(_load(root, REACH_JSON))
    if (root / OPEN_JSON).exists():
        out += "\n\n" + render_gate_open(_load(root, OPEN_JSON))
    if (root / LOSO_E2E_JSON).exists():
        out += "\n\n" + render_loso_e2e(_load(root, LOSO_E2E_JSON))
    return out


def render_loso_e2e(d: dict) -> str:
    """FineSteer end to end with each harmful source held out of its gate (``experiments/gate_loso_e2e.py``)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    from gate_loso_e2e import table

    return table(d).strip() + f"\n\n(Source: `{LOSO_E2E_JSON}`, `experiments/gate_loso_e2e.py`.)"


def render_gate_open(d: dict) -> str:
    """Open rates of FineSteer's gates when fitted on the main job's data (the shared sources only)."""
    conds = list(d["open"])
    sets = list(d["open"][conds[0]])
    lines = [f"**Fitted on the main job's data.** The open rate of each gate when both are fitted, as the main job "
             f"fits FineSteer, on the shared AdvBench / HarmBench / JBB fit split only (the `{d['gate']}` gate with its "
             f"look-alike negatives and fit-family wrappers), on up to {d['n_per_set']} test prompts per set "
             "[Wilson 95%] (`experiments/gate_e2e.py --open-only`):", "",
             "| set | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
    for s in sets:
        lines.append(f"| {s} | " + " | ".join(f"{d['open'][c][s]['open']:.2f} [{d['open'][c][s]['ci'][0]:.2f}, "
                                                f"{d['open'][c][s]['ci'][1]:.2f}] (n={d['open'][c][s]['n']})"
                                                for c in conds) + " |")
    return "\n".join(lines) + f"\n\n(Source: `{OPEN_JSON}`.)"


def render_reachability(r: dict) -> str:
    """The look-alike targets against the best any in-distribution linear gate reaches."""
    lines = [f"**Within reach at all?** The most favourable gate: a logistic probe fitted on the look-alike pair "
             f"itself ({r['folds']}-fold cross-validation, out-of-fold scores), the best of every read layer x reading "
             f"({', '.join(r['readings'])}) x C ({', '.join(map(str, r['C']))}); an optimistic upper bound for any gate "
             "fitted elsewhere (`experiments/gate_reachability.py`).", "",
             "| pair (n pos + neg) | layers read (settings) | target | best AUC (setting) | best TPR at the target FPR "
             "(setting) | within reach |",
             "|---|---|---|---|---|---|"]
    for name, t in r["tasks"].items():
        a, b = t["best_auc"], t["best_tpr_at_target_fpr"]
        ls = t.get("layers") or sorted({x["layer"] for x in t["settings"]})
        lines.append(f"| {t['positives']} vs {t['negatives']} ({t['n_pos']} + {t['n_neg']}) | {ls[0]}-{ls[-1]} "
                     f"({len(t['settings'])}) | TPR >= {t['target_tpr']:.2f} "
                     f"at FPR <= {t['target_fpr']:.2f} | {a['auc']:.3f} ({a['reading']}, L{a['layer']}, C {a['C']}) | "
                     f"{b['tpr_at_fpr']:.2f} ({b['reading']}, L{b['layer']}, C {b['C']}) | "
                     f"{'yes' if t['reachable'] else '**no**'} |")
    return "\n".join(lines) + f"\n\n(Source: `{REACH_JSON}`.)"


def _cell(v: dict) -> str:
    return f"{v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"


def _diff(v: dict) -> str:
    return f"{v['value']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"


def _cell_ci(v: dict) -> str:
    return f"{v['mean']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"


def _diff_ci(v: dict) -> str:
    return f"{v['mean']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"


def render_fidelity(root: Path) -> str:
    """The seed methods run as their authors run them (``--preset paper``) against ours and the
    baselines, TruthfulQA MC on the test split (strengths chosen on val)."""
    out = []
    if (root / ODE_MC_JSON).exists():
        d = _load(root, ODE_MC_JSON)
        n = d["test"]["none"]["truthfulqa/mc2"]["n"]
        rules = [("by val MC2", d)]
        if d.get("kl_budget"):
            rules.append((f"by val MC2 among strengths with val KL <= {d['kl_budget']['max_val_kl']:g}", d["kl_budget"]))
        for rule, block in rules:
            t, pu, pp = block["test"], block["paired_vs_unsteered"], block.get("paired_odesteer_paper_minus", {})
            out += [f"**ODESteer** (`experiments/odesteer_paper.py`; {d['fit']['n_fit_pairs']} "
                    f"fit pairs, strength {rule}, test n = {n}; next-token KL on Alpaca test prompts):", "",
                    "| method | strength | MC1 | MC2 | MC2 − unsteered | odesteer_paper − method (MC2) | KL |",
                    "|---|---|---|---|---|---|---|"]
            for m, r in t.items():
                kl = r.get("utility/kl")
                out.append(f"| {m} | {r['alpha']:g} | {_cell(r['truthfulqa/mc1'])} | {_cell(r['truthfulqa/mc2'])} | "
                           f"{_diff(pu[m]['truthfulqa/mc2']) if m in pu else '—'} | "
                           f"{_diff(pp[m]['truthfulqa/mc2']) if m in pp else '—'} | {_cell(kl) if kl else '—'} |")
            out.append("")
        out += [f"(Source: `{ODE_MC_JSON}`.)", ""]
    if (root / REAL_JSON).exists():
        d = _load(root, REAL_JSON)
        ag = d.get("agreement", {})
        out += ["**REAL** (`experiments/real_paper.py`; the authors' reading and 2 folds, REAL `paper` preset vs ITI "
                "and random H-sets at α 15; TruthfulQA MC of both held-out halves pooled, plain text):", "",
                "| | REAL | ITI |", "|---|---|---|"]
        real_keys = [k for k in ag if k.startswith("real_")]
        for k in real_keys:
            a = ag[k]
            out.append(f"| fold 0 vs fold 1 rankings ({k[5:]} scorer vs probe accuracy): Spearman / top-H overlap | "
                       f"{a['spearman']:.2f} / {a['top_overlap']} of {a['top']} | "
                       f"{ag['iti']['spearman']:.2f} / {ag['iti']['top_overlap']} of {ag['iti']['top']} |")
        for f in d.get("folds", []):
            r = f.get(f"real_{real_keys[0][5:]}") if real_keys else None
            if r:
                out.append(f"| fold {f['fold']}: heads at held-out AUC ≥ 0.99 / max AUC (REAL); max probe accuracy (ITI) | "
                           f"{r['frac_ge_0.99']:.1%} / {r['max']:.3f} | {f['iti_max_acc']:.3f} |")
        out += ["", "| steering (α 15) | MC1 | MC2 | n |", "|---|---|---|---|"]
        for c, v in d.get("mc", {}).items():
            out.append(f"| {c} | {_cell_ci(v['mc1'])} | {_cell_ci(v['mc2'])} | {v['mc2']['n']} |")
        out += ["", "| paired, per question | ΔMC1 | ΔMC2 |", "|---|---|---|"]
        for c, v in d.get("paired", {}).items():
            out.append(f"| {c} | {_diff_ci(v['mc1'])} | {_diff_ci(v['mc2'])} |")
        out += ["", f"(Source: `{REAL_JSON}`; per-fold tables: `docs/results/fidelity/real_paper.md`.)", ""]
    if (root / MOSE_JSON).exists():
        d = _load(root, MOSE_JSON)["truthfulness"]
        test = {(r["method"], r["metric"]): r for r in d["test"]}
        pair = {(r["a"], r["b"], r["metric"]): r for r in d["paired"]}
        meth = list(dict.fromkeys(r["method"] for r in d["test"]))
        info = d["mose"]
        out += [f"**MoSE** (`experiments/finesteer.py --preset paper,paper_eq,default`; layer {info['layer']}, "
                f"{info['n_fit_pairs']} fit pairs, strength by val MC2, test n = {info['n_test']}):", "",
                "| method | strength (val) | MC1 | MC2 | MC2 − unsteered | MC2 − CAA |", "|---|---|---|---|---|---|"]
        for m in meth:
            mc1, mc2 = test[(m, "truthfulqa/mc1")], test[(m, "truthfulqa/mc2")]
            vs_u = pair.get((m, "none", "truthfulqa/mc2"))
            vs_c = pair.get((m, "caa", "truthfulqa/mc2"))
            out.append(f"| {m} | {mc2['alpha']:g} | {_cell(mc1)} | {_cell(mc2)} | {_diff(vs_u) if vs_u else '—'} | "
                       f"{_diff(vs_c) if vs_c else '—'} |")
        out += ["", f"(Source: `{MOSE_JSON}`; K, expert sizes and the specialisation tests: `docs/results/fidelity/mose.md`.)"]
    return "\n".join(out).strip()


def render_eval_speed(root: Path) -> str:
    b = _load(root, EVAL_BENCH_JSON)
    r = b["reuse"]
    m = b.get("machine", {})
    return "\n".join([
        "| evaluation of the main job | items | seconds | items / s |", "|---|---|---|---|",
        f"| full path (every configuration recomputed) | {b['items']} | {b['old']['seconds']:.1f} | "
        f"{b['old']['items_per_s']:.2f} |",
        f"| shared unsteered pass + closed-gate rows copied | {b['items']} | {b['new']['seconds']:.1f} | "
        f"{b['new']['items_per_s']:.2f} |",
        "",
        f"Ratio {b['ratio_items_per_s_new_over_old']:.2f}× (n = {b['limit']} per set, {len(b['configs'])} "
        f"configurations, one run, {m.get('cpus', '?')} CPUs, torch {m.get('torch', '?')}); records identical: "
        f"{'yes' if b['records_identical'] else 'NO'}. Of {r['rows']} rows {r['run']} ran, {r['copied_unsteered']} "
        f"were copied from the unsteered pass and {r['copied_other']} from another configuration "
        f"(source: `{EVAL_BENCH_JSON}`)."])


SECTIONS: dict[str, Callable[[Path], str]] = {"main": render_main, "judge": render_judge, "gates": render_gates,
                                              "eval_speed": render_eval_speed, "fidelity": render_fidelity}


# ------------------------------------------------------------------------------------------------
# README sections
# ------------------------------------------------------------------------------------------------

def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def sections_in(text: str) -> list[str]:
    return re.findall(r"<!-- table:([\w-]+) -->", text)


def rendered(text: str, root: Path, names: Optional[list[str]] = None) -> tuple[str, list[str]]:
    """``text`` with every table section re-rendered, and the names of the sections that changed."""
    changed = []
    for name in names or sections_in(text):
        if name not in SECTIONS:
            raise KeyError(f"README section table:{name} has no renderer; known: {sorted(SECTIONS)}")
        body = SECTIONS[name](root).strip()
        m = _pattern(name).search(text)
        if m is None:
            raise KeyError(f"README has no closing marker for table:{name}")
        if m.group(2).strip() != body:
            changed.append(name)
            text = text[:m.start(2)] + body + "\n" + text[m.end(2):]
    return text, changed


def collect_main(run_dir: Path, root: Path) -> Path:
    """Copy a demo run's outputs (and the sites REAL chose under each seed) into ``docs/results/main``,
    atomically (a temporary directory renamed into place)."""
    run_dir = Path(run_dir)
    if not (run_dir / "eval" / "results.json").exists():
        raise FileNotFoundError(f"{run_dir}: no eval/results.json (is it a `steerlens demo` / `steerlens run` output?)")
    dest = root / MAIN_DIR
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".main-", dir=dest.parent))
    try:
        for rel in MAIN_FILES:
            if (run_dir / rel).exists():
                shutil.copyfile(run_dir / rel, tmp / Path(rel).name)
        sel: dict[str, dict[str, list[str]]] = {}
        seed_dirs = [(0, run_dir)] + sorted((int(p.name.split("-")[1]), p)
                                            for p in (run_dir / "seeds").glob("seed-*") if p.is_dir())
        for s, d in seed_dirs:
            for meta in sorted((d / "artifacts").glob("*/metadata.json")):
                cfg = json.loads(meta.read_text())["config"]
                mods = (cfg.get("selection") or {}).get("modules")
                if cfg.get("selector", {}).get("kind") not in (None, "fixed") and mods:
                    sel.setdefault(meta.parent.name, {})[str(s)] = [m.replace(".hook_resid_post", "")
                                                                    for m in mods]
        (tmp / "selection.json").write_text(json.dumps(sel, indent=1, sort_keys=True) + "\n")
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a section differs")
    p.add_argument("--collect-main", metavar="RUN_DIR", help="first copy a demo run's outputs into docs/results/main")
    p.add_argument("--only", nargs="*", help="sections to render (default: every marked section)")
    args = p.parse_args(argv)
    readme = Path(args.readme)
    try:
        if args.collect_main:
            print(f"collected {args.collect_main} -> {collect_main(Path(args.collect_main), ROOT)}")
        text = readme.read_text(encoding="utf-8")
        new, changed = rendered(text, ROOT, args.only)
    except (FileNotFoundError, KeyError) as e:
        print(f"readme_tables: {e}", file=sys.stderr)
        return 2
    if args.check:
        for name in changed:
            print(f"README section table:{name} differs from its source files; run scripts/readme_tables.py",
                  file=sys.stderr)
        return 1 if changed else 0
    if changed:
        from steerlens.fileio import atomic_write_text

        atomic_write_text(readme, new)
    print(f"{readme}: {len(changed)} section(s) rewritten ({', '.join(changed) or 'none'}) of "
          f"{len(sections_in(text))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
