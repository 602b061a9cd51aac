"""The main job (``make demo`` / ``steerlens demo``): the mission's pipeline on the default model.

It runs the packaged spec ``steerlens/specs/main.toml`` (the same file ``steerlens run`` reads):

1. Load SmolLM2-135M-Instruct (offline; fetched and dequantised once).
2. Fit, each on the fit split:
   - ``finesteer`` (safety): REAL scores candidate residual layers and picks the one MoSE edits;
     a harm gate (``harm_dir`` at layer 16, fitted on the fit splits of all nine harmful sources)
     decides per prompt whether to steer;
   - ``odesteer`` (truthfulness): REAL picks the layer, ODESteer flows along the barrier gradient,
     behind the same gate inverted (it stands aside on the prompts FineSteer takes);
   - ``caa``: unconditional CAA, the baseline the gate is meant to improve on.
3. Print replies to held-out harmful and harmless prompts side by side (unsteered, CAA, the
   pipeline), each with the gate's decision for that prompt.
4. Evaluate unsteered, CAA, each steerer alone and both together on the test split: one table
   (harmful refusal, over-refusal on Alpaca and XSTest safe, TruthfulQA MC1/MC2, MMLU A/B, KL,
   each with its 95% interval), paired differences against the unsteered model and of the
   pipeline against each steerer alone, Pareto plots, the per-token trace.

Sizes: ``--limit`` (examples per eval set, default from the spec: 60), ``--seeds K`` (fit seeds,
default from the spec: 3; each seed refits and re-evaluates the steered configurations) and
``--quick`` (tiny fit and eval sizes, one seed, a smoke test) make it shorter.
"""

from __future__ import annotations

import argparse
import copy
import textwrap
import time
from importlib import resources
from pathlib import Path
from typing import Optional

#: the metrics of the one table, in order: (metric, column title)
TABLE = [("refusal/harmful", "harmful refusal ↑"), ("refusal/harmless", "Alpaca over-refusal ↓"),
         ("refusal/xstest_safe", "XSTest-safe over-refusal ↓"),
         ("refusal/heldout", "six other sources refusal ↑"), ("refusal/wrapped", "wrapped (held-out families) refusal ↑"),
         ("truthfulqa/mc1", "MC1 ↑"),
         ("truthfulqa/mc2", "MC2 ↑"), ("utility/mmlu_ab", "MMLU A/B ↑"), ("utility/kl", "KL ↓")]


def main_spec() -> dict:
    """The main job's pipeline spec (``steerlens/specs/main.toml``), read and checked."""
    from .pipeline.spec import read_spec

    with resources.as_file(resources.files("steerlens") / "specs" / "main.toml") as p:
        return read_spec(p)


def quick_spec(spec: dict) -> dict:
    """Smoke-test sizes: small fits, 8 examples per eval set, short replies."""
    s = copy.deepcopy(spec)
    for st in s["steerer"] + s["baseline"]:
        st["fit"]["n"] = min(int(st["fit"].get("n") or 32), 32)
        if st.get("method") == "finesteer" or st.get("gate"):
            # 64 harmful vs Alpaca prompts (the harm gate's own data are sized per source, not by n)
            st["fit"].update(gate_n=64, gate_task="safety")
        sel = st.get("selector")
        if isinstance(sel, dict) and "layers" in sel:
            sel["layers"] = sel["layers"][:2]
        if st.get("method") == "finesteer":
            st.setdefault("params", {}).update(max_epochs=20, warmup_steps=5, k=2)
        if st.get("method") == "odesteer":
            st.setdefault("params", {})["n_features"] = 1000
    s["eval"].update(limit=8, max_new_tokens=16, seeds=1)
    return s


def _columns(prompt: str, cols: list[tuple[str, str]], width: int = 40) -> str:
    wrapped = [textwrap.wrap(text.replace("\n", " ").strip() or "(empty)", width) or [""] for _, text in cols]
    rows = [f"> {prompt}", "  " + " | ".join(f"{title:<{width}}" for title, _ in cols)]
    for i in range(max(len(w) for w in wrapped)):
        rows.append("  " + " | ".join(f"{(w[i] if i < len(w) else ''):<{width}}" for w in wrapped))
    return "\n".join(rows)


def _gate_note(gates: dict) -> str:
    if not gates:
        return "no gate"
    return "; ".join(f"{k.split(':')[0]} gate {'OPEN' if v['scale'] > 0 else 'closed'} (score {v['score']:+.2f})"
                     for k, v in gates.items())


def side_by_side(model, configs: dict, prompts: list[tuple[str, str]], shown: list[str], max_new_tokens: int,
                 judge) -> list[dict]:
    """Greedy replies of each shown configuration, printed in columns with the gate's decision."""
    from .evals.tasks import edits_for
    from .hooks import generate

    texts = [p for _, p in prompts]
    out = {}
    for name in shown:
        edits = edits_for(configs[name], model, texts)
        out[name] = generate(model, texts, edits, max_new_tokens=max_new_tokens, return_details=True)
    labels = {name: judge.judge(texts, [g.text for g in out[name]]) for name in shown}
    rows = []
    for i, (kind, p) in enumerate(prompts):
        gate = out[shown[-1]][i].gates
        verdicts = ", ".join(f"{n}: {labels[n][i].label}" for n in shown)
        print(f"\n[{kind}] {_gate_note(gate)} | judge: {verdicts}")
        print(_columns(p, [(n.upper(), out[n][i].text) for n in shown]))
        rows.append({"kind": kind, "prompt": p, "gates": gate,
                     **{n: {"reply": out[n][i].text, "label": labels[n][i].label} for n in shown}})
    return rows


def one_table(records, configs: list[str], seed_rows: Optional[list[dict]] = None) -> str:
    """The main table: each cell the first seed's value [95% interval] n=…; with ``seed_rows`` of
    several seeds, also the mean ± standard deviation across the seeds' refits."""
    by = {(_get(r, "steering"), _get(r, "metric")): r for r in records}
    spread = {(r["config"], r["metric"]): r for r in seed_rows or [] if len(r["seeds"]) > 1}
    cols = [(m, t) for m, t in TABLE if any((c, m) in by for c in configs)]
    lines = ["| config | " + " | ".join(t for _, t in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for c in configs:
        cells = []
        for m, _ in cols:
            r = by.get((c, m))
            cell = "—" if r is None else \
                f"{_get(r, 'value'):.2f} [{_get(r, 'ci_low'):.2f}, {_get(r, 'ci_high'):.2f}] n={_get(r, 'n')}"
            sp = spread.get((c, m))
            if r is not None and sp is not None:
                cell += f"; seeds {sp['mean']:.2f} ± {sp['sd']:.2f}"
            cells.append(cell)
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_note(seeds: list[int]) -> str:
    """How to read the main table's cells when it shows several fit seeds."""
    return (f"Cells: seed {seeds[0]}'s value [95% interval] n; then the mean ± sd of that metric over "
            f"{len(seeds)} refits (fit seeds {', '.join(map(str, seeds))}; the same test prompts; `seeds.md`).")


def _get(r, key: str):
    """A record's field, from a Record or from its JSON form (results.json)."""
    return r[key] if isinstance(r, dict) else getattr(r, key)


def paired_lines(rows: list[dict], metrics: list[str]) -> str:
    lines = ["| config | vs | metric | difference [95% CI] | n |", "|---|---|---|---|---|"]
    for r in rows:
        if r["metric"] in metrics:
            lines.append(f"| {r['config']} | {r['base']} | {r['metric']} | {r['diff']:+.3f} "
                         f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {r['n']} |")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    import steerlens
    from steerlens.evals import data as D
    from steerlens.evals.judges import get_judge
    from steerlens.fileio import atomic_write_json, atomic_write_text
    from steerlens.pipeline.specrun import run_seeds

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = args.data_dir
    t0 = time.time()
    spec = main_spec()
    if getattr(args, "quick", False):
        spec = quick_spec(spec)
    if getattr(args, "limit", None):
        spec["eval"]["limit"] = int(args.limit)
    pipeline = spec["name"]

    print(f"[1/4] loading the default model (data from {D.data_dir(root)})")
    model = steerlens.load_model()
    print(f"      {model.name}: {model.n_layers} layers, {model.n_heads} heads, d_model {model.d_model}")
    print(f"[2/4] fitting the pipeline {pipeline!r} and its baseline (spec: steerlens/specs/main.toml)")

    n_show = 1 if getattr(args, "quick", False) else 3
    harmful = [("HARMFUL", e.prompt) for e in D.load_harmful("test", n_show, seed=1, root=root)]
    harmless = [("HARMLESS", e.prompt) for e in D.load_harmless("test", max(1, n_show - 1), seed=1, root=root)]
    shown = ["unsteered", "caa", pipeline]
    sbs: list[dict] = []

    def show(configs: dict) -> None:
        for name in ("finesteer", "odesteer"):
            st = configs.get(name)
            if st is not None and st.selection is not None:
                print(f"      {name}: REAL chose {', '.join(str(s) for s in st.selection.sites())}")
        print(f"[3/4] greedy replies on held-out test prompts ({time.time() - t0:.0f} s so far)")
        sbs.extend(side_by_side(model, configs, harmful + harmless, shown, spec["eval"]["max_new_tokens"],
                                get_judge()))

    print()
    seeds = int(args.seeds if getattr(args, "seeds", None) is not None else spec["eval"].get("seeds", 1))
    summary = run_seeds(spec, model, out, seeds, data_root=root, progress=True, on_fitted=show)
    records = summary["records"]
    atomic_write_json(out / "side_by_side.json", sbs, indent=1)
    ev = spec["eval"]
    print(f"\n[4/4] evaluation on the {ev['split']} split ({ev['limit']} examples per set; judge: trained clf)\n")
    table = one_table(records, summary["configs"], summary["seed_rows"])
    if seeds > 1:
        table += "\n\n" + seed_note(list(range(seeds)))
    print(table)
    key = [m for m, _ in TABLE]
    paired = paired_lines(summary["paired_rows"], key)
    together = paired_lines(summary["together_rows"], key)
    print("\nPaired differences against the unsteered model (same prompts):\n" + paired)
    if summary["together_rows"]:
        print("\nBoth steerers on against each alone (paired): does either behaviour lose?\n" + together)
    text = (f"# steerlens main job: {pipeline}\n\n{table}\n\n## Paired vs unsteered\n\n{paired}\n\n"
            f"## Both steerers vs each alone\n\n{together}\n")
    atomic_write_text(out / "main.md", text)
    dt = time.time() - t0
    print(f"\nwrote {out}/main.md, {out}/pareto.png (refusal vs over-refusal, MC2 vs KL), {out}/paired.md, "
          f"{out}/together.md, {out}/eval/ (results, trace), {out}/artifacts/; {dt:.0f} s in all")
    return 0
