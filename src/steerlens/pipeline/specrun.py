"""Running a pipeline spec (:mod:`steerlens.pipeline.spec`): :func:`run_spec` fits every steerer
and baseline, saves their artifacts, evaluates every configuration and writes results, paired
differences, Pareto plots and traces; :func:`ablate` runs a grid of variations on the same splits.

Evaluated configurations: ``unsteered``, each baseline, each steerer alone (when there are
several) and all steerers together under the spec's ``name`` (a
:class:`~steerlens.pipeline.steerer.Composition`).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
import os
from typing import Any, Optional, Sequence

from ..fileio import atomic_write_json, atomic_write_text
from .spec import SpecError, fit_steerer, seeded, variants
from .steerer import Composition, Steerer

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
             limit: Optional[int] = None, on_fitted=None, reuse_unsteered: bool = True) -> dict:
    """Fit every steerer and baseline, save their artifacts, evaluate every configuration, write
    results, paired differences against the unsteered model (and, with several steerers, of the
    composed pipeline against each steerer alone), Pareto plots and the trace.

    ``on_fitted(configs)`` is called with ``{config name: steering}`` before the evaluation (the
    demo prints replies side by side there). The returned summary has the ``records`` too.
    ``reuse_unsteered``: share the unsteered passes and copy closed-gate rows (``run_eval``)."""
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
                       task_kwargs=task_kwargs, progress=progress, reuse_unsteered=reuse_unsteered)
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


def seed_rows(per_seed: dict[int, Sequence]) -> list[dict]:
    """Across-seed spread of every (configuration, metric): the value under each seed, their mean,
    sample standard deviation (0 for one seed), min and max, in first-seen order."""
    import statistics

    vals: dict[tuple[str, str], dict[int, float]] = {}
    for s, recs in per_seed.items():
        for r in recs:
            vals.setdefault((r.steering, r.metric), {})[int(s)] = float(r.value)
    rows = []
    for (config, metric), d in vals.items():
        seeds = sorted(d)
        xs = [d[k] for k in seeds]
        rows.append({"config": config, "metric": metric, "seeds": seeds, "values": xs,
                     "mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                     "min": min(xs), "max": max(xs)})
    return rows


def run_seeds(spec: dict, model, out_dir: str | os.PathLike, seeds: int | Sequence[int], *, data_root=None,
              progress: bool = True, limit: Optional[int] = None, on_fitted=None) -> dict:
    """:func:`run_spec` once per seed (:func:`~steerlens.pipeline.spec.seeded`: every fit refitted
    with its seeds offset; the evaluation prompts stay the same), and the spread across seeds.

    The first seed writes to ``out_dir`` itself (so ``seeds=[0]`` is exactly :func:`run_spec`), the
    others to ``out_dir/seeds/seed-<s>``; ``out_dir/seeds.json`` and ``seeds.md`` hold
    :func:`seed_rows`. Returns the first seed's summary with ``seed_rows`` and ``seeds`` added."""
    seeds = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SpecError(f"seeds must be distinct non-negative integers (or a count >= 1), got {seeds}")
    out = Path(out_dir)
    per_seed: dict[int, Sequence] = {}
    first = None
    for i, s in enumerate(seeds):
        if progress and len(seeds) > 1:
            print(f"=== seed {s} ({i + 1} of {len(seeds)}) ===", flush=True)
        summ = run_spec(seeded(spec, s), model, out if i == 0 else out / "seeds" / f"seed-{s}", data_root=data_root,
                        progress=progress, limit=limit, on_fitted=on_fitted if i == 0 else None)
        per_seed[s] = summ["records"]
        first = first or summ
    rows = seed_rows(per_seed)
    atomic_write_json(out / "seeds.json", {"seeds": seeds, "rows": rows}, indent=1)
    lines = [f"# {spec['name']}: spread across {len(seeds)} fit seeds ({', '.join(map(str, seeds))})", "",
             "| config | metric | mean | sd | min | max | per seed |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['metric']} | {r['mean']:.3f} | {r['sd']:.3f} | {r['min']:.3f} | "
                     f"{r['max']:.3f} | {' / '.join(f'{v:.3f}' for v in r['values'])} |")
    atomic_write_text(out / "seeds.md", "\n".join(lines) + "\n")
    return {**first, "seeds": seeds, "seed_rows": rows}


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


__all__ = ["run_spec", "run_seeds", "seed_rows", "fit_spec", "configurations", "together_table", "ablate", "write_paired", "plot_first_trace"]
