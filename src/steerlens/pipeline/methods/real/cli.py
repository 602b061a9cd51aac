"""``steerlens select``: rank heads with REAL or ITI and write the ranking JSON + heatmap.

    steerlens select --method real --task truthfulness --heads 16 --out runs/select_real
    steerlens select --method iti  --task safety --out runs/select_iti

``--task truthfulness``: TruthfulQA questions with a true vs a false answer; ``--task safety``:
harmful requests followed by a refusal vs a compliant opening; any other fit task by name (e.g.
``safety-own``, the model's own refusals vs compliances; ``truthfulness-mc``, the REAL authors'
rows). Read from the ``--split`` (default ``fit``) of the benchmark data
(``--data-dir``, else ``$STEERLENS_DATA``, else ``../shared/data``).

Wiring: ``steerlens.pipeline.cli.add_subcommands`` calls :func:`add_select_subcommand`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ....cliargs import add_common_args
from ...fitdata import FIT_TASK_NAMES

#: every fit task (``safety-own``: the model's own replies; ``truthfulness-mc``: REAL's authors' rows)
TASKS = FIT_TASK_NAMES
DEFAULT_REPEATS = 10  # = steerlens.pipeline.methods.real.selector.DEFAULT_REPEATS (not imported: keeps --help light)
#: what ``select`` passes when neither an option nor the preset sets it
_DEFAULTS = {"scorer": "markov", "repeats": DEFAULT_REPEATS, "epochs": 20}


def _cmd_select(args: argparse.Namespace) -> int:
    from ....cliargs import model_from_args
    from ...errors import PipelineError
    from ...registry import make_steerer, preset_params
    from ....fileio import atomic_write_json
    from .diagnostics import write_selection_report
    from ...fitdata import fit_data
    from .selector import default_heads

    try:
        preset = preset_params(args.method, args.preset)
    except PipelineError as e:
        print(f"steerlens select: {e}", file=sys.stderr)
        return 2
    model = model_from_args(args)
    heads = args.heads if args.heads is not None else preset.get("heads") or default_heads(model.n_layers * model.n_heads)
    params: dict = {"seed": args.seed, "heads": heads}
    if args.method == "real":
        # an option not given takes the preset's value, else the command's default
        given = {"scorer": args.scorer, "repeats": args.repeats}
        params.update({k: v if v is not None else preset.get(k, _DEFAULTS[k]) for k, v in given.items()})
        epochs = args.epochs if args.epochs is not None else (preset.get("vqae") or {}).get("epochs", _DEFAULTS["epochs"])
        params["vqae"] = {"epochs": epochs}
    data = fit_data(args.task, args.n, args.seed, args.data_dir, split=args.split)
    steerer = make_steerer(args.method, preset=args.preset, **params)
    if args.preset not in (None, "default"):
        params["preset"] = args.preset
    t0 = time.perf_counter()
    acts = steerer.read_contrastive(model, data, progress=not args.quiet)
    t1 = time.perf_counter()
    selection = steerer.selector.fit(model, acts)
    t2 = time.perf_counter()
    paths = write_selection_report(args.out, selection, steerer.selector, n_layers=model.n_layers,
                                   n_heads=model.n_heads,
                                   title=f"{args.method} on {args.task} ({len(data)} pairs): {selection.score_name}")
    meta = {"method": args.method, "task": args.task, "split": args.split, "n_pairs": len(data),
            "data_fingerprint": data.fingerprint(), "model": model.fingerprint(), "params": params,
            "seconds": {"capture": t1 - t0, "select": t2 - t1}, "files": paths}
    rank_path = paths["ranking"]
    with open(rank_path) as f:
        rep = json.load(f)
    rep["run"] = meta
    atomic_write_json(Path(rank_path), rep)
    top = ", ".join(f"{m} ({w:.2f})" for m, w in zip(rep["selected"], rep["weights"]))
    print(f"{args.method}: selected {len(rep['selected'])} heads in {t2 - t1:.1f}s: {top}")
    for k, p in paths.items():
        print(f"  {k}: {p}")
    return 0


def add_select_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``select`` to the ``steerlens`` command line."""
    p = subparsers.add_parser("select", help="rank attention heads (REAL or ITI), write ranking JSON + heatmap")
    p.add_argument("--method", choices=("real", "iti"), default="real")
    p.add_argument("--task", choices=TASKS, default="truthfulness", help="fit task (steerlens fit's --task)")
    p.add_argument("--heads", type=int, default=None, help="H, heads to select (default: 48/1024 of all heads)")
    p.add_argument("--out", required=True, help="output directory (ranking.json, heatmap.png, usage.png)")
    p.add_argument("--split", default="fit", help="data split to select on (fit | val | test | all)")
    p.add_argument("--n", type=int, default=None, help="number of questions / prompts (default: the whole split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scorer", choices=("markov", "logreg", "gru", "gru_noshift"), default=None,
                   help="REAL's ranking scorer (default: markov; the paper preset: gru_noshift)")
    p.add_argument("--epochs", type=int, default=None, help="REAL's VQ-AE epochs (default: 20)")
    p.add_argument("--preset", default=None,
                   help="named parameter set of the method: default or paper (docs/fidelity.md); the options above "
                        "override it")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"REAL: average the held-out AUC over this many runs (folds x seeds; default "
                        f"{DEFAULT_REPEATS}; 1 = a single 80/20 run)")
    add_common_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_select)
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="steerlens-select")
    sub = ap.add_subparsers(dest="command", required=True)
    add_select_subcommand(sub)
    args = ap.parse_args(["select", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)


__all__ = ["add_select_subcommand", "TASKS"]
