"""``steerlens fit``, ``sweep``, ``methods``, ``run`` and ``ablate`` (plus ``select`` from REAL).

Examples::

    steerlens fit --method caa --task safety --layer 10 --alpha 1 --n 64 --out runs/caa
    steerlens fit --method iti --task truthfulness --heads 16 --alpha 5 --out runs/iti
    steerlens fit --method odesteer --task truthfulness --preset paper --n 64 --out runs/ode-paper
    steerlens fit --method caa --task safety --layer 14 --alpha 1 --gate scs --gate-param layer=12 \
        --gate-param form='"contrast"' --out runs/caa-scs
    steerlens sweep --method caa --task safety --alphas 0.5,1,2 --layers 8,10,14 --out runs/sweeps/caa-safety
    steerlens methods --roles
    steerlens run examples/caa-safety.toml --out runs/caa
    steerlens ablate examples/caa-safety.toml --vary alpha=0.5,1 --vary params.layer=10,14 --out runs/abl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from ..cliargs import add_common_args, add_worker_args, distributed, model_from_args, parse_value


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _params(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"--param expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def _common(p: argparse.ArgumentParser) -> None:
    from .fitdata import FIT_TASK_NAMES

    p.add_argument("--method", required=True, help="steering method (see `steerlens methods`)")
    p.add_argument("--task", required=True, choices=FIT_TASK_NAMES,
                   help="fitting data: safety (response-side refusal vs compliance), safety-prompt "
                        "(harmful vs harmless prompts), truthfulness (true vs false answers)")
    p.add_argument("--n", type=int, default=None, help="fitting examples from the fit split (default: the method's validated size, "
                                                        "e.g. finesteer 96; else all)")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra method parameter (JSON value), repeatable, e.g. --param sigma_over=\"pos\"")
    p.add_argument("--gate", default=None,
                   help="gate any method per prompt: scs (SCS subspace gate), probe (logistic-probe gate); fitted "
                        "on harmful vs harmless prompts of the fit split (see --gate-param, --gate-n, --gate-xstest)")
    p.add_argument("--gate-param", action="append", default=[], metavar="KEY=VALUE",
                   help="gate parameter (JSON value), repeatable, e.g. --gate-param layer=12 --gate-param fpr=0.05")
    p.add_argument("--gate-n", type=int, default=None, help="harmful gate-fitting prompts (default: all of the fit split)")
    p.add_argument("--gate-xstest", action="store_true",
                   help="add XSTest's fit-split safe prompts to the gate's benign side as hard negatives")
    p.add_argument("--out", required=True)


def _gate_args(args: argparse.Namespace, params: dict) -> None:
    gp = _params(args.gate_param)
    if args.gate is None:
        if gp or args.gate_xstest or args.gate_n is not None:
            raise SystemExit("--gate-param / --gate-n / --gate-xstest need --gate")
        return
    params["gate"], params["gate_params"] = args.gate, gp


def _cmd_fit(args: argparse.Namespace) -> int:
    from .errors import PipelineError
    from .registry import available_methods, fit_gate_task, fit_size, make_steerer
    from .fitdata import fit_data, gate_data

    methods = available_methods()
    if args.method not in methods:
        print(f"steerlens fit: unknown method {args.method!r}; available: {', '.join(sorted(methods))}", file=sys.stderr)
        return 2
    params = _params(args.param)
    if args.layer is not None:
        params["layer"] = args.layer
    if args.heads is not None:
        params["heads"] = args.heads
    if args.alpha is not None:
        params["alpha"] = args.alpha
    _gate_args(args, params)
    try:
        st = make_steerer(args.method, preset=args.preset, **params)
    except PipelineError as e:
        print(f"steerlens fit: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    model = model_from_args(args)
    n = fit_size(args.method, args.n)
    data = fit_data(args.task, n, args.seed, args.data_dir)
    gdata = None
    if not st.gate.always_open:
        gdata = gate_data(fit_gate_task(args.method, args.task), args.gate_n, args.seed, args.data_dir,
                          **({"xstest_negatives": True} if args.gate_xstest else {}))
    st.fit(model, data, gate_data=gdata, progress=True)
    path = st.save(args.out)
    sel = st.selection
    out = {"artifact": str(path), "method": st.method, "alpha": st.alpha,
           "sites": [str(s) for s in sel.sites()] if sel else [],
           "n_pos": len(data.pos), "split": data.split, "wall_time_s": round(time.perf_counter() - t0, 1)}
    if gdata is not None:
        out["gate"] = {"kind": st.gate.kind, "params": st.gate.params, "n_target": len(gdata.pos),
                       "n_benign": len(gdata.neg), "threshold": getattr(st.gate, "threshold", None)}
    print(json.dumps(out))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import sweep

    params = _params(args.param)
    _gate_args(args, params)
    if args.gate_n is not None or args.gate_xstest:
        raise SystemExit("steerlens sweep fits its gate on the whole fit split; --gate-n / --gate-xstest are for fit")
    model = model_from_args(args)
    res = sweep(model, args.method, args.task, alphas=args.alphas, layers=args.layers, heads=args.heads,
                params=params, n_fit=args.n, seed=args.seed, eval_limit=args.eval_limit or None,
                select_split=args.select_split, report_split=None if args.report_split == "none" else args.report_split,
                out_dir=args.out, data_root=args.data_dir, max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                objective_kwargs={"max_kl": args.max_kl} if args.max_kl is not None else None)
    print(f"best: {res['best']}  ({args.out}/sweep.md, tradeoff.png)")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .registry import available_methods

    for name, info in sorted(available_methods().items()):
        if info.hidden:
            continue
        ps = ", ".join(f"{k}={v!r}" for k, v in info.parameters().items())
        print(f"{name:10s} [{info.family}] {info.help}\n           {ps}")
        if len(info.preset_names()) > 1:
            print(f"           presets (--preset): {', '.join(info.preset_names())}")
    from .registry import available_gates

    print(f"gates (--gate, any method): {', '.join(g for g in available_gates() if not g.startswith('test_'))}")
    if args.roles:
        from .roles import ROLE_ALIASES

        print("\nrole short names for pipeline specs and --vary:")
        for role, table in ROLE_ALIASES.items():
            print(f"  {role:8s} " + ", ".join(f"{k} ({v['kind']})" for k, v in sorted(table.items())))
    return 0


def _spec_and_model(args, vary=None):
    """The spec, checked (with every ``--vary`` variant) before the model loads; then the model."""
    from .spec import check_variants, read_spec

    spec = read_spec(args.spec)
    if vary:
        check_variants(spec, vary)
    model = model_from_args(args, args.model or spec.get("model"))
    return spec, model


def _cmd_run(args: argparse.Namespace) -> int:
    return distributed(_run_body, args)


def _run_body(args: argparse.Namespace) -> int:
    from .spec import SpecError
    from .specrun import run_seeds

    try:
        if args.seeds is not None and args.seeds < 1:
            raise SpecError(f"--seeds must be >= 1, got {args.seeds}")
        spec, model = _spec_and_model(args)
        seeds = args.seeds if args.seeds is not None else int(spec["eval"].get("seeds", 1))
        summary = run_seeds(spec, model, args.out, seeds, data_root=args.data_dir, limit=args.limit,
                            progress=not args.quiet)
    except SpecError as e:
        print(f"steerlens run: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith(("records", "_rows"))}, indent=1))
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    return distributed(_ablate_body, args)


def _ablate_body(args: argparse.Namespace) -> int:
    from .spec import SpecError, parse_vary
    from .specrun import ablate

    try:
        vary = parse_vary(args.vary)
        spec, model = _spec_and_model(args, vary)
        summary = ablate(spec, model, vary, args.out, data_root=args.data_dir, limit=args.limit,
                         progress=not args.quiet)
    except SpecError as e:
        print(f"steerlens ablate: {e}", file=sys.stderr)
        return 2
    print(open(summary["table"]).read())
    return 0


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="pipeline spec (TOML; see examples/)")
    p.add_argument("--out", required=True, help="output directory")
    add_common_args(p, model_help="override the spec's model")
    p.add_argument("--limit", type=int, default=None, help="override the spec's examples per eval set")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_worker_args(p)


def add_subcommands(sub) -> None:
    f = sub.add_parser("fit", help="fit a steerer on contrastive data and save it as an artifact")
    _common(f)
    f.add_argument("--layer", type=int, default=None, help="residual layer (caa, repe)")
    f.add_argument("--heads", type=int, default=None, help="number of heads H (iti, real)")
    f.add_argument("--alpha", type=float, default=None, help="default strength stored in the artifact")
    f.add_argument("--preset", default=None,
                   help="named parameter set of the method: default (its defaults) or paper (the authors' settings, "
                        "scaled to the model; docs/fidelity.md); --layer/--heads/--alpha/--param override it")
    f.set_defaults(func=_cmd_fit)

    s = sub.add_parser("sweep", help="strength sweep over alpha (and layers / H): eval, trade-off plot, best setting")
    _common(s)
    s.add_argument("--alphas", type=_floats, required=True, help="e.g. 0,0.5,1,2")
    s.add_argument("--layers", type=_ints, default=None, help="e.g. 8,10,14 (residual methods)")
    s.add_argument("--heads", type=_ints, default=None, help="e.g. 8,16,32 (head methods)")
    s.add_argument("--eval-limit", type=int, default=48, help="examples per eval set (0: eval defaults)")
    s.add_argument("--select-split", default="val", help="split on which the best setting is chosen")
    s.add_argument("--report-split", default="test", help="split on which the best setting is reported ('none' to skip)")
    s.add_argument("--max-new-tokens", type=int, default=48)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--max-kl", type=float, default=None,
                   help="only settings with mean benign next-token KL <= this (nats) can be chosen as best")
    s.set_defaults(func=_cmd_sweep)

    m = sub.add_parser("methods", help="list the registered steering methods and their parameters")
    m.add_argument("--roles", action="store_true", help="also list the role short names used by pipeline specs")
    m.set_defaults(func=_cmd_methods)

    r = sub.add_parser("run", help="fit, save, evaluate and plot the pipeline a TOML spec describes")
    _spec_args(r)
    r.add_argument("--seeds", type=int, default=None, metavar="K",
                   help="refit with K seeds (0..K-1; same eval prompts) and write the spread across seeds "
                        "(seeds.json / seeds.md) beside the intervals; seed 0 is the plain run (default: the spec's "
                        "[eval] seeds, else 1)")
    r.set_defaults(func=_cmd_run)

    a = sub.add_parser("ablate", help="run a grid of variations of a spec on the same splits; paired table vs the base")
    _spec_args(a)
    a.add_argument("--vary", action="append", required=True, metavar="KEY=V1,V2",
                   help="e.g. --vary gate=scs,none --vary editor=mose,caa --vary alpha=0.5,1 (repeatable)")
    a.set_defaults(func=_cmd_ablate)

    add_select_subcommand = None
    try:  # REAL contributes `steerlens select` (the CLI sits above the method packages)
        from .methods.real.cli import add_select_subcommand
    except ModuleNotFoundError as e:
        if e.name not in ("steerlens.pipeline.methods.real", "steerlens.pipeline.methods.real.cli"):
            warnings.warn(f"`steerlens select` unavailable: {e!r}")
    except Exception as e:  # noqa: BLE001 - a broken plugin must not break the other commands
        warnings.warn(f"`steerlens select` unavailable: {e!r}")
    if add_select_subcommand is not None:
        add_select_subcommand(sub)


__all__ = ["add_subcommands"]
