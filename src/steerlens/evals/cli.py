"""``steerlens eval``: run the evaluation tasks for one or more steering configurations.

    steerlens eval --tasks safety,truthfulness,utility [--limit N] [--steering ARTIFACT|none ...]
                   [--alpha A] [--model M] [--data-dir D] --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    from ..parallel import ParallelError, run_command

    try:  # --workers N / torchrun: batches split over the ranks, rank 0 writes (steerlens.parallel)
        return run_command(_eval_body, args, workers=args.workers, threads=args.threads)
    except ParallelError as e:
        print(f"steerlens eval: {e}", file=sys.stderr)
        return 2


def _eval_body(args: argparse.Namespace) -> int:
    from ..models import load_model
    from ..pipeline.cli import _device_map_arg
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
    model = load_model(args.model, device=args.device, dtype=args.dtype, device_map=_device_map_arg(args.device_map),
                       offload_folder=args.offload_folder)
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
    p.add_argument("--tasks", default="safety,truthfulness,utility", help="comma-separated task names")
    p.add_argument("--limit", type=int, default=None,
                   help="cap every data set at N examples (default sizes: harmful 160, harmless Alpaca 100, "
                        "XSTest 50 safe + 40 unsafe, TruthfulQA 164 questions + 164 A/B, MMLU A/B 114, "
                        "KL 100 and perplexity 100 Alpaca prompts; all from the test split)")
    p.add_argument("--steering", nargs="+", action="extend", default=None,
                   help="saved steerer artifact dir(s), or 'none' for unsteered (default: none)")
    p.add_argument("--alpha", type=float, default=None, help="override the steering strength")
    p.add_argument("--model", default=None, help="model name or directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None, help="benchmark data directory (default: $STEERLENS_DATA or ../shared/data)")
    p.add_argument("--split", default="test", choices=["fit", "val", "test", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48, help="safety generation length")
    p.add_argument("--judge", default="pattern", help="refusal judge: pattern | model | model:NAME")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--trace", action="store_true",
                   help="record the per-token trace of every safety reply (trace.jsonl next to the results)")
    p.add_argument("--out", required=True, help="output directory (results.json, results.md, plots)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device-map", default=None,
                   help="spread the model over devices (accelerate): auto | balanced | sequential | JSON | @map.json")
    p.add_argument("--offload-folder", default=None, help="where 'disk' modules of --device-map keep their weights")
    p.add_argument("--workers", type=int, default=1,
                   help="data-parallel processes (gloo on CPU, NCCL on GPU); rank 0 writes results equal to one process")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    p.set_defaults(func=cmd_eval)
