"""Pipelines as files: a TOML spec names the steerers (selector, gate, editor and their
parameters, fitting data) and the evaluation; :func:`run_spec` fits, saves, evaluates and writes
results, plots and traces; :func:`ablate` runs a grid of variations on the same splits.

A spec::

    name = "finesteer-safety"

    [[steerer]]                        # one or more; several act together in one generation
    name = "safety"
    selector = { kind = "fixed", modules = ["blocks.14.hook_resid_post"] }   # or "real", "iti"
    gate = "scs"                       # a short name, or a role table { kind = "...", ... }
    editor = "caa"                     # caa | repe | iti | ... (see `steerlens methods --roles`)
    alpha = 1.0
    fit = { task = "safety", n = 100 } # a task of steerlens.pipeline.fitdata (data + gate data)

    [[baseline]]                       # optional: evaluated next to the pipeline, e.g. plain CAA
    name = "caa"
    method = "caa"                     # a registered method, with its parameters
    params = { layer = 14 }
    alpha = 1.0
    fit = { task = "safety" }

    [eval]
    tasks = ["safety", "truthfulness", "utility"]
    limit = 48                         # examples per eval set (None: the eval defaults)
    split = "test"
    max_new_tokens = 48
    trace = true                       # per-token trace of the safety replies
    options = { safety = { sets = ["harmful", "harmless"] } }   # keyword arguments per eval task

A steerer is either a registered ``method`` (+ ``params``) whose roles may be overridden by
``selector`` / ``gate`` / ``editor``, or the three roles alone. Short role names come from
:data:`ROLE_ALIASES` (plugins add theirs with :func:`register_role_alias`). With a head or
residual selector name (``"real"``) the selector follows the editor's family: REAL scores the
residual layers for a residual editor (and keeps one), the heads for a head editor.

Evaluated configurations: ``unsteered``, each baseline, each steerer alone (when there are
several) and all steerers together under the spec's ``name``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import time
import tomllib
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import parallel
from ..cliargs import parse_value
from ..fileio import atomic_write_json, atomic_write_text
from .base import ROLE_TYPES, PipelineError, Role, Steerer
from .compose import Composition
from .fitdata import fit_data, gate_data
from .registry import available_methods, load_plugins, make_steerer

#: short role names: ``ROLE_ALIASES[role][name] = {"kind": ..., **default params}``.
ROLE_ALIASES: dict[str, dict[str, dict]] = {
    "gate": {"none": {"kind": "always_open"}, "always": {"kind": "always_open"},
             "scs-contrast": {"kind": "scs", "form": "contrast"}, "scs-outside": {"kind": "scs", "form": "outside"}},
    "editor": {"caa": {"kind": "mean_diff"}, "mean_diff": {"kind": "mean_diff"}, "repe": {"kind": "pca"},
               "pca": {"kind": "pca"}, "iti": {"kind": "iti"}, "mose": {"kind": "mose"},
               "odesteer": {"kind": "ode_editor"}, "ode": {"kind": "ode_editor"}},
    "selector": {"real": {"kind": "real_selector"}, "iti": {"kind": "iti_selector"},
                 "barrier": {"kind": "ode_barrier_selector"}},
}
ROLES = ("selector", "gate", "editor")


class SpecError(PipelineError):
    """A pipeline spec that cannot be read or built."""


def register_role_alias(role: str, name: str, table: dict) -> None:
    """Let specs and ``--vary`` name a role by ``name`` (e.g. ``register_role_alias("gate", "scs",
    {"kind": "scs_gate"})``)."""
    if role not in ROLES:
        raise SpecError(f"role must be one of {ROLES}, got {role!r}")
    if "kind" not in table:
        raise SpecError("an alias table needs a 'kind'")
    ROLE_ALIASES.setdefault(role, {})[name] = dict(table)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------

def read_spec(path: str | os.PathLike) -> dict:
    """The spec as a dict (``tomllib``), checked for its top-level shape."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"no spec file at {p}")
    try:
        spec = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: not valid TOML ({e})") from e
    return normalise_spec(spec, source=str(p))


def normalise_spec(spec: dict, source: str = "spec") -> dict:
    spec = copy.deepcopy(spec)
    known = {"name", "model", "steerer", "baseline", "eval", "seed", "description"}
    bad = sorted(set(spec) - known)
    if bad:
        raise SpecError(f"{source}: unknown top-level keys {bad}; known: {sorted(known)}")
    if not spec.get("steerer"):
        raise SpecError(f"{source}: no [[steerer]] table")
    spec.setdefault("name", Path(source).stem if source != "spec" else "pipeline")
    spec.setdefault("baseline", [])
    spec.setdefault("eval", {})
    for kind in ("steerer", "baseline"):
        names = set()
        for i, st in enumerate(spec[kind]):
            st.setdefault("name", st.get("method") or f"{kind}{i}")
            if st["name"] in names:
                raise SpecError(f"{source}: two {kind}s named {st['name']!r}")
            names.add(st["name"])
            keys = {"name", "method", "params", "selector", "gate", "editor", "alpha", "fit"}
            extra = sorted(set(st) - keys)
            if extra:
                raise SpecError(f"{source}: {kind} {st['name']!r} has unknown keys {extra}; known: {sorted(keys)}")
            if not st.get("method") and not (st.get("selector") and st.get("editor")):
                raise SpecError(f"{source}: {kind} {st['name']!r} needs a method, or a selector and an editor")
            if "task" not in st.get("fit", {}):
                raise SpecError(f"{source}: {kind} {st['name']!r} needs fit = {{ task = ... }}")
    ev_keys = {"tasks", "limit", "split", "seed", "max_new_tokens", "batch_size", "trace", "judge", "options"}
    bad = sorted(set(spec["eval"]) - ev_keys)
    if bad:
        raise SpecError(f"{source}: unknown [eval] keys {bad}; known: {sorted(ev_keys)}")
    return spec


# ------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------

def _role_table(role: str, value: Any) -> dict:
    if isinstance(value, str):
        table = ROLE_ALIASES.get(role, {}).get(value)
        if table is None:
            if value in ROLE_TYPES:
                return {"kind": value}
            known = sorted(ROLE_ALIASES.get(role, {}))
            raise SpecError(f"unknown {role} {value!r}; short names: {known}, or a table {{ kind = ... }} "
                            f"with a role kind from {sorted(ROLE_TYPES)}")
        return dict(table)
    if isinstance(value, dict) and "kind" in value:
        base = ROLE_ALIASES.get(role, {}).get(value["kind"])
        return {**(base or {}), **value, "kind": (base or value)["kind"]}
    raise SpecError(f"{role} must be a short name or a table with a 'kind', got {value!r}")


def _family(editor: Role) -> str:
    return getattr(type(editor), "family", "any")


def build_role(role: str, value: Any, *, editor: Optional[Role] = None) -> Role:
    load_plugins()
    table = _role_table(role, value)
    kind = table.pop("kind")
    cls = ROLE_TYPES.get(kind)
    if cls is None:
        raise SpecError(f"unknown {role} kind {kind!r}; known role kinds: {sorted(ROLE_TYPES)}")
    if role == "selector" and kind == "real_selector" and editor is not None and _family(editor) == "resid":
        table.setdefault("target", "resid")
        table.setdefault("heads", 1)
    try:
        return cls(**table)
    except TypeError as e:
        raise SpecError(f"{role} {kind!r}: {e}") from e


def build_steerer(st: dict) -> Steerer:
    """An unfitted :class:`Steerer` from one ``[[steerer]]`` / ``[[baseline]]`` table."""
    alpha = st.get("alpha")
    if st.get("method"):
        if st["method"] not in available_methods():
            raise SpecError(f"unknown method {st['method']!r}; available: {sorted(available_methods())}")
        params = dict(st.get("params", {}))
        if alpha is not None:
            params["alpha"] = alpha
        steerer = make_steerer(st["method"], **params)
        if st.get("editor"):
            steerer.editor = build_role("editor", st["editor"])
        if st.get("selector"):
            steerer.selector = build_role("selector", st["selector"], editor=steerer.editor)
        if st.get("gate"):
            steerer = steerer.with_gate(build_role("gate", st["gate"]))
    else:
        editor = build_role("editor", st["editor"])
        selector = build_role("selector", st["selector"], editor=editor)
        gate = build_role("gate", st["gate"]) if st.get("gate") else None
        steerer = Steerer(selector, editor, gate, alpha=1.0 if alpha is None else float(alpha), method="pipeline",
                          method_params={k: st[k] for k in ROLES if k in st})
    steerer.name = st["name"]
    return steerer


def fit_steerer(model, st: dict, *, data_root=None, progress: bool = True) -> Steerer:
    """Build and fit one steerer table on its fitting task's fit split (gate data included)."""
    steerer = build_steerer(st)
    fit = st["fit"]
    n, seed = fit.get("n"), int(fit.get("seed", 0))
    data = fit_data(fit["task"], n, seed, data_root)
    gdata = None
    if not steerer.gate.always_open:
        gdata = gate_data(fit.get("gate_task", fit["task"]), fit.get("gate_n"), seed, data_root)
        if gdata is None:
            raise SpecError(f"steerer {st['name']!r}: task {fit['task']!r} has no gate data; set fit.gate_task")
    steerer.fit(model, data, gate_data=gdata, progress=progress)
    steerer.name = st["name"]
    parallel.check_same(f"steerer {st['name']!r}", steerer.state_dict())  # data-parallel: every rank fitted alike
    return steerer


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------

def _eval_settings(spec: dict) -> dict:
    ev = spec["eval"]
    return {"tasks": list(ev.get("tasks", ["safety", "utility"])), "limit": ev.get("limit", 48),
            "split": ev.get("split", "test"), "seed": int(ev.get("seed", 0)),
            "max_new_tokens": int(ev.get("max_new_tokens", 48)), "batch_size": int(ev.get("batch_size", 16)),
            "trace": bool(ev.get("trace", False)), "judge": ev.get("judge"), "options": dict(ev.get("options", {}))}


def _task_kwargs(ev: dict, *, trace: bool) -> dict:
    """Per-task keyword arguments: max_new_tokens / trace for safety, plus ``[eval.options.<task>]``."""
    kw = {"safety": {"max_new_tokens": ev["max_new_tokens"], **({"trace": True} if trace and ev["trace"] else {})}}
    for task, opts in ev["options"].items():
        if not isinstance(opts, dict):
            raise SpecError(f"eval.options.{task} must be a table of that task's keyword arguments")
        kw.setdefault(task, {}).update(opts)
    return kw


def configurations(spec: dict, fitted: dict[str, Steerer]) -> dict[str, Any]:
    """``{config name: steering}``: unsteered, baselines, each steerer alone (when several), and
    the spec's pipeline (all its steerers together)."""
    configs: dict[str, Any] = {"unsteered": None}
    for b in spec["baseline"]:
        configs[b["name"]] = fitted[b["name"]]
    names = [s["name"] for s in spec["steerer"]]
    if len(names) > 1:
        for n in names:
            configs[n] = fitted[n]
    configs[spec["name"]] = Composition([fitted[n] for n in names], name=spec["name"]) if len(names) > 1 \
        else fitted[names[0]]
    return configs


def fit_spec(spec: dict, model, out_dir: str | os.PathLike, *, data_root=None,
             progress: bool = True) -> dict[str, Steerer]:
    """Fit every steerer and baseline of ``spec`` and save each artifact under ``out/artifacts``."""
    from ..hooks import capture_cache

    out = Path(out_dir)
    fitted: dict[str, Steerer] = {}
    # steerers fitted on the same data at the same sites (two SCS gates at one layer) capture once
    with capture_cache() as cache:
        for st in spec["steerer"] + spec["baseline"]:
            if progress:
                print(f"fitting {st['name']} ({st.get('method') or 'roles'}, task {st['fit']['task']})", flush=True)
            fitted[st["name"]] = fit_steerer(model, st, data_root=data_root, progress=progress)
            fitted[st["name"]].save(out / "artifacts" / st["name"], model=model)
    if progress and cache["hits"]:
        print(f"      {cache['hits']} site capture(s) shared between fits, {cache['misses']} read from the model",
              flush=True)
    return fitted


def together_table(records, spec: dict) -> list[dict]:
    """With several steerers: every metric of the composed pipeline against each steerer alone,
    paired on the same examples (does a behaviour lose anything when the other steerer is on?)."""
    from ..evals.compare import paired_table

    names = [s["name"] for s in spec["steerer"]]
    if len(names) < 2:
        return []
    return [r for n in names for r in paired_table(records, n) if r["config"] == spec["name"]]


def run_spec(spec: dict, model, out_dir: str | os.PathLike, *, data_root=None, progress: bool = True,
             limit: Optional[int] = None, on_fitted=None) -> dict:
    """Fit every steerer and baseline, save their artifacts, evaluate every configuration, write
    results, paired differences against the unsteered model (and, with several steerers, of the
    composed pipeline against each steerer alone), Pareto plots and the trace.

    ``on_fitted(configs)`` is called with ``{config name: steering}`` before the evaluation (the
    demo prints replies side by side there). The returned summary has the ``records`` too."""
    from ..evals.compare import paired_table
    from ..evals.report import plot_pareto, run_eval

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "spec.json", spec, indent=2)
    t0 = time.perf_counter()
    fitted = fit_spec(spec, model, out, data_root=data_root, progress=progress)
    t_fit = time.perf_counter() - t0
    ev = _eval_settings(spec)
    if limit is not None:
        ev["limit"] = limit
    configs = configurations(spec, fitted)
    if on_fitted is not None:
        on_fitted(configs)
    task_kwargs = _task_kwargs(ev, trace=True)
    t1 = time.perf_counter()
    records = run_eval(model, ev["tasks"], configs, ev["limit"], out / "eval", seed=ev["seed"], split=ev["split"],
                       batch_size=ev["batch_size"], data_root=data_root, judge=ev["judge"],
                       task_kwargs=task_kwargs, progress=progress)
    paired = paired_table(records, "unsteered")
    write_paired(paired, out / "paired", title=f"{spec['name']}: each configuration − unsteered (paired)")
    together = together_table(records, spec)
    if together:
        write_paired(together, out / "together",
                     title=f"{spec['name']}: all steerers on − each steerer alone (paired, same examples)")
    plot_pareto(records, out / "pareto.png")
    summary = {"name": spec["name"], "configs": list(configs), "fit_seconds": round(t_fit, 1),
               "eval_seconds": round(time.perf_counter() - t1, 1), "results": str(out / "eval" / "results.json"),
               "paired": str(out / "paired.json"), "pareto": str(out / "pareto.png")}
    if together:
        summary["together"] = str(out / "together.json")
    if ev["trace"] and (out / "eval" / "trace.jsonl").exists():
        summary["trace"] = str(out / "eval" / "trace.jsonl")
        summary["trace_plot"] = plot_first_trace(out / "eval" / "trace.jsonl", spec["name"], out / "trace.png")
    atomic_write_json(out / "summary.json", summary, indent=2)
    return {**summary, "records": records, "paired_rows": paired, "together_rows": together}


def plot_first_trace(path, config: str, png) -> Optional[str]:
    """Plot the trace of the first harmful reply of ``config`` (a steered reply), if any."""
    from ..hooks import Trace

    recs = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    recs = [r for r in recs if r.get("steering") == config] or recs
    if not recs:
        return None
    first = recs[0]
    mine = [r for r in recs if r.get("set") == first.get("set") and r["input"] == first["input"]
            and r.get("steering") == first.get("steering")]
    Trace(mine).plot(first["input"], png, title=f"{first.get('steering')}: {first.get('set')} {first.get('id')}")
    return str(png)


def write_paired(rows: Sequence[dict], stem: Path, title: str) -> None:
    atomic_write_json(stem.with_suffix(".json"), list(rows), indent=1)
    lines = [f"# {title}", "", "| config | metric | value | base | difference | 95% CI | n | interval |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        metric = r["metric"] if r.get("diff_of", r["metric"]) == r["metric"] else f"{r['metric']} (Δ of {r['diff_of']})"
        lines.append(f"| {r['config']} | {metric} | {r['value']:.3f} | {r['base_value']:.3f} | "
                     f"{r['diff']:+.3f} | [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {r['n']} | {r['ci_method']} |")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------
# ablation grids
# ------------------------------------------------------------------------------------------------

def parse_vary(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``["gate=scs,none", "alpha=0.5,1"]`` → ``[("gate", ["scs", "none"]), ("alpha", [0.5, 1])]``."""
    out = []
    for it in items:
        if "=" not in it:
            raise SpecError(f"--vary expects KEY=V1,V2,..., got {it!r}")
        k, vs = it.split("=", 1)
        vals = [parse_value(v.strip()) for v in vs.split(",") if v.strip()]
        if not vals:
            raise SpecError(f"--vary {k}: no values")
        out.append((k.strip(), vals))
    return out


def _set(spec: dict, key: str, value: Any) -> None:
    """Set ``key`` on a steerer: ``gate``, ``params.layer``, ``fit.n``, or ``<steerer name>.gate``."""
    names = {s["name"]: s for s in spec["steerer"]}
    head, _, rest = key.partition(".")
    if head in names and rest:
        target, path = names[head], rest
    else:
        target, path = spec["steerer"][0], key
    parts = path.split(".")
    node = target
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if value in ("none", None) and parts[-1] in ROLES and parts[-1] != "gate":
        raise SpecError(f"{parts[-1]} cannot be 'none'")
    node[parts[-1]] = value


def variants(spec: dict, vary: Sequence[tuple[str, list[Any]]]) -> dict[str, dict]:
    """``{variant name: spec}`` for every combination of the varied values (the base included
    when it is one of them)."""
    out = {}
    for combo in itertools.product(*[vals for _, vals in vary]):
        v = copy.deepcopy(spec)
        name = ",".join(f"{k}={json.dumps(x) if not isinstance(x, str) else x}" for (k, _), x in zip(vary, combo))
        for (k, _), x in zip(vary, combo):
            _set(v, k, x)
        v["name"] = name
        out[name] = v
    return out


def ablate(spec: dict, model, vary: Sequence[tuple[str, list[Any]]], out_dir: str | os.PathLike, *,
           data_root=None, progress: bool = True, limit: Optional[int] = None) -> dict:
    """Fit and evaluate every variation on the same fit and test splits; one table of paired
    differences against the base spec (with intervals) and the Pareto plot. Variations that
    differ only in a steerer's ``alpha`` share one fit of it."""
    from ..evals.compare import paired_table
    from ..evals.report import plot_pareto, run_eval

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_name = f"base ({spec['name']})"
    grid = {base_name: spec, **{k: v for k, v in variants(spec, vary).items()}}
    atomic_write_json(out / "grid.json", grid, indent=1)
    configs: dict[str, Any] = {"unsteered": None}
    t0 = time.perf_counter()
    cache: dict[str, Steerer] = {}  # one fit per steerer table up to its strength
    n_fits = 0
    for name, v in grid.items():
        sts = []
        for st in v["steerer"]:
            key = json.dumps({k: x for k, x in st.items() if k not in ("alpha", "name")}, sort_keys=True, default=str)
            if key not in cache:
                cache[key] = fit_steerer(model, st, data_root=data_root, progress=progress)
                n_fits += 1
            fitted = copy.copy(cache[key])  # shares the fitted roles; only the strength differs
            if st.get("alpha") is not None:
                fitted.alpha = float(st["alpha"])
            fitted.name = st["name"]
            sts.append(fitted)
        configs[name] = sts[0] if len(sts) == 1 else Composition(sts, name=name)
    t_fit = time.perf_counter() - t0
    ev = _eval_settings(spec)
    if limit is not None:
        ev["limit"] = limit
    records = run_eval(model, ev["tasks"], configs, ev["limit"], out / "eval", seed=ev["seed"], split=ev["split"],
                       batch_size=ev["batch_size"], data_root=data_root, judge=ev["judge"],
                       task_kwargs=_task_kwargs(ev, trace=False), progress=progress)
    rows = [r for r in paired_table(records, base_name) if r["config"] != "unsteered"]
    write_paired(rows, out / "ablation", title=f"{spec['name']}: each variation − base (paired, same prompts)")
    plot_pareto(records, out / "pareto.png")
    summary = {"base": base_name, "variants": list(grid), "fits": n_fits, "fit_seconds": round(t_fit, 1),
               "table": str(out / "ablation.md"), "results": str(out / "eval" / "results.json")}
    atomic_write_json(out / "summary.json", summary, indent=2)
    return summary


__all__ = ["read_spec", "normalise_spec", "build_role", "build_steerer", "fit_steerer", "fit_spec", "run_spec",
           "together_table", "ablate",
           "variants", "parse_vary", "register_role_alias", "ROLE_ALIASES", "SpecError", "configurations"]
