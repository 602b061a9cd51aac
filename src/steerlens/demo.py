"""The main job (``make demo`` / ``steerlens demo``): steering working end to end on the default model.

1. Load SmolLM2-135M-Instruct (offline; fetched and dequantised once).
2. Fit a mean-difference (CAA) direction at one residual layer from *response-side* data: the
   same harmful instructions (fit split) followed by a refusal vs by a compliant opening.
3. Print unsteered and steered greedy generations side by side for held-out (test split)
   harmful and harmless prompts.
4. Evaluate the unsteered model next to the steered one (safety, truthfulness, utility) and
   print the table; results, plots and the fitted artifact are written to ``--out``.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

LAYER = 10
ALPHA = 1.5
N_FIT = 48


def _side_by_side(prompt: str, left: str, right: str, width: int = 58) -> str:
    lw = textwrap.wrap(left.replace("\n", " ").strip() or "(empty)", width) or [""]
    rw = textwrap.wrap(right.replace("\n", " ").strip() or "(empty)", width) or [""]
    rows = [f"> {prompt}", f"  {'UNSTEERED':<{width}} | STEERED"]
    for i in range(max(len(lw), len(rw))):
        a = lw[i] if i < len(lw) else ""
        b = rw[i] if i < len(rw) else ""
        rows.append(f"  {a:<{width}} | {b}")
    return "\n".join(rows)


def run_demo(args: argparse.Namespace) -> int:
    import steerlens
    from steerlens.evals import data as D
    from steerlens.evals.judges import PatternJudge
    from steerlens.evals.report import results_markdown, run_eval
    from steerlens.pipeline import make_steerer

    quick = bool(getattr(args, "quick", False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = args.data_dir
    t0 = time.time()

    print(f"[1/4] loading the default model (data from {D.data_dir(root)})")
    model = steerlens.load_model()
    print(f"      {model.name}: {model.n_layers} layers, {model.n_heads} heads, d_model {model.d_model}")

    n_fit = 16 if quick else N_FIT
    print(f"[2/4] fitting CAA at blocks.{LAYER}.hook_resid_post from {n_fit} harmful prompts "
          "+ refusal vs + compliant reply (fit split, response-side)")
    data = D.safety_response_pairs("fit", n=n_fit, root=root)
    steerer = make_steerer("caa", layer=LAYER, alpha=ALPHA).fit(model, data, progress=True)
    steerer.save(out / "caa-artifact", model=model)

    n_show = 2 if quick else 4
    harmful = [e.prompt for e in D.load_harmful("test", n_show, root=root)]
    harmless = [e.prompt for e in D.load_harmless("test", n_show - 1, root=root)]
    prompts = harmful + harmless
    print(f"[3/4] greedy generations, held-out test prompts, alpha={ALPHA}")
    new_tokens = 24 if quick else 48
    plain = steerlens.generate(model, prompts, max_new_tokens=new_tokens)
    steered = steerlens.generate(model, prompts, steerer.edits(model, prompts), max_new_tokens=new_tokens)
    judge = PatternJudge()
    v_plain, v_steer = judge.judge(prompts, plain), judge.judge(prompts, steered)
    for i, (p, a, b) in enumerate(zip(prompts, plain, steered)):
        kind = "HARMFUL" if i < len(harmful) else "HARMLESS"
        print(f"\n[{kind}] judge: {v_plain[i].label} -> {v_steer[i].label}")
        print(_side_by_side(p, a, b))

    limit = 8 if quick else 48
    print(f"\n[4/4] evaluation (test split, {limit} items per set), unsteered vs CAA alpha={ALPHA}")
    records = run_eval(model, ("safety", "truthfulness", "utility"),
                       {"unsteered": None, f"caa-L{LAYER}-a{ALPHA}": steerer},
                       limit=limit, out_dir=out / "eval", data_root=root)
    print()
    print(results_markdown(records))
    print(f"\nwrote {out}/eval/results.json, results.md and plots; artifact {out}/caa-artifact "
          f"({time.time() - t0:.0f} s)")
    return 0
