"""``steerlens patch``: the head effect map of a behaviour and the causal check of REAL / ITI.

    steerlens patch --task truthfulness --out runs/patch/truthfulness
    steerlens patch --task safety --n 64 --exact-heads all --out runs/patch/safety
    steerlens patch --task safety --no-compare --out runs/patch/map-only
    steerlens patch --task truthfulness --fit-task truthfulness-mc --preset paper --mc-format qa_primer \
        --heads 13 --out runs/patch/tqa-paper      # REAL as its authors read and score TruthfulQA

Writes ``effect_map.png`` (layer x head, REAL's and ITI's top-H outlined), ``effect_map.json``
(every head's mean effect with a bootstrap interval), ``exact_check.json`` (+ scatter) and the
comparison table ``comparison.md`` / ``comparison.json`` (see :mod:`steerlens.interp.causal`).
"""

from __future__ import annotations

import argparse
import json


def _cmd_patch(args: argparse.Namespace) -> int:
    from ..cliargs import model_from_args
    from .causal import run_causal_check

    model = model_from_args(args)
    kw = {}
    if args.task == "truthfulness":
        kw = {"max_true": args.max_answers or None, "max_false": args.max_answers or None}
        if args.mc_format != "chat":
            kw["fmt"] = args.mc_format
    exact = args.exact_heads if args.exact_heads == "all" else int(args.exact_heads)
    real_runs = None
    if args.real_runs:
        import torch

        real_runs = torch.load(args.real_runs)[args.seed]
    res = run_causal_check(model, args.task, args.out, split=args.split, n=args.n, mode=args.mode,
                           batch_size=args.batch_size, exact_n=args.exact_n, exact_heads=exact, heads=args.heads,
                           repeats=args.repeats, fit_n=args.fit_n, acts_path=args.acts, ablate_split=args.ablate_split,
                           ablate_n=args.ablate_n, random_sets=args.random_sets, seed=args.seed,
                           data_root=args.data_dir, metric_kw=kw, epochs=args.epochs, compare=not args.no_compare,
                           progress=not args.quiet, resume=not args.no_resume, real_runs=real_runs,
                           fit_task=args.fit_task, real_preset=args.preset)
    print(json.dumps(res["files"], indent=1))
    return 0


def add_subcommands(sub) -> None:
    from ..cliargs import add_common_args

    p = sub.add_parser("patch", help="head effect map (attribution + exact patching) and the causal check of REAL/ITI")
    p.add_argument("--task", choices=("safety", "truthfulness"), default="truthfulness",
                   help="safety: log-prob of a refusal opening after harmful requests; truthfulness: MC2")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="val", help="split of the effect map (default val)")
    p.add_argument("--n", type=int, default=64, help="examples in the effect map")
    p.add_argument("--mode", choices=("mean", "zero"), default="mean", help="ablation: mean (default) or zero")
    p.add_argument("--max-answers", type=int, default=2,
                   help="truthfulness: true and false answers per question in MC2 (0 = all, the standard MC2)")
    p.add_argument("--exact-n", type=int, default=16, help="examples of the exact check")
    p.add_argument("--exact-heads", default="32", help="heads of the exact check: a number or 'all'")
    p.add_argument("--heads", type=int, default=16, help="H: size of the selections compared and ablated")
    p.add_argument("--repeats", type=int, default=None, help="REAL's repeats (default: REAL's default)")
    p.add_argument("--epochs", type=int, default=20, help="REAL's VQ-AE epochs")
    p.add_argument("--fit-n", type=int, default=None, help="fit-split examples for the selections (default all)")
    p.add_argument("--acts", default=None, help="cache file for the fit-split activations (reused when present)")
    p.add_argument("--ablate-split", default="test")
    p.add_argument("--ablate-n", type=int, default=64)
    p.add_argument("--random-sets", type=int, default=5, help="random H-sets (seeds) ablated for reference")
    p.add_argument("--no-compare", action="store_true", help="only the effect map and the exact check")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute the effect map and exact check even if --out has them for the same examples")
    p.add_argument("--real-runs", default=None,
                   help="REAL's per-run AUCs from benchmarks/bench_select_stability.py (<out>.runs.pt; same data "
                        "and settings) instead of training REAL's autoencoders again")
    p.add_argument("--fit-task", default=None,
                   help="fit task of the selections (default: --task; truthfulness-mc: every answer as a plain-text "
                        "row, the REAL authors' reading)")
    p.add_argument("--preset", default=None, help="REAL's parameter preset (e.g. paper; default: REAL's defaults)")
    p.add_argument("--mc-format", choices=("chat", "qa", "qa_primer"), default="chat",
                   help="truthfulness: MC2 prompt format (qa_primer: TruthfulQA instruction + six-shot primer, plain "
                        "text, as the REAL authors score it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_patch)
    add_gate_eval_subcommand(sub)



def _cmd_gate_eval(args) -> int:
    from pathlib import Path

    from .gate_eval import default_gates, gate_eval, write_table
    import json as _json

    from ..cliargs import model_from_args

    gates: dict[str, dict] = {}
    names = args.gate or list(default_gates())
    known = default_gates()
    for n in names:
        if n not in known:
            print(f"gate-eval: unknown gate {n!r}; known: {', '.join(known)} (or give --gate-spec FILE.json)",
                  file=__import__("sys").stderr)
            return 2
        gates[n] = known[n]
    for path in args.gate_spec or []:
        try:
            extra = _json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            print(f"gate-eval: cannot read gate spec {path}: {e}", file=__import__("sys").stderr)
            return 2
        if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
            print(f"gate-eval: {path} must hold {{name: spec}} objects", file=__import__("sys").stderr)
            return 2
        gates.update(extra)
    m = model_from_args(args)
    res = gate_eval(m, args.out, gates, data_root=args.data_dir, fpr=args.fpr, seed=args.seed,
                    max_template_chars=args.max_template_chars, cache_dir=args.cache_dir, best_auc=args.best_auc,
                    batch_size=args.batch_size, read_upto=args.read_upto, progress=not args.no_progress)
    print(write_table(res))
    print(f"wrote {Path(args.out) / 'generalisation.json'}, .md, .png")
    return 0


def add_gate_eval_subcommand(subparsers) -> None:
    from ..cliargs import add_common_args
    from .gate_eval import default_gates

    p = subparsers.add_parser("gate-eval", help="gate generalisation protocol: leave-one-source-out TPR, look-alike "
                                                "FPRs, held-out jailbreak families (JSON, table, plot)")
    p.add_argument("--gate", nargs="+", action="extend", default=None,
                   help=f"gates to run (default: all of {', '.join(default_gates())})")
    p.add_argument("--gate-spec", nargs="+", action="extend", default=None,
                   help="JSON file(s) of {name: {kind, params, reading, layers, hard_negatives, augment_wrapped, balance}}")
    p.add_argument("--out", required=True, help="output directory")
    add_common_args(p)
    p.add_argument("--cache-dir", default=None, help="cache of prompt reads (reused across runs)")
    p.add_argument("--fpr", type=float, default=0.05, help="target false-positive rate on Alpaca val (default 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-template-chars", type=int, default=None,
                   help="leave out jailbreak wrappers longer than this (CPU cost)")
    p.add_argument("--best-auc", action="store_true",
                   help="also report the best AUC any layer and reading reaches on the look-alike splits (reads all layers)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--read-upto", type=int, default=None,
                   help="read layers 0..N (default: the deepest gate layer); the same N reuses one cache")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_gate_eval)

__all__ = ["add_subcommands"]
