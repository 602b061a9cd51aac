"""REAL vs ITI as the REAL authors run them: their reading, their 2 folds, their MC scoring (issue #25).

    OMP_NUM_THREADS=2 python experiments/real_paper.py --out runs/real_paper --eval-limit 150
    python experiments/real_paper.py --out runs/real_paper --summarize-only
    python experiments/real_paper.py --out runs/real_paper --render-docs   # its summary into docs/
    python experiments/real_paper.py --render-docs      # docs/fidelity.md's block from docs/results/fidelity/real_paper.json
    python experiments/real_paper.py --quick --out /tmp/rp   # smoke run on the tiny random model

Protocol (``liam0949/REAL_ICLR``: ``get_activations.py``, ``validate_2fold.py``; docs/fidelity.md):

- **reading**: every answer choice of every question as its own plain-text row
  ``"Q: {q} A: {choice}"`` (true answers labelled 1, false 0), no chat template, ``hook_z`` of
  every head at the **last token** (:func:`steerlens.evals.data.truthfulness_mc_rows_from`). All
  817 questions are read once; each fold slices its rows.
- **folds**: the 817 questions in dataset order, cut in two halves (409 / 408,
  :func:`~steerlens.evals.data.truthfulqa_halves`). Fold ``k`` fits on the other half and is
  scored on half ``k``, so every question is scored once, by selections that never saw it.
- **selectors on the same rows**: REAL with the ``paper`` preset (raw activations, N(0, 1)
  codebook, EMA sizes from 0, AE on every row, class-balanced row split, ties in head order,
  H = 13 of 270, α 15, σ over the bank ``"Q: q A: a Q: <another question>"`` of the training
  half) and ITI (held-out probe accuracy, same H, α and σ bank). ``random`` = ``--random-sets``
  seeded random H-sets with ITI's editor (the same θ and σ rule), for a floor.
- **saturation**: the issue's check, fraction of heads with held-out AUC ≥ 0.99 (must be < 5 %).
  When REAL's preset refuses to rank (above the threshold) the experiment stops and says so.
- **MC scoring**: TruthfulQA MC1 / MC2 of the held-out half in plain text, every answer choice of
  the CSV. ``--mc-format qa`` (default): ``"Q: {q}\\nA:"`` 0-shot, the format the selectors read.
  ``qa_primer``: the authors' (REAL's ``tqa_run_probs`` with the "qa" preset): the TruthfulQA
  instruction and six-shot primer first, about six times the tokens per answer (too slow for the
  2-core CPU here). ``--eval-limit`` scores a seeded subset of each held-out half; n is stated.
- **reported**: per fold the rankings' saturation, the cross-fold rank agreement of REAL's scores
  (each scorer) and of ITI's (Spearman over all 270 heads, top-H overlap; the authors' own
  bundled rankings agree at 0.22–0.62), and MC1 / MC2 pooled over the two folds with bootstrap
  intervals and paired (per question) differences.

Outputs in ``--out``: ``acts.pt`` (the reading, reused), ``fold{k}.json`` (scores and
selections), ``mc.jsonl`` (per config and fold, per-question values; a stopped run resumes), and
``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from steerlens import load_model
from steerlens.evals import data as D
from steerlens.evals.stats import bootstrap_ci
from steerlens.evals.tasks import mc_values
from steerlens.fileio import atomic_write, atomic_write_json, atomic_write_text, replace_marked_block
from steerlens.hooks.sites import parse_site
from steerlens.pipeline import make_steerer
from steerlens.pipeline.contrastive import ContrastiveActs
from steerlens.pipeline.errors import PipelineError
from steerlens.pipeline.methods.real.scorers import ranking_agreement
from steerlens.pipeline.methods.real.selector import SATURATED_AUC, default_heads
from steerlens.pipeline.selection import Selection, all_head_modules

ROOT = Path(__file__).resolve().parents[1]
DOCS_JSON = ROOT / "docs/results/fidelity/real_paper.json"
DOCS_MD = ROOT / "docs/results/fidelity/real_paper.md"
DOC = ROOT / "docs" / "fidelity.md"
DOC_BEGIN, DOC_END = "<!-- real_paper:begin (rendered by experiments/real_paper.py --render-docs) -->", \
    "<!-- real_paper:end -->"
QUICK = {"model": "tiny-random", "questions": 24, "eval_limit": 4, "random_sets": 2, "epochs": 2, "heads": 2}


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def row_index(all_rows: D.RowData, rows: D.RowData) -> tuple[list[int], list[int]]:
    """Positions of ``rows``' pos / neg rows inside ``all_rows`` (same texts, same order)."""
    def idx(full_ids, full_txt, ids, txt):
        keep = set(ids)
        out = [i for i, q in enumerate(full_ids) if q in keep]
        if [full_txt[i] for i in out] != list(txt):
            raise RuntimeError("fold rows do not line up with the global reading")
        return out
    return (idx(all_rows.pos_ids, all_rows.pos, rows.pos_ids, rows.pos),
            idx(all_rows.neg_ids, all_rows.neg, rows.neg_ids, rows.neg))


def read_all(model, all_rows: D.RowData, path: Path, batch_size: int) -> ContrastiveActs:
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
        except Exception:  # an older cache with Site keys (pickled objects): loaded as trusted local output
            blob = torch.load(path, weights_only=False)
        if blob["fingerprint"] == all_rows.fingerprint():
            log(f"reading: reused {path}")
            return ContrastiveActs({parse_site(str(k)): v for k, v in blob["pos"].items()},
                                   {parse_site(str(k)): v for k, v in blob["neg"].items()}, position="last",
                                   paired=False)
    reader = make_steerer("real", preset="paper", batch_size=batch_size)
    t0 = time.perf_counter()
    acts = reader.read_contrastive(model, all_rows, progress=True)
    log(f"reading: {len(all_rows.pos)} true + {len(all_rows.neg)} false rows in {time.perf_counter() - t0:.0f}s")
    atomic_write(path, lambda tmp: torch.save({"fingerprint": all_rows.fingerprint(),
                                               "pos": {str(k): v for k, v in acts.pos.items()},
                                               "neg": {str(k): v for k, v in acts.neg.items()}}, tmp))
    return acts


def sliced(acts: ContrastiveActs, ip: list[int], ineg: list[int]) -> ContrastiveActs:
    return ContrastiveActs({s: t[ip] for s, t in acts.pos.items()}, {s: t[ineg] for s, t in acts.neg.items()},
                           position="last", paired=False)


def fit_fold(model, k: int, train, data, acts, args) -> dict:
    """REAL (paper preset), ITI and random H-sets fitted on one fold's training rows."""
    mods = all_head_modules(model)
    gru = {"epochs": args.gru_epochs} if args.gru_epochs else {}
    real_kw = {"seed": args.seed, "vqae": {"epochs": args.epochs}, "heads": args.heads,
               **({"gru": gru} if gru else {})}
    out: dict = {"fold": k, "n_questions_fit": len(train), "n_rows_fit": [len(data.pos), len(data.neg)],
                 "n_bank": len(data.bank or [])}
    steerers = {}
    t0 = time.perf_counter()
    real = make_steerer("real", preset="paper", **real_kw)
    try:
        real.fit(model, data, acts=acts)
    except PipelineError as e:
        if "saturation_max" not in str(e):
            raise
        out["saturated"] = str(e)
        return out
    sel = real.selector
    out["real"] = {"selected": [str(m) for m in real.selection.modules],
                   "weights": [round(float(w), 4) for w in real.selection.weights],
                   "scorer": sel.params["scorer"], "compare": sel.params.get("compare"),
                   "auc": {n[4:]: [round(float(x), 5) for x in v] for n, v in sel.tensors.items() if n.startswith("auc_")
                           and not n.startswith("auc_runs") and not n.startswith("auc_std")},
                   "dead_codes": sel.result_info.get("dead_codes"), "seconds": time.perf_counter() - t0,
                   "sigma": real.editor.stats.get("sigma")}
    steerers["real"] = real
    t0 = time.perf_counter()
    iti = make_steerer("iti", heads=args.heads or default_heads(len(mods)), alpha=args.alpha, sigma_over="bank", seed=args.seed)
    iti.fit(model, data, acts=acts)
    out["iti"] = {"selected": [str(m) for m in iti.selection.modules],
                  "acc": [round(float(iti.selection.scores[str(m)]), 5) for m in mods],
                  "seconds": time.perf_counter() - t0, "sigma": iti.editor.stats.get("sigma")}
    steerers["iti"] = iti
    h = len(real.selection.modules)
    for r in range(args.random_sets):
        pick = sorted(random.Random(f"real-paper-random:{args.seed}:{k}:{r}").sample(range(len(mods)), h),
                      key=lambda i: i)
        rsel = Selection([mods[i] for i in pick], torch.ones(h), score_name="random", weighting="ones")
        rnd = make_steerer("iti", heads=h, alpha=args.alpha, sigma_over="bank", seed=args.seed)
        rnd.fit(model, data, acts=acts, selection=rsel)
        out[f"random{r}"] = {"selected": [str(mods[i]) for i in pick]}
        steerers[f"random{r}"] = rnd
    out["_steerers"] = steerers
    return out


def load_done(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["fold"], r["config"])] = r
    return done


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = load_model(args.model)
    halves = D.truthfulqa_halves()
    if args.questions:  # smoke runs: the first questions of each half
        halves = [h[:args.questions // 2] for h in halves]
    all_rows = D.truthfulness_mc_rows_from(halves[0] + halves[1], args.seed, "all", bank=False)
    acts_all = read_all(model, all_rows, out / "acts.pt", args.batch_size)
    mc_path = out / "mc.jsonl"
    done = load_done(mc_path)
    for k in (0, 1):
        held, train = halves[k], halves[1 - k]
        data = D.truthfulness_mc_rows_from(train, args.seed, f"half{1 - k}")
        ip, ineg = row_index(all_rows, data)
        log(f"fold {k}: fit on {len(train)} questions ({len(ip)} true / {len(ineg)} false rows), "
            f"score {len(held)} held-out questions")
        info = fit_fold(model, k, train, data, sliced(acts_all, ip, ineg), args)
        steerers = info.pop("_steerers", {})
        atomic_write_json(out / f"fold{k}.json", info)
        if "saturated" in info:
            log(f"fold {k}: REAL refused to rank: {info['saturated']}")
            continue
        if args.eval_limit and len(held) > args.eval_limit:
            held = sorted(random.Random(f"real-paper-eval:{args.seed}:{k}").sample(held, args.eval_limit),
                          key=lambda e: int(e.id.split(":")[1]))
        for name, st in [("none", None), *steerers.items()]:
            selected = None if st is None else [str(m) for m in st.selection.modules]
            if (k, name) in done and (done[(k, name)].get("selected"), done[(k, name)].get("fmt")) == (
                    selected, args.mc_format):
                continue
            t0 = time.perf_counter()
            mc1, mc2, n_items = mc_values(model, held, st, batch_size=args.batch_size, fmt=args.mc_format,
                                          progress=False)
            rec = {"fold": k, "config": name, "ids": [e.id for e in held], "mc1": mc1, "mc2": mc2,
                   "n_items": n_items, "seconds": time.perf_counter() - t0,
                   "alpha": None if st is None else st.alpha, "selected": selected, "fmt": args.mc_format}
            with open(mc_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            done[(k, name)] = rec
            log(f"fold {k} {name}: MC1 {np.mean(mc1):.3f} MC2 {np.mean(mc2):.3f} ({len(held)} q, "
                f"{rec['seconds']:.0f}s)")
    summary = summarize(out)
    atomic_write_json(out / "summary.json", summary)
    print(render(summary))
    return 0


def _ci(vals) -> dict:
    m, lo, hi = bootstrap_ci(list(vals), seed=0)
    return {"mean": m, "ci": [lo, hi], "n": len(vals)}


def summarize(out: Path) -> dict:
    folds = [json.loads((out / f"fold{k}.json").read_text()) for k in (0, 1) if (out / f"fold{k}.json").exists()]
    res: dict = {"folds": [], "agreement": {}, "mc": {}, "paired": {}}
    for f in folds:
        row = {"fold": f["fold"], "n_rows_fit": f["n_rows_fit"], "n_bank": f["n_bank"]}
        if "saturated" in f:
            row["saturated"] = f["saturated"]
        else:
            for name, auc in f["real"]["auc"].items():
                a = torch.tensor(auc)
                row[f"real_{name}"] = {"frac_ge_0.99": float((a >= SATURATED_AUC).float().mean()),
                                       "max": float(a.max()), "at_0.5": int((a == 0.5).sum()),
                                       "top": float(a.sort(descending=True).values[len(f['real']['selected']) - 1])}
            row["real_selected"] = f["real"]["selected"]
            row["iti_selected"] = f["iti"]["selected"]
            row["iti_max_acc"] = max(f["iti"]["acc"])
            row["overlap_real_iti"] = len(set(f["real"]["selected"]) & set(f["iti"]["selected"]))
            row["dead_codes_mean"] = float(np.mean(f["real"]["dead_codes"])) if f["real"].get("dead_codes") else None
        res["folds"].append(row)
    ok = [f for f in folds if "saturated" not in f]
    if len(ok) == 2:
        h = len(ok[0]["real"]["selected"])
        for name in ok[0]["real"]["auc"]:
            res["agreement"][f"real_{name}"] = ranking_agreement(torch.tensor(ok[0]["real"]["auc"][name]),
                                                                torch.tensor(ok[1]["real"]["auc"][name]), h)
        res["agreement"]["iti"] = ranking_agreement(torch.tensor(ok[0]["iti"]["acc"]), torch.tensor(ok[1]["iti"]["acc"]), h)
        for f in ok:
            names = list(f["real"]["auc"])
            if len(names) > 1:
                res["agreement"][f"fold{f['fold']}_{names[0]}_vs_{names[1]}"] = ranking_agreement(
                    torch.tensor(f["real"]["auc"][names[0]]), torch.tensor(f["real"]["auc"][names[1]]), h)
    done = load_done(out / "mc.jsonl")
    configs = sorted({c for _, c in done}, key=lambda c: (c != "none", c.startswith("random"), c))
    pooled: dict = {}
    for c in configs:
        if all((k, c) in done for k in (0, 1)) or not ok:
            recs = [done[(k, c)] for k in (0, 1) if (k, c) in done]
            pooled[c] = {m: np.concatenate([r[m] for r in recs]) for m in ("mc1", "mc2")}
            pooled[c]["ids"] = sum((r["ids"] for r in recs), [])
    rand = [c for c in pooled if c.startswith("random")]
    if rand:
        pooled["random (mean of sets)"] = {m: np.mean([pooled[c][m] for c in rand], axis=0) for m in ("mc1", "mc2")}
        pooled["random (mean of sets)"]["ids"] = pooled[rand[0]]["ids"]
    for c, v in pooled.items():
        res["mc"][c] = {m: _ci(v[m]) for m in ("mc1", "mc2")}
    fmts = sorted({r.get("fmt", "qa") for r in done.values()})
    if fmts:
        res["mc_format"] = fmts[0] if len(fmts) == 1 else fmts
    pairs = [("real", "none"), ("iti", "none"), ("random (mean of sets)", "none"), ("real", "iti"),
             ("real", "random (mean of sets)"), ("iti", "random (mean of sets)")]
    for a, b in pairs:
        if a in pooled and b in pooled:
            assert pooled[a]["ids"] == pooled[b]["ids"]
            res["paired"][f"{a} - {b}"] = {m: _ci(pooled[a][m] - pooled[b][m]) for m in ("mc1", "mc2")}
    return res


def _f(d: dict, digits: int = 3) -> str:
    lo, hi = d["ci"]
    return f"{d['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _fs(d: dict, digits: int = 3) -> str:
    lo, hi = d["ci"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def render(s: dict) -> str:
    lines = ["**Per fold** (fit on the other half; REAL `paper` preset, ITI held-out probe accuracy):", "",
             "| fold | rows fitted (true / false) | REAL scorer | heads at AUC ≥ 0.99 | max AUC | H-th AUC | heads at AUC 0.5 exactly | ITI max probe acc. | REAL ∩ ITI top-H |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in s["folds"]:
        if "saturated" in f:
            lines.append(f"| {f['fold']} | {f['n_rows_fit'][0]} / {f['n_rows_fit'][1]} | – | refused: {f['saturated']} |||||")
            continue
        for k, v in f.items():
            if k.startswith("real_") and isinstance(v, dict):
                lines.append(f"| {f['fold']} | {f['n_rows_fit'][0]} / {f['n_rows_fit'][1]} | {k[5:]} | "
                             f"{v['frac_ge_0.99']:.1%} | {v['max']:.3f} | {v['top']:.3f} | {v['at_0.5']} | "
                             f"{f['iti_max_acc']:.3f} | {f['overlap_real_iti']} |")
    if s["agreement"]:
        lines += ["", "**Rank agreement** (Spearman over all heads; top-H overlap):", "",
                  "| scores | Spearman | top-H overlap |", "|---|---|---|"]
        for k, a in s["agreement"].items():
            name = ("fold 0 vs fold 1: " + k) if not k.startswith("fold") else k.replace("_vs_", " vs ")
            lines.append(f"| {name} | {a['spearman']:.2f} | {a['top_overlap']} / {a['top']} |")
    if s["mc"]:
        fmt = s.get("mc_format", "qa")
        how = {"qa": "plain text `Q: …\\nA:`, 0-shot", "qa_primer": "plain text, instruction + six-shot primer",
               "chat": "chat template"}.get(fmt, str(fmt))
        lines += ["", f"**TruthfulQA MC, both held-out halves pooled** ({how}):",
                  "", "| config | MC1 [95% CI] | MC2 [95% CI] | n |", "|---|---|---|---|"]
        for c, v in s["mc"].items():
            lines.append(f"| {c} | {_f(v['mc1'])} | {_f(v['mc2'])} | {v['mc2']['n']} |")
    if s["paired"]:
        lines += ["", "**Paired differences** (per question, bootstrap 95% CI):", "",
                  "| difference | ΔMC1 | ΔMC2 | n |", "|---|---|---|---|"]
        for c, v in s["paired"].items():
            lines.append(f"| {c} | {_fs(v['mc1'])} | {_fs(v['mc2'])} | {v['mc2']['n']} |")
    return "\n".join(lines) + "\n"


def render_docs(json_path: Path, doc: Path = DOC) -> None:
    """``real_paper.md`` beside ``json_path`` and the block between the markers of ``doc``."""
    s = json.loads(Path(json_path).read_text())
    body = render(s)
    atomic_write_text(Path(json_path).with_suffix(".md"), body)
    replace_marked_block(doc, DOC_BEGIN, DOC_END, body)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run on the tiny random model")
    ap.add_argument("--questions", type=int, default=None, help="use only this many questions (smoke runs)")
    ap.add_argument("--eval-limit", type=int, default=None, help="held-out questions scored per fold (default all)")
    ap.add_argument("--heads", type=int, default=None, help="H (default: REAL's fraction rule, 13 of 270)")
    ap.add_argument("--alpha", type=float, default=15.0, help="α for ITI and the random sets (REAL: its preset's)")
    ap.add_argument("--random-sets", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20, help="VQ-AE epochs (the preset's 20)")
    ap.add_argument("--gru-epochs", type=int, default=None, help="GRU scorer epochs (default: the scorer's)")
    ap.add_argument("--mc-format", choices=D.MC_FORMATS, default="qa",
                    help="MC prompt format: qa (default; plain 'Q: …\\nA:', 0-shot) or qa_primer (the authors': "
                         "TruthfulQA instruction + six-shot primer, about 6x the tokens) or chat")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--summarize-only", action="store_true")
    ap.add_argument("--render-docs", action="store_true",
                    help=f"with --out: copy its summary to {DOCS_JSON.relative_to(ROOT)}; then render that JSON to .md "
                         "and into docs/fidelity.md")
    if "--quick" in argv:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    if args.render_docs:
        if args.out:  # a run's summary becomes the docs' JSON; without --out the JSON there is re-rendered
            atomic_write_json(DOCS_JSON, json.loads((Path(args.out) / "summary.json").read_text()))
        render_docs(DOCS_JSON)
        print(f"wrote {DOCS_MD} and the block of {DOC}")
        return 0
    if not args.out:
        ap.error("--out is required")
    if args.summarize_only:
        s = summarize(Path(args.out))
        atomic_write_json(Path(args.out) / "summary.json", s)
        print(render(s))
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
