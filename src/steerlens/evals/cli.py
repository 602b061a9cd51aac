"""``steerlens eval``: run the evaluation tasks for one or more steering configurations;
``steerlens own-pairs``: sample and judge the model's own replies for the ``safety-own`` fit task.

    steerlens eval --tasks safety,truthfulness,utility [--limit N] [--steering ARTIFACT|none ...]
                   [--alpha A] [--model M] [--data-dir D] --out DIR
    steerlens own-pairs [--split fit] [--n N] [--k 4] [--k-system K] [--seed S] [--cache-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cliargs import add_common_args, add_worker_args, distributed, model_from_args


class SteeringLoadError(RuntimeError):
    """A --steering artifact could not be loaded."""


def load_steering(spec: str, model):
    """``"none"`` -> ``None``; otherwise a saved steerer directory loaded with
    ``steerlens.pipeline.load_steerer(path, model=model)``."""
    if spec.lower() == "none":
        return None
    path = Path(spec)
    if not path.exists():
        raise SteeringLoadError(f"--steering {spec}: no such artifact directory (use 'none' for unsteered)")
    try:
        from ..pipeline import load_steerer
    except ImportError as e:
        raise SteeringLoadError(
            f"--steering {spec}: steerlens.pipeline.load_steerer is not available ({e}); "
            "the pipeline package is needed to load saved steerers") from e
    return load_steerer(path, model=model)


def _config_name(spec: str, taken: set[str]) -> str:
    base = "none" if spec.lower() == "none" else (Path(spec).name or str(spec))
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def cmd_eval(args: argparse.Namespace) -> int:
    return distributed(_eval_body, args)  # --workers N / torchrun: batches split over the ranks, rank 0 writes


def _eval_body(args: argparse.Namespace) -> int:
    from .data import DataError, data_dir
    from .report import run_eval
    from .tasks import TASKS

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if not tasks or bad:
        print(f"steerlens eval: unknown task(s) {bad or tasks}; choose from {', '.join(TASKS)}", file=sys.stderr)
        return 2
    try:
        data_dir(args.data_dir)
    except DataError as e:
        print(f"steerlens eval: {e}", file=sys.stderr)
        return 2
    model = model_from_args(args)
    configs: dict = {}
    for spec in args.steering or ["none"]:
        try:
            configs[_config_name(spec, set(configs))] = load_steering(spec, model)
        except SteeringLoadError as e:
            print(f"steerlens eval: {e}", file=sys.stderr)
            return 2
    task_kwargs = {"safety": {"max_new_tokens": args.max_new_tokens, "trace": args.trace}}
    records = run_eval(model, tasks, configs, args.limit, args.out, seed=args.seed, split=args.split,
                       alpha=args.alpha, batch_size=args.batch_size, data_root=args.data_dir, judge=args.judge,
                       task_kwargs=task_kwargs, progress=not args.no_progress)
    for r in records:
        print(f"{r.steering:>16}  {r.metric:<24} {r.fmt()}")
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def cmd_own_pairs(args: argparse.Namespace) -> int:
    import json

    from .data import data_dir, load_harmful
    from .own_pairs import DEFAULT_SYSTEM, sample_own_replies

    for name in ("n", "k", "batch_size", "max_new_tokens"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "k" else 1):
            print(f"steerlens own-pairs: --{name.replace('_', '-')} must be >= {0 if name == 'k' else 1}, got {v}",
                  file=sys.stderr)
            return 2
    if args.k_system is not None and args.k_system < 0:
        print(f"steerlens own-pairs: --k-system must be >= 0, got {args.k_system}", file=sys.stderr)
        return 2
    if args.pairs_per_prompt < 0:
        print(f"steerlens own-pairs: --pairs-per-prompt must be >= 0 (0: all), got {args.pairs_per_prompt}",
              file=sys.stderr)
        return 2
    if args.judge not in ("clf", "default", "pattern", "model") and not args.judge.startswith("model:"):
        print(f"steerlens own-pairs: unknown judge {args.judge!r}; use clf, pattern, model or model:NAME",
              file=sys.stderr)
        return 2
    data_dir(args.data_dir)
    exs = load_harmful(args.split, args.n, args.seed, root=args.data_dir)
    model = model_from_args(args)
    system = DEFAULT_SYSTEM if args.system is None else (args.system or None)
    got = sample_own_replies(model, exs, k=args.k, k_system=args.k_system, seed=args.seed, judge=args.judge,
                             temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                             system=system, batch_size=args.batch_size, cache=not args.no_cache,
                             cache_root=args.cache_dir, split=args.split, progress=not args.no_progress)
    ppp = args.pairs_per_prompt or None
    counts = got.counts(ppp)
    where = f"read from {got.path}" if not got.generated else (f"written to {got.path}" if got.path else "not cached")
    print(f"own replies of {args.split} ({where}):")
    for key, v in counts.items():
        print(f"  {key:<22} {v}")
    if args.out:
        from ..fileio import atomic_write_json

        d = got.to_dict()
        d["counts"] = counts
        atomic_write_json(args.out, d)
        print(f"wrote {args.out}")
    if args.show:
        for pid, (refusals, compliances) in list(got.by_prompt().items())[: args.show]:
            print(json.dumps({"id": pid, "prompt": got.prompts[pid],
                              "refusals": [r.reply for r in refusals[:2]],
                              "compliances": [c.reply for c in compliances[:2]]}, ensure_ascii=False))
    return 0


def add_subcommands(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate steering: safety, truthfulness, utility (with CIs)")
    p.add_argument("--tasks", default="safety,truthfulness,utility",
                   help="comma-separated task names: safety, truthfulness, utility, truthfulqa_gen (open-ended "
                        "TruthfulQA, sampled answers scored by BLEU/ROUGE and an informativeness check)")
    p.add_argument("--limit", type=int, default=None,
                   help="cap every data set at N examples (default sizes: harmful 160, harmless Alpaca 100, "
                        "XSTest 50 safe + 40 unsafe, TruthfulQA 164 questions + 164 A/B, MMLU A/B 114, "
                        "KL 100 and perplexity 100 Alpaca prompts; all from the test split)")
    p.add_argument("--steering", nargs="+", action="extend", default=None,
                   help="saved steerer artifact dir(s), or 'none' for unsteered (default: none)")
    p.add_argument("--alpha", type=float, default=None, help="override the steering strength")
    add_common_args(p)
    p.add_argument("--split", default="test", choices=["fit", "val", "test", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48, help="safety generation length")
    p.add_argument("--judge", default="clf", help="refusal judge: clf (trained, default; accuracy: steerlens judge-report) | "
                   "pattern | model | model:NAME (model: accuracy in judge-report --model-judge)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--trace", action="store_true",
                   help="record the per-token trace of every safety reply (trace.jsonl next to the results)")
    p.add_argument("--out", required=True, help="output directory (results.json, results.md, plots)")
    add_worker_args(p)
    p.set_defaults(func=cmd_eval)

    from . import own_pairs as OP

    o = subparsers.add_parser("own-pairs", help="sample and judge the model's own replies to harmful prompts "
                                                "(the safety-own fit task's data; cached) and count the pairs")
    add_common_args(o)
    o.add_argument("--split", default="fit", choices=["fit", "val", "test", "all"])
    o.add_argument("--n", type=int, default=None, help="harmful prompts of the split (default: all of them)")
    o.add_argument("--k", type=int, default=OP.DEFAULT_K,
                   help=f"samples per prompt without a system prompt (default {OP.DEFAULT_K})")
    o.add_argument("--k-system", type=int, default=OP.DEFAULT_K_SYSTEM,
                   help=f"samples per prompt after the refusal-eliciting system prompt (default {OP.DEFAULT_K_SYSTEM})")
    o.add_argument("--system", default=None,
                   help="the refusal-eliciting system prompt (default: own_pairs.DEFAULT_SYSTEM; '' for none)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--temperature", type=float, default=OP.DEFAULT_TEMPERATURE)
    o.add_argument("--top-p", type=float, default=OP.DEFAULT_TOP_P)
    o.add_argument("--max-new-tokens", type=int, default=OP.DEFAULT_MAX_NEW_TOKENS)
    o.add_argument("--batch-size", type=int, default=OP.DEFAULT_BATCH_SIZE,
                   help="prompts per generation batch (part of the cache key: sampling is seeded per batch)")
    o.add_argument("--judge", default="clf", help="clf (trained, default) | pattern | model | model:NAME")
    o.add_argument("--pairs-per-prompt", type=int, default=1, help="pairs counted per prompt (0: as many as it has)")
    o.add_argument("--cache-dir", default=None,
                   help="where reply files live (default: $STEERLENS_CACHE/own_pairs or ~/.cache/steerlens/own_pairs)")
    o.add_argument("--no-cache", action="store_true", help="sample again and write no cache file")
    o.add_argument("--out", default=None, metavar="FILE.json", help="also write the judged replies and counts here")
    o.add_argument("--show", type=int, default=0, metavar="N", help="print the replies of the first N prompts")
    o.add_argument("--no-progress", action="store_true")
    o.set_defaults(func=cmd_own_pairs)
