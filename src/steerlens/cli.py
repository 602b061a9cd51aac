"""The ``steerlens`` command line.

Subcommands are contributed by the parts of the package: this module owns ``fetch-model``, ``fetch-data``,
``generate`` and ``demo``; ``steerlens.evals.cli`` adds ``eval``; ``steerlens.evals.judge_cli`` adds
``judge`` and ``judge-report``; ``steerlens.pipeline.cli``
adds ``fit`` and ``select``; ``steerlens.interp.cli`` adds ``patch``. Each of those modules exposes ``add_subcommands(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

from .cliargs import add_common_args, add_data_arg, model_from_args

_PLUGINS = ("steerlens.evals.cli", "steerlens.evals.judge_cli", "steerlens.pipeline.cli", "steerlens.interp.cli")


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    from .models import default_model_dir, load_model

    path = default_model_dir()
    m = load_model(device="cpu")
    print(f"default model ready: {path} ({m.n_layers} layers, {m.n_heads} heads, d_model {m.d_model})")
    return 0


def _cmd_fetch_data(args: argparse.Namespace) -> int:
    from .evals.data import DataError, data_dir
    from .evals.fetch import fetch_data

    if args.if_missing:
        try:
            found = data_dir(args.to)
        except DataError:
            found = None
        if found is not None:
            print(f"benchmark data: {found} (found; nothing fetched)")
            return 0
    counts = fetch_data(args.to, force=args.force)
    print(f"benchmark data written: {len(counts)} files, {sum(counts.values())} rows")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .hooks import generate

    prompts = list(args.prompt)
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        print("steerlens generate: give --prompt or --prompts-file", file=sys.stderr)
        return 2
    model = model_from_args(args)
    edits = None
    if args.steering:
        from .pipeline import load_steerer  # provided by the pipeline package

        steerer = load_steerer(args.steering, model=model)
        edits = steerer.edits(model, prompts, alpha=args.alpha)
    gens = generate(model, prompts, edits, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                    return_details=True, trace=bool(args.trace))
    for g in gens:
        print(json.dumps({"prompt": g.prompt, "reply": g.text, **({"gates": g.gates} if g.gates else {})},
                         ensure_ascii=False))
    if args.trace:
        gens.trace.write_jsonl(args.trace)
        if gens.trace.for_input(0):
            png = str(args.trace).rsplit(".", 1)[0] + ".png"
            gens.trace.plot(0, png, title=f"{gens[0].prompt[:60]!r}")
            print(f"trace: {args.trace}, plot of the first reply: {png}", file=sys.stderr)
        else:
            print(f"trace: {args.trace} is empty (no steering edits)", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steerlens", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch-model", help="fetch and cache the default model (SmolLM2-135M-Instruct)")
    f.set_defaults(func=_cmd_fetch_model)

    fd = sub.add_parser("fetch-data", help="build the benchmark data directory from the Hugging Face hub (needs network)")
    fd.add_argument("--to", default=None, metavar="DIR",
                    help="where to write it (default: $STEERLENS_DATA, else ../shared/data next to the repository)")
    fd.add_argument("--force", action="store_true", help="replace DIR if it exists")
    fd.add_argument("--if-missing", action="store_true",
                    help="do nothing when a data directory is found (DIR, $STEERLENS_DATA or ../shared/data)")
    fd.set_defaults(func=_cmd_fetch_data)

    g = sub.add_parser("generate", help="generate replies, optionally steered by a saved steerer")
    add_common_args(g, data=False)
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    g.add_argument("--prompts-file", default=None, help="one prompt per line")
    g.add_argument("--steering", default=None, help="a saved steerer artifact directory")
    g.add_argument("--alpha", type=float, default=None, help="override the steerer's strength")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--trace", default=None, metavar="FILE.jsonl",
                   help="write the per-token trace (and FILE.png, a plot of the first reply)")
    g.set_defaults(func=_cmd_generate)

    d = sub.add_parser("demo", help="the main job: REAL -> harm gate -> MoSE / ODESteer vs unsteered and CAA on the default model")
    add_data_arg(d)
    d.add_argument("--out", default="runs/demo", help="where to write the demo's results")
    d.add_argument("--quick", action="store_true", help="smaller sizes (for smoke tests)")
    d.add_argument("--limit", type=int, default=None,
                   help="examples per eval set (default from the spec: 20; more is slower, tighter intervals)")
    d.add_argument("--seeds", type=int, default=None, metavar="K",
                   help="refit with K seeds and show the spread across seeds beside each interval "
                        "(default: the spec's [eval] seeds, else 1)")
    d.set_defaults(func=_cmd_demo)

    for mod_name in _PLUGINS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name != mod_name:
                raise
            continue
        mod.add_subcommands(sub)
    return p


def _user_error(e: BaseException) -> bool:
    """An error the user can fix (bad model, data, artifact, spec or input), said in one line."""
    from .evals.data import DataError
    from .hooks.batching import InputError
    from .hooks.edits import EditError
    from .hooks.sites import SiteError
    from .models import ModelLoadError
    from .pipeline.errors import PipelineError

    return isinstance(e, (DataError, InputError, EditError, SiteError, ModelLoadError, PipelineError))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - user errors in one line; anything else keeps its traceback
        if not _user_error(e):
            raise
        print(f"steerlens {args.command}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
