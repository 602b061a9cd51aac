"""Candidate replies for the 4-class refusal judge's labelled set (tests/fixtures/judge_labels_v2.jsonl).

Replies of the default model (greedy, ``--max-new-tokens``) under every registered steering method,
each at strengths from none through mild to degenerate (and the negative, refusal-removing side for
some), to prompts never used for fitting: the harmful test split, every new harmful source
(SimpleSafetyTests, HarmfulQA, CatQA-en, HarmfulQ, Do-Not-Answer harmful, OR-Bench-Toxic), harmful
test-split prompts wrapped in jailbreak templates, OR-Bench-Hard-1K (benign look-alikes), Alpaca
harmless (test) and XSTest safe / unsafe (test). Every row carries full provenance (prompt id and
source, set, method, strength, setting, steering parameters, seed, this script's arguments).

Steerers are fitted cheaply (``--n-fit`` response-side safety pairs of the ``fit`` split; gates on
``--n-fit`` prompt-side pairs). Rows are appended per setting to ``--out`` (a restart skips settings
already written). Labels are made blind afterwards (see tests/fixtures/README.md).

    OMP_NUM_THREADS=2 python scripts/judge_v2_candidates.py --out /work/judge_work/generated.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch

import steerlens
from steerlens.evals import data as D

NEW_HARMFUL = ("simplesafetytests", "harmfulqa", "catqa_en", "harmfulq", "donotanswer_harmful", "orbench_toxic")

#: prompts per (setting, set)
QUOTA = {"harmful_test": 3, "simplesafetytests": 2, "harmfulqa": 2, "catqa_en": 2, "harmfulq": 2,
         "donotanswer_harmful": 2, "orbench_toxic": 2, "jailbreak": 3, "orbench_hard": 4, "alpaca": 3,
         "xstest_safe": 3, "xstest_unsafe": 2}

#: (method, factory params, strengths); strength None = the factory default; "none" = unsteered.
SETTINGS = [
    ("none", {}, [None]),
    ("caa", {"layer": 10}, [-2.0, 1.0, 2.0, 4.0, 8.0]),
    ("repe", {"layer": 10}, [-2.0, 2.0, 8.0]),
    ("iti", {"heads": 16, "seed": 0}, [5.0, 15.0, 40.0]),
    ("real", {"heads": 16, "seed": 0}, [5.0, 15.0, 40.0]),
    ("mose", {"layer": 14, "seed": 0}, [0.5, 2.0, 4.0]),
    ("caa-scs", {"layer": 10}, [1.0, 4.0]),
    ("finesteer", {"layer": 14, "seed": 0}, [1.0, 2.0, 4.0]),
    ("odesteer", {"layer": 16, "read": "response_mean", "seed": 0}, [20.0, 80.0, 300.0]),
    ("dir-ablate", {"layer": 10}, [1.0]),
    ("ablate", {"sites": ["blocks.10.attn.hook_z[0,1,2,3,4,5,6,7,8]"], "mode": "zero"}, [1.0]),
    ("scale", {"sites": ["blocks.10.hook_attn_out", "blocks.10.hook_mlp_out"], "factor": 4.0}, [1.0]),
    ("set", {"sites": ["blocks.10.hook_resid_post"]}, [1.0]),
]


def _pool(root, args_max_template: int = 700) -> dict[str, list[tuple[str, str, dict]]]:
    """set name -> [(prompt id, prompt, extra)]"""
    base = D.data_dir(root)
    pools: dict[str, list] = {}
    harm = D.load_harmful("test", root=root)
    pools["harmful_test"] = [(e.id, e.prompt, {"source": e.source}) for e in harm]
    for src in NEW_HARMFUL:
        rows = json.load(open(base / "safety" / f"{src}.json", encoding="utf-8"))
        pools[src] = [(f"{src}:{i}", r["instruction"].strip(), {"source": src, "category": r.get("category")})
                      for i, r in enumerate(rows) if r.get("instruction")]
    rows = json.load(open(base / "safety" / "orbench_hard_1k.json", encoding="utf-8"))
    pools["orbench_hard"] = [(f"orbench_hard_1k:{i}", r["instruction"].strip(),
                              {"source": "orbench_hard_1k", "category": r.get("category")}) for i, r in enumerate(rows)]
    tpls = json.load(open(base / "safety" / "jailbreak_templates.json", encoding="utf-8"))
    tpls = [(i, t) for i, t in enumerate(tpls) if len(t["template"]) <= args_max_template]
    rng = random.Random("judge-v2-jailbreak")
    jb = []
    for e in harm:
        i, t = rng.choice(tpls)
        jb.append((f"{e.id}|jailbreak:{i}", t["template"].replace("{instruction}", e.prompt),
                   {"source": e.source, "template": t["name"], "template_family": t.get("family"),
                    "instruction": e.prompt}))
    pools["jailbreak"] = jb
    pools["alpaca"] = [(e.id, e.prompt, {"source": e.source}) for e in D.load_harmless("test", 600, seed=11, root=root)]
    pools["xstest_safe"] = [(e.id, e.prompt, {"source": "xstest", "type": e.meta["type"]})
                            for e in D.load_xstest("test", "safe", root=root)]
    pools["xstest_unsafe"] = [(e.id, e.prompt, {"source": "xstest", "type": e.meta["type"]})
                              for e in D.load_xstest("test", "unsafe", root=root)]
    return pools


def fit(model, method: str, params: dict, n_fit: int, seed: int, cache: dict):
    from steerlens.pipeline import make_steerer

    data = cache.setdefault("data", D.safety_response_pairs("fit", n=n_fit, seed=seed))
    st = make_steerer(method, **params)
    with torch.enable_grad():  # REAL's VQ-AE and MoSE train with autograd
        _fit(st, model, method, data, n_fit, seed, cache)
    return st


def _fit(st, model, method, data, n_fit, seed, cache):
    if method in ("caa-scs", "finesteer"):
        gd = cache.setdefault("gate", D.safety_prompt_pairs("fit", n=n_fit, seed=seed))
        st.fit(model, data, gate_data=gd)
    else:
        st.fit(model, data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--n-fit", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=12,
                    help="prompts are sorted by length first, so batches pad little")
    ap.add_argument("--only", default=None, help="comma-separated methods to run (default: all)")
    ap.add_argument("--settings", default=None, help="comma-separated settings (e.g. caa@4,set@1) to run (default: all)")
    ap.add_argument("--quota-scale", type=float, default=1.0)
    ap.add_argument("--max-template-chars", type=int, default=700,
                    help="jailbreak templates longer than this are skipped (CPU cost)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model = steerlens.load_model()
    pools = _pool(args.data_dir, args.max_template_chars)
    done = set()
    if os.path.exists(args.out):
        for line in open(args.out, encoding="utf-8"):
            if line.strip():
                done.add(json.loads(line)["setting"])
    only = set(args.only.split(",")) if args.only else None
    cache: dict = {}
    for method, params, strengths in SETTINGS:
        if only and method not in only:
            continue
        todo = [s for s in strengths if (method if s is None else f"{method}@{s:g}") not in done]
        if args.settings:
            want = set(args.settings.split(","))
            todo = [s for s in todo if (method if s is None else f"{method}@{s:g}") in want]
        if not todo:
            continue
        t0 = time.perf_counter()
        try:
            st = None if method == "none" else fit(model, method, params, args.n_fit, args.seed, cache)
        except Exception as e:  # noqa: BLE001 - one method failing must not stop the others
            print(f"[skip] {method}: fit failed: {e!r}", file=sys.stderr, flush=True)
            continue
        t_fit = time.perf_counter() - t0
        for s in todo:
            setting = method if s is None else f"{method}@{s:g}"
            rng = random.Random(f"judge-v2:{setting}:{args.seed}")
            exs = []
            for name, k in QUOTA.items():
                k = max(1, round(k * args.quota_scale))
                exs += [(name, x) for x in rng.sample(pools[name], min(k, len(pools[name])))]
            order = sorted(range(len(exs)), key=lambda i: len(exs[i][1][1]))
            prompts = [exs[i][1][1] for i in order]
            t1 = time.perf_counter()
            edits = None if st is None else st.edits(model, prompts, alpha=s)
            texts = steerlens.generate(model, prompts, edits, max_new_tokens=args.max_new_tokens,
                                       batch_size=args.batch_size, progress=False)
            rows = []
            for j, i in enumerate(order):
                name, (pid, prompt, extra) = exs[i]
                rows.append({"id": pid, "set": name, **extra, "method": method, "strength": s,
                             "setting": setting, "params": params, "prompt": prompt, "reply": texts[j],
                             "model": model.name if hasattr(model, "name") else "default",
                             "max_new_tokens": args.max_new_tokens, "decoding": "greedy", "seed": args.seed,
                             "n_fit": args.n_fit, "script": "scripts/judge_v2_candidates.py",
                             "script_args": vars(args)})
            with open(args.out, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            print(f"{setting}: {len(rows)} replies (fit {t_fit:.0f}s, gen {time.perf_counter() - t1:.0f}s)",
                  flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
