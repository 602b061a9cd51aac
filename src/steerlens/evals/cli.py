"""``steerlens eval``: run the evaluation tasks for one or more steering configurations.

    steerlens eval --tasks safety,truthfulness,utility [--limit N] [--steering ARTIFACT|none ...]
                   [--alpha A] [--model M] [--data-dir D] --out DIR
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
