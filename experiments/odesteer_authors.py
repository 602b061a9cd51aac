"""ODESteer's ``paper`` preset on its authors' barrier data and in their text format: TruthfulQA MC
on the default model (issue #25).

    OMP_NUM_THREADS=1 nice -n 5 python experiments/odesteer_authors.py --out runs/odesteer_authors --n-val 60
    python experiments/odesteer_authors.py --out runs/odesteer_authors --render-docs   # the docs block

experiments/odesteer_paper.py found the preset close to inert on MC when it is fitted on one
true/false pair per question (base-text reading) and scored in the chat template. Two deviations
from the authors could explain it; this run separates them:

- **data**: ``pairs`` = one best-answer / false-answer pair per question of ``--n-fit`` fit
  questions, read as base text ``"Q: q\\nA: a"`` at the last token (odesteer_paper.py's data);
  ``rows`` = every correct and incorrect answer of every fit question as its own base-text row
  (fit task ``truthfulness-ode``: the authors' barrier data, on our fit split of 60 % rather than
  their seeded half);
- **MC format**: ``chat`` = the question as a user turn of the chat template (the library's MC);
  ``qa`` = plain ``"Q: {q}\\nA:"`` then ``" " + answer``, the text the barrier was read on.

Configurations: ``rows`` scored in ``qa`` and in ``chat``, ``pairs`` scored in ``qa`` (``pairs`` in
``chat`` is odesteer_paper.py's row), each with the θ grid (T = θ · median‖x‖ of its fit
activations at layer 12); the unsteered model in both formats. θ per configuration = best val MC2
(ties: the smaller θ) on ``--n-val`` val questions; MC1 / MC2 on all test questions, bootstrap
intervals, paired per-question differences against the unsteered model in the same format.
``results.jsonl`` is resumable; ``summary.json`` / ``summary.md`` in ``--out``, and the JSON also at
docs/results/fidelity/odesteer_authors.json for ``--render-docs``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import steerlens
from steerlens.evals import data as D
from steerlens.evals.compare import paired_difference
from steerlens.evals.stats import rate_or_mean_ci
from steerlens.evals.tasks import mc_values
from steerlens.fileio import atomic_write_json, atomic_write_report, replace_marked_block
from steerlens.pipeline import load_steerer, make_steerer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odesteer import floats  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "fidelity.md"
JSON = ROOT / "docs" / "results" / "fidelity" / "odesteer_authors.json"
DOC_BEGIN = "<!-- odesteer_authors:begin (rendered by experiments/odesteer_authors.py --render-docs) -->"
DOC_END = "<!-- odesteer_authors:end -->"
#: (data, MC format) per configuration
CONFIGS = {"rows/qa": ("rows", "qa"), "rows/chat": ("rows", "chat"), "pairs/qa": ("pairs", "qa")}
MC = ("truthfulqa/mc1", "truthfulqa/mc2")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def fit(model, args, out: Path) -> dict:
    """The paper preset on each data set (artifacts cached under out/artifacts)."""
    sts, info = {}, {}
    info_path = out / "fit_info.json"
    old = json.loads(info_path.read_text()) if info_path.exists() else {}
    for name in sorted({d for d, _ in CONFIGS.values()}):
        art = out / "artifacts" / name
        if art.exists() and name in old:
            sts[name], info[name] = load_steerer(art, model=model), old[name]
            continue
        data = (D.truthfulness_ode_rows("fit", args.n_fit_rows, args.seed) if name == "rows"
                else D.truthfulness_response_pairs("fit", n=args.n_fit, seed=args.seed))
        kw = {} if args.layer is None else {"layer": args.layer}
        t0 = time.perf_counter()
        st = make_steerer("odesteer", preset="paper", seed=args.seed, **kw).fit(model, data, progress=True)
        ed = st.editor
        info[name] = {"task": data.task, "n_pos": ed.stats["n_pos"], "n_neg": ed.stats["n_neg"],
                      "t_scale": ed.t_scale, "train_accuracy": ed.stats["train_accuracy"],
                      "train_auc": ed.stats["train_auc"], "barrier_heldout": st.selector.result_info,
                      "layer": st.method_params.get("layer"), "seconds": time.perf_counter() - t0}
        st.save(art, model=model)
        sts[name] = st
        atomic_write_json(info_path, {**old, **info}, indent=1)
        log(f"fit {name}: {info[name]['n_pos']} + {info[name]['n_neg']} rows, T scale {ed.t_scale:.1f}, "
            f"train AUC {ed.stats['train_auc']:.3f}")
    return sts


class Results:
    """``results.jsonl``: one line per (stage, config, θ) with per-question MC1 / MC2."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, {}
        if path.exists():
            for line in path.read_text().splitlines():
                r = json.loads(line)
                self.rows[r["key"]] = r

    def run(self, key: str, fn) -> dict:
        if key not in self.rows:
            t0 = time.perf_counter()
            r = {"key": key, **fn(), "wall_s": None}
            r["wall_s"] = time.perf_counter() - t0
            with open(self.path, "a") as f:
                f.write(json.dumps(r) + "\n")
            self.rows[key] = r
            log(f"{key}: mc1 {sum(r['mc1']) / len(r['mc1']):.3f} mc2 {sum(r['mc2']) / len(r['mc2']):.3f} "
                f"({r['wall_s']:.0f}s)")
        return self.rows[key]


def score(model, qs, st, theta, fmt, args) -> dict:
    edits = None if st is None else st.edits(model, alpha=theta)
    mc1, mc2, _ = mc_values(model, qs, edits, batch_size=args.score_batch, fmt=fmt)
    return {"ids": [q.id for q in qs], "mc1": mc1, "mc2": mc2}


def chosen(res: Results, config: str, thetas) -> float:
    rows = [(round(sum(r["mc2"]) / len(r["mc2"]), 6), -t, t) for t in thetas
            if (r := res.rows.get(f"val|{config}|{t:g}")) is not None]
    return max(rows)[2]


def ci(vals) -> dict:
    v, lo, hi, how = rate_or_mean_ci(vals)
    return {"value": v, "ci": [lo, hi], "n": len(vals), "ci_method": how}


def summarize(args, out: Path, res: Results) -> dict:
    fit_info = json.loads((out / "fit_info.json").read_text())
    s: dict = {"what": "ODESteer paper preset on the authors' data (every answer, base text) and/or scored in "
                       "their text format; TruthfulQA MC1/MC2, default model; θ by val MC2, reported on test",
               "args": {k: v for k, v in vars(args).items() if k not in ("render_docs",)}, "fit": fit_info,
               "thetas": args.thetas, "val": [], "chosen": {}, "test": {}, "paired_vs_unsteered": {}}
    for key, r in res.rows.items():
        stage, config, theta = key.split("|")
        if stage == "val":
            s["val"].append({"config": config, "theta": float(theta), "mc1": ci(r["mc1"]), "mc2": ci(r["mc2"])})
    for config in CONFIGS:
        try:
            s["chosen"][config] = chosen(res, config, args.thetas)
        except ValueError:
            continue
    base = {fmt: res.rows.get(f"test|none-{fmt}|0") for fmt in ("qa", "chat")}
    for fmt, r in base.items():
        if r:
            s["test"][f"none/{fmt}"] = {"theta": 0.0, "mc1": ci(r["mc1"]), "mc2": ci(r["mc2"])}
    for config, theta in s["chosen"].items():
        r = res.rows.get(f"test|{config}|{theta:g}")
        if not r:
            continue
        s["test"][config] = {"theta": theta, "T": theta * fit_info[CONFIGS[config][0]]["t_scale"],
                             "mc1": ci(r["mc1"]), "mc2": ci(r["mc2"])}
        b = base[CONFIGS[config][1]]
        if b:
            s["paired_vs_unsteered"][config] = {
                m: paired_difference(dict(zip(r["ids"], r[m])), dict(zip(b["ids"], b[m])), kind="mean" if m == "mc2" else None)
                for m in ("mc1", "mc2")}
    md = render_markdown(s)
    for path in (out / "summary.json", Path(args.json)):
        atomic_write_report(path, s, md)
    return s


def _f(d: dict) -> str:
    return f"{d['value']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"


def render_markdown(s: dict) -> str:
    fit = s["fit"]
    L = ["Fit (paper preset, layer " + ", ".join(sorted({str(v['layer']) for v in fit.values()})) + "): " + "; ".join(
        f"`{k}` {v['n_pos']} true + {v['n_neg']} false rows, median ‖x‖ {v['t_scale']:.1f}, train AUC "
        f"{v['train_auc']:.3f}" for k, v in fit.items()) + ".", ""]
    if s["val"]:
        n = sorted({r["mc2"]["n"] for r in s["val"]})
        L += [f"**Val** (n = {', '.join(map(str, n))} questions; chosen = best MC2, ties: smaller θ):", "",
              "| data / MC format | θ | MC1 [95% CI] | MC2 [95% CI] | chosen |", "|---|---|---|---|---|"]
        for r in sorted(s["val"], key=lambda r: (r["config"], r["theta"])):
            mark = "✓" if s["chosen"].get(r["config"]) == r["theta"] else ""
            L.append(f"| {r['config']} | {r['theta']:g} | {_f(r['mc1'])} | {_f(r['mc2'])} | {mark} |")
        L.append("")
    if s["test"]:
        n = sorted({d["mc2"]["n"] for d in s["test"].values()})
        L += [f"**Test** (n = {', '.join(map(str, n))} questions):", "",
              "| data / MC format | θ (T) | MC1 [95% CI] | MC2 [95% CI] |", "|---|---|---|---|"]
        for k, d in s["test"].items():
            th = "–" if k.startswith("none") else f"{d['theta']:g} ({d['T']:.1f})"
            L.append(f"| {k} | {th} | {_f(d['mc1'])} | {_f(d['mc2'])} |")
        L.append("")
    if s["paired_vs_unsteered"]:
        L += ["**Paired differences, configuration − unsteered in the same format** (test, per question, 95% CI):",
              "", "| data / MC format | ΔMC1 | ΔMC2 | n |", "|---|---|---|---|"]
        for k, d in s["paired_vs_unsteered"].items():
            L.append(f"| {k} | {_f(d['mc1'])} | {_f(d['mc2'])} | {d['mc2']['n']} |")
        L.append("")
    return "\n".join(L)


def render_docs(json_path: Path, doc: Path = DOC) -> None:
    replace_marked_block(doc, DOC_BEGIN, DOC_END, render_markdown(json.loads(Path(json_path).read_text())))
    print(f"rendered {json_path} into {doc}")


QUICK = dict(model="tiny-random", layer=1, n_fit=12, n_fit_rows=8, n_val=4, n_test=4, thetas="0.1,0.2", score_batch=8)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny random model, a few questions")
    ap.add_argument("--out", default="runs/odesteer_authors")
    ap.add_argument("--json", default=None, help="summary JSON also written here (default: "
                    "docs/results/fidelity/odesteer_authors.json; --quick: OUT/odesteer_authors.json)")
    ap.add_argument("--render-docs", action="store_true", help="render the JSON into docs/fidelity.md and stop")
    ap.add_argument("--summarize-only", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--layer", type=int, default=None, help="default: the paper preset's layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-fit", type=int, default=200, help="pairs: fit questions (one pair each)")
    ap.add_argument("--n-fit-rows", type=int, default=None, help="rows: fit questions (default all)")
    ap.add_argument("--n-val", type=int, default=60)
    ap.add_argument("--n-test", type=int, default=None, help="test questions (default all)")
    ap.add_argument("--thetas", type=floats, default=floats("0.05,0.1,0.2,0.4"))
    ap.add_argument("--score-batch", type=int, default=32)
    if "--quick" in argv:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    if isinstance(args.thetas, str):
        args.thetas = floats(args.thetas)
    if args.json is None:
        args.json = str(Path(args.out) / "odesteer_authors.json" if args.quick else JSON)
    if args.render_docs:
        render_docs(Path(args.json))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = Results(out / "results.jsonl")
    if not args.summarize_only:
        model = steerlens.load_model(args.model)
        sts = fit(model, args, out)
        val = D.load_truthfulqa("val", args.n_val, args.seed)
        test = D.load_truthfulqa("test", args.n_test, args.seed)
        for fmt in ("qa", "chat"):
            res.run(f"val|none-{fmt}|0", lambda: score(model, val, None, 0.0, fmt, args))
        for config, (data, fmt) in CONFIGS.items():
            for t in args.thetas:
                res.run(f"val|{config}|{t:g}", lambda: score(model, val, sts[data], t, fmt, args))
        for fmt in ("qa", "chat"):
            res.run(f"test|none-{fmt}|0", lambda: score(model, test, None, 0.0, fmt, args))
        for config, (data, fmt) in CONFIGS.items():
            t = chosen(res, config, args.thetas)
            res.run(f"test|{config}|{t:g}", lambda: score(model, test, sts[data], t, fmt, args))
    s = summarize(args, out, res)
    print(json.dumps({k: {m: round(v[m]["value"], 3) for m in ("mc1", "mc2")} for k, v in s["test"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
