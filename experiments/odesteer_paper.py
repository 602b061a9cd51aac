"""ODESteer as its authors run it (the ``paper`` preset) vs our default ODESteer, CAA and ITI:
TruthfulQA MC on the default model (issue #25).

    OMP_NUM_THREADS=1 nice -n 5 python experiments/odesteer_paper.py --out runs/odesteer_mc
    python experiments/odesteer_paper.py --out runs/odesteer_mc --stages summary   # JSON / tables again
    python experiments/odesteer_paper.py --render-docs     # docs/fidelity.md's block from the JSON

Protocol (TruthfulQA split by question, ``fit`` / ``val`` / ``test`` of steerlens.evals.data; the
bookkeeping, fitting data and MC scoring are experiments/odesteer.py's):

1. ``fit`` — on ``--n-fit`` fit questions (one true / false answer pair each; the preset's own data
   rule, every answer of a 50 % fold, is not implemented): ODESteer ``paper`` preset (layer 12,
   base ``"Q: …\\nA: …"`` last-token reading, C = 1, 8000 features, ``t_mode="relative"``: the
   strength is θ, T = θ · median‖x‖ of the fit activations); our default ODESteer (main.toml's:
   layer 16, response mean in the chat template, C = 1000, 4000 features, strength T); CAA
   (response mean) at layer 12 and at layer 16; ITI with H = ``default_heads`` (13 of 270).
   CAA and our ODESteer share one response-mean capture.
2. ``val`` — MC1 / MC2 on ``--n-val`` val questions for the unsteered model and each method's
   grid. Each method's strength = its best val MC2 (ties: the smaller strength).
3. ``test`` — the unsteered model and each method at its chosen strength on ``--n-test`` test
   questions (MC1, MC2), and next-token KL(unsteered ‖ steered) on ``--n-kl`` Alpaca test prompts.
4. ``summary`` — bootstrap 95 % intervals, paired per-question differences (method − unsteered,
   ODESteer-paper − each other method), written atomically to ``summary.json`` / ``summary.md`` in
   ``--out`` and to ``--json`` / its ``.md``.

``results.jsonl`` in ``--out`` is resumable: a rerun skips every configuration already there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import steerlens
from steerlens.evals import data as D
from steerlens.fileio import atomic_write_json, atomic_write_report, replace_marked_block
from steerlens.hooks import Site
from steerlens.pipeline import load_steerer, make_steerer
from steerlens.pipeline.methods.odesteer.roles import PAPER_PRESET
from steerlens.pipeline.methods.real.selector import default_heads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odesteer import (Results, _fmt, capture_pairs, contrastive, eval_truth, floats, kl_values, log, stage_timing, apply_quick, parse_stages,  # noqa: E402
                      paired, tqa_eval_sets, tqa_pairs)

STAGES = ("fit", "val", "test", "summary")
MC = ("truthfulqa/mc1", "truthfulqa/mc2")
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "fidelity.md"
JSON = ROOT / "docs" / "results" / "fidelity" / "odesteer_mc.json"
DOC_BEGIN, DOC_END = "<!-- odesteer_mc:begin (rendered by experiments/odesteer_paper.py --render-docs) -->", \
    "<!-- odesteer_mc:end -->"
STRENGTH = {"odesteer_paper": "θ", "odesteer_ours": "T", "iti": "α"}  # CAA: α


def method_names(args) -> list[str]:
    return ["odesteer_paper", "odesteer_ours"] + [f"caa_l{layer}" for layer in caa_layers(args)] + ["iti"]


def paper_layer(args) -> int:
    return PAPER_PRESET["layer"] if args.paper_layer is None else args.paper_layer


def caa_layers(args) -> list[int]:
    return sorted({paper_layer(args), args.ours_layer})


def grids(args) -> dict[str, list[float]]:
    g = {"odesteer_paper": args.paper_theta, "odesteer_ours": args.ode_T}
    g.update({f"caa_l{layer}": args.caa_alphas for layer in caa_layers(args)})
    g["iti"] = args.iti_alphas
    return g


# ------------------------------------------------------------------------------------------------
# stage 1: fit


def fit_all(model, args, out: Path) -> dict:
    """Every steerer on the same fit questions (artifacts cached under out/artifacts)."""
    art = out / "artifacts"
    names = method_names(args)
    if all((art / n).exists() for n in names):
        return {n: load_steerer(art / n, model=model) for n in names}
    data = tqa_pairs("fit", args.n_fit, args.seed)
    n = len(data.pos)
    timing: dict = {"n_fit_pairs": n}
    sts = {}
    t0 = time.perf_counter()
    kw = {} if args.paper_layer is None else {"layer": args.paper_layer}
    sts["odesteer_paper"] = make_steerer("odesteer", preset="paper", seed=args.seed, **kw).fit(model, data,
                                                                                               progress=True)
    timing["odesteer_paper_capture_and_fit_s"] = time.perf_counter() - t0
    log(f"fit: odesteer_paper ({timing['odesteer_paper_capture_and_fit_s']:.0f}s)")
    t0 = time.perf_counter()
    sites = [Site.resid(layer) for layer in caa_layers(args)]
    acts = capture_pairs(model, data, sites, "response_mean", args.batch_size)
    timing["response_mean_capture_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    site = Site.resid(args.ours_layer)
    sts["odesteer_ours"] = make_steerer("odesteer", layer=args.ours_layer, read="response_mean", C=1000.0,
                                        max_iter=3000, n_features=args.ours_features, seed=args.seed).fit(
        model, data, acts=contrastive(acts, site, n, "response_mean"))
    timing["odesteer_ours_fit_after_capture_s"] = time.perf_counter() - t0
    log(f"fit: odesteer_ours ({timing['odesteer_ours_fit_after_capture_s']:.0f}s after the capture)")
    for layer in caa_layers(args):
        s = Site.resid(layer)
        sts[f"caa_l{layer}"] = make_steerer("caa", layer=layer).fit(model, data,
                                                                    acts=contrastive(acts, s, n, "response_mean"))
    t0 = time.perf_counter()
    heads = args.heads or default_heads(model.n_layers * model.n_heads)
    sts["iti"] = make_steerer("iti", heads=heads, seed=args.seed).fit(model, data, progress=True)
    timing["iti_capture_and_fit_s"] = time.perf_counter() - t0
    timing["iti_heads"] = heads
    log(f"fit: iti H={heads} ({timing['iti_capture_and_fit_s']:.0f}s)")
    for name, st in sts.items():
        st.save(art / name, model=model)
    p = sts["odesteer_paper"].editor
    timing["odesteer_paper_t_scale"] = p.t_scale
    timing["odesteer_paper_stats"] = p.stats
    timing["odesteer_ours_stats"] = sts["odesteer_ours"].editor.stats
    timing["barrier_heldout"] = {k: sts[k].selector.result_info for k in ("odesteer_paper", "odesteer_ours")}
    atomic_write_json(out / "fit_info.json", timing, indent=1)
    return sts


# ------------------------------------------------------------------------------------------------
# stages 2-3: val and test


def chosen_strengths(res: Results, methods: list[str], max_kl: float | None = None) -> dict[str, float]:
    """Per method, the val strength with the best MC2 (ties: the smaller strength); with ``max_kl``,
    among the strengths whose val next-token KL is at most ``max_kl``."""
    out = {}
    for m in methods:
        rows = [r for r in res.rows if r.get("stage") == "val" and r["method"] == m and r["metric"] == MC[1]]
        if max_kl is not None:
            rows = [r for r in rows if (k := res.get(f"valkl|{m}|{r['alpha']:g}", "utility/kl")) is not None
                    and k["value"] <= max_kl]
        if rows:
            out[m] = max(rows, key=lambda r: (round(r["value"], 6), -r["alpha"]))["alpha"]
    return out


def eval_kl(model, res: Results, key: str, edits, exs, base_lp, args, **info) -> torch.Tensor:
    """Next-token KL(unsteered ‖ steered) on the prompts of ``exs`` (``base_lp``: the unsteered
    log-probabilities, computed on first use and returned)."""
    if res.has(key):
        return base_lp
    prompts = [e.prompt for e in exs]
    if base_lp is None:
        base_lp = steerlens.next_token_logprobs(model, prompts, None, batch_size=args.score_batch)
    t0 = time.perf_counter()
    kl = kl_values(model, prompts, edits, base_lp, args.score_batch)
    res.add(key, {"utility/kl": (kl, [e.id for e in exs])}, wall_time_s=time.perf_counter() - t0, **info)
    log(f"{key}: kl {sum(kl) / len(kl):.3f}")
    return base_lp


def stage_val(model, args, out: Path, res: Results) -> None:
    """MC1 / MC2 for every strength of every grid (the choice), then next-token KL on Alpaca *val*
    prompts for each (a diagnostic beside the choice, not part of it)."""
    sts = fit_all(model, args, out)
    qs = tqa_eval_sets("val", args.n_val, args.seed)[0]
    info = dict(stage="val", split="val")
    eval_truth(model, res, "val|none|0", None, qs, [], args, method="none", alpha=0.0, **info)
    for m, alphas in grids(args).items():
        for a in alphas:
            eval_truth(model, res, f"val|{m}|{a:g}", sts[m].edits(model, alpha=a), qs, [], args, method=m, alpha=a,
                       **info)
    kl_exs, base_lp = D.load_harmless("val", args.n_kl, args.seed), None
    for m, alphas in grids(args).items():
        for a in alphas:
            base_lp = eval_kl(model, res, f"valkl|{m}|{a:g}", sts[m].edits(model, alpha=a), kl_exs, base_lp, args,
                              method=m, alpha=a, stage="val-kl", split="val")


def stage_test(model, args, out: Path, res: Results) -> None:
    sts = fit_all(model, args, out)
    chosen = [(m, a) for m, a in chosen_strengths(res, method_names(args)).items()]
    if args.max_kl is not None:
        chosen += [(m, a) for m, a in chosen_strengths(res, method_names(args), args.max_kl).items()
                   if (m, a) not in chosen]
    qs = tqa_eval_sets("test", args.n_test, args.seed)[0]
    kl_exs, base_lp = D.load_harmless("test", args.n_kl, args.seed), None
    info = dict(stage="test", split="test")
    eval_truth(model, res, "test|none|0", None, qs, [], args, method="none", alpha=0.0, **info)
    for m, a in chosen:
        edits = sts[m].edits(model, alpha=a)
        eval_truth(model, res, f"test|{m}|{a:g}", edits, qs, [], args, method=m, alpha=a, **info)
        base_lp = eval_kl(model, res, f"kl|{m}|{a:g}", edits, kl_exs, base_lp, args, method=m, alpha=a,
                          stage="test-kl", split="test")


# ------------------------------------------------------------------------------------------------
# stage 4: summary and rendering


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else path


def _stat(r: dict) -> dict:
    return {"value": r["value"], "ci": r["ci"], "n": r["n"]}


def test_block(res: Results, chosen: dict[str, float]) -> dict:
    """Test MC1 / MC2 (and KL) of the unsteered model and each method at its ``chosen`` strength,
    paired differences vs unsteered and ODESteer-paper − each other method."""
    s: dict = {"test": {}, "paired_vs_unsteered": {}, "paired_odesteer_paper_minus": {}}
    test_keys = {"none": "test|none|0", **{m: f"test|{m}|{a:g}" for m, a in chosen.items()}}
    for m, key in test_keys.items():
        if not res.has(key):
            continue
        d = {"alpha": res.get(key, MC[0])["alpha"], **{k: _stat(res.get(key, k)) for k in MC}}
        if m != "none" and res.has(f"kl|{m}|{d['alpha']:g}"):
            d["utility/kl"] = _stat(res.get(f"kl|{m}|{d['alpha']:g}", "utility/kl"))
        s["test"][m] = d
    for m in s["test"]:
        if m != "none":
            s["paired_vs_unsteered"][m] = {k: paired(res.get(test_keys[m], k), res.get(test_keys["none"], k))
                                           for k in MC}
        if m not in ("none", "odesteer_paper") and "odesteer_paper" in s["test"]:
            s["paired_odesteer_paper_minus"][m] = {k: paired(res.get(test_keys["odesteer_paper"], k),
                                                             res.get(test_keys[m], k)) for k in MC}
    return s


def summarize(args, out: Path, res: Results) -> dict:
    methods = method_names(args)
    fit_info = json.loads((out / "fit_info.json").read_text()) if (out / "fit_info.json").exists() else {}
    t_scale = fit_info.get("odesteer_paper_t_scale")
    s: dict = {"what": "ODESteer paper preset vs our default ODESteer, CAA (layers 12, 16) and ITI: TruthfulQA "
                       "MC1/MC2 on the default model; strengths chosen by val MC2 (ties: smaller), reported on test",
               "args": {k: _rel(v) if k == "json" else v for k, v in vars(args).items() if k != "render_docs"},
               "fit": fit_info, "grids": grids(args), "val": [], "chosen": chosen_strengths(res, methods),
               "test": {}, "paired_vs_unsteered": {}, "paired_odesteer_paper_minus": {}}
    if args.max_kl is not None:
        s["kl_budget"] = {"max_val_kl": args.max_kl, "chosen": chosen_strengths(res, methods, args.max_kl)}
    for r in res.rows:
        if r.get("stage") in ("val", "val-kl"):
            row = {"method": r["method"], "alpha": r["alpha"], "metric": r["metric"], **_stat(r)}
            if r["method"] == "odesteer_paper" and t_scale:
                row["T"] = r["alpha"] * t_scale
            s["val"].append(row)
    s.update(test_block(res, s["chosen"]))
    if "kl_budget" in s:
        s["kl_budget"].update(test_block(res, s["kl_budget"]["chosen"]))
    if (out / "timing.jsonl").exists():
        s["stage_wall_s"] = {}
        for line in (out / "timing.jsonl").read_text().splitlines():
            t = json.loads(line)
            s["stage_wall_s"][t["stage"]] = s["stage_wall_s"].get(t["stage"], 0.0) + t["wall_s"]
    s["eval_wall_s"] = {r["key"]: r["wall_time_s"] for r in res.rows if "wall_time_s" in r}
    md = render_markdown(s)
    for path in (out / "summary.json", Path(args.json)):
        atomic_write_report(path, s, md)
    return s


def _strength(m: str, a: float, t_scale: float | None) -> str:
    sym = STRENGTH.get(m, "α")
    if m == "odesteer_paper" and t_scale:
        return f"{sym} = {a:g} (T = {a * t_scale:.1f})"
    return f"{sym} = {a:g}"


def render_markdown(s: dict) -> str:
    """The tables of ``s`` (a summary), for the .md beside the JSON and for docs/fidelity.md."""
    t_scale = s["fit"].get("odesteer_paper_t_scale")
    L = []
    fit = s["fit"]
    if fit:
        L += [f"Fit: {fit['n_fit_pairs']} TruthfulQA fit questions, one true/false answer pair each; paper preset "
              f"median ‖x‖ at layer {paper_layer(argparse.Namespace(**s['args']))} = "
              f"{t_scale:.1f} (T = θ · that); ITI H = {fit['iti_heads']}.", ""]
    if s["val"]:
        n = {r["n"] for r in s["val"] if r["metric"] in MC}
        nkl = {r["n"] for r in s["val"] if r["metric"] == "utility/kl"}
        L += [f"**Val** (n = {', '.join(map(str, sorted(n)))} questions; chosen = best MC2, ties: smaller; KL on "
              f"{', '.join(map(str, sorted(nkl))) or '–'} Alpaca val prompts, not used in the choice):", "",
              "| method | strength | MC1 [95% CI] | MC2 [95% CI] | KL [95% CI] | chosen |", "|---|---|---|---|---|---|"]
        rows: dict = {}
        for r in s["val"]:
            rows.setdefault((r["method"], r["alpha"]), {})[r["metric"]] = r
        for (m, a), d in rows.items():
            mark = "✓" if s["chosen"].get(m) == a else ""
            L.append(f"| {m} | {'–' if m == 'none' else _strength(m, a, t_scale)} | {_fmt(d.get(MC[0]))} | "
                     f"{_fmt(d.get(MC[1]))} | {_fmt(d.get('utility/kl'))} | {mark} |")
        L.append("")
    L += _test_markdown(s, "strengths by val MC2", t_scale)
    if s.get("kl_budget"):
        L += _test_markdown(s["kl_budget"], f"strengths by val MC2 among val KL ≤ {s['kl_budget']['max_val_kl']:g}",
                            t_scale)
    if s.get("stage_wall_s"):
        L += ["Wall time per stage (s, shared 2-core CPU): " + ", ".join(
            f"{k} {v:.0f}" for k, v in s["stage_wall_s"].items()), ""]
    return "\n".join(L)


def _test_markdown(b: dict, title: str, t_scale: float | None) -> list[str]:
    L: list[str] = []
    if b["test"]:
        n = {v["n"] for d in b["test"].values() for k, v in d.items() if k in MC}
        L += [f"**Test, {title}** (n = {', '.join(map(str, sorted(n)))} questions; KL on Alpaca test prompts):",
              "", "| method | strength | MC1 [95% CI] | MC2 [95% CI] | KL [95% CI] |", "|---|---|---|---|---|"]
        for m, d in b["test"].items():
            L.append(f"| {m} | {'–' if m == 'none' else _strength(m, d['alpha'], t_scale)} | {_fmt(d[MC[0]])} | "
                     f"{_fmt(d[MC[1]])} | {_fmt(d.get('utility/kl'))} |")
        L.append("")
    for sub, key in (("method − unsteered", "paired_vs_unsteered"),
                     ("ODESteer-paper − method", "paired_odesteer_paper_minus")):
        if b[key]:
            L += [f"**Paired differences, {sub}** ({title}; test, per question, bootstrap 95% CI):", "",
                  "| method | ΔMC1 | ΔMC2 | n |", "|---|---|---|---|"]
            for m, d in b[key].items():
                L.append(f"| {m} | {_fmt(d[MC[0]])} | {_fmt(d[MC[1]])} | {d[MC[1]]['n']} |")
            L.append("")
    return L


def render_docs(json_path: Path, doc: Path = DOC) -> None:
    """Replace the block between DOC_BEGIN and DOC_END in ``doc`` by the tables of ``json_path``."""
    replace_marked_block(doc, DOC_BEGIN, DOC_END, render_markdown(json.loads(Path(json_path).read_text())))
    print(f"rendered {json_path} into {doc}")


# ------------------------------------------------------------------------------------------------


#: ``--quick``: a smoke run on the tiny random model (2 layers), one strength per grid;
#: tests/test_smoke_headlines.py runs it.
QUICK = dict(model="tiny-random", paper_layer=0, ours_layer=1, ours_features=256, n_fit=12, n_val=4, n_test=4,
             n_kl=4, heads=2, paper_theta="0.1", ode_T="40", caa_alphas="1", iti_alphas="5", batch_size=8,
             score_batch=8)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny random model, a few questions (QUICK)")
    ap.add_argument("--out", default="runs/odesteer_mc")
    ap.add_argument("--json", default=None, help="where the summary JSON (and its .md) is also written "
                    "(default: docs/results/fidelity/odesteer_mc.json; with --quick: OUT/odesteer_mc.json)")
    ap.add_argument("--render-docs", action="store_true",
                    help=f"only render --json into {DOC.relative_to(ROOT)}'s block, then stop")
    ap.add_argument("--model", default=None)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-fit", type=int, default=200, help="TruthfulQA fit questions (one true/false pair each)")
    ap.add_argument("--n-val", type=int, default=None, help="val questions for choosing strengths (default: all)")
    ap.add_argument("--n-test", type=int, default=None, help="test questions (default: all)")
    ap.add_argument("--n-kl", type=int, default=32, help="Alpaca test prompts for next-token KL")
    ap.add_argument("--paper-layer", type=int, default=None, help="default: the paper preset's layer")
    ap.add_argument("--ours-layer", type=int, default=16)
    ap.add_argument("--ours-features", type=int, default=4000)
    ap.add_argument("--heads", type=int, default=None, help="ITI heads (default: default_heads)")
    ap.add_argument("--paper-theta", type=floats, default=floats("0.05,0.1,0.2,0.4"))
    ap.add_argument("--ode-T", type=floats, default=floats("40,80,160"))
    ap.add_argument("--caa-alphas", type=floats, default=floats("1,3,9"))
    ap.add_argument("--iti-alphas", type=floats, default=floats("5,15"))
    ap.add_argument("--max-kl", type=float, default=None,
                    help="also test each method at its best val MC2 among strengths with val next-token KL <= this")
    ap.add_argument("--batch-size", type=int, default=16, help="capture batch size")
    ap.add_argument("--score-batch", type=int, default=32)
    apply_quick(ap, argv, QUICK)
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = str(Path(args.out) / "odesteer_mc.json" if args.quick else JSON)
    if args.render_docs:
        render_docs(Path(args.json))
        return 0
    stages = parse_stages(ap, args.stages, STAGES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    res = Results(out / "results.jsonl")
    t0 = time.perf_counter()
    model = steerlens.load_model(args.model) if any(s != "summary" for s in stages) else None
    for stage in stages:
        ts, cs = time.perf_counter(), time.process_time()
        if stage == "fit":
            fit_all(model, args, out)
        elif stage == "val":
            stage_val(model, args, out, res)
        elif stage == "test":
            stage_test(model, args, out, res)
        else:
            summarize(args, out, res)
        stage_timing(out, stage, ts, cs)
    log(f"total {time.perf_counter() - t0:.0f}s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
