"""Running evaluations and writing their results.

:func:`run_eval` runs tasks for several steering configurations and writes, under ``out_dir``:

* ``results.json`` - ``{"meta": {...}, "records": [Record...]}`` (atomic write, rewritten after
  each task so a crash keeps what finished);
* ``samples.jsonl`` - per-example generations, judge verdicts and gate decisions of the safety task;
* ``trace.jsonl``   - with tracing on: per input, generated token and edit, the gate's score and
  scale, the norm of the applied delta and every value the editor reported;
* ``results.md``   - a markdown table (value, 95% CI, n, split, wall time);
* ``metrics.png``  - one bar panel per metric with CI error bars, bars = configurations;
* ``tradeoff.png`` - with more than one configuration: harmful refusal vs utility scatter.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..fileio import atomic_savefig, atomic_write_text
from .reuse import SharedRuns
from .stats import Record
from .tasks import get_task


def _split_outputs(records: Sequence[Record]) -> tuple[list[dict], list[dict], list[dict]]:
    recs, samples, trace = [], [], []
    for r in records:
        d = r.to_dict()
        outs = d["extra"].pop("outputs", None)
        if outs:
            for o in outs:
                samples.append({"steering": r.steering, "set": r.metric.split("/", 1)[-1], **o})
        for t in d["extra"].pop("trace", None) or []:
            trace.append({"steering": r.steering, **t})
        recs.append(d)
    return recs, samples, trace


def write_results(records: Sequence[Record], out_dir: str | os.PathLike, meta: Optional[dict] = None,
                  plots: bool = True) -> Path:
    """Write results.json, samples.jsonl, results.md and (``plots``) the PNGs; returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs, samples, trace = _split_outputs(records)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta or {}, "records": recs}, indent=1,
                                                        ensure_ascii=False))
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    if trace:
        atomic_write_text(out / "trace.jsonl", "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in trace))
    atomic_write_text(out / "results.md", results_markdown(records, meta))
    if plots and records:
        plot_metrics(records, out / "metrics.png")
        if len({r.steering for r in records}) > 1:
            plot_tradeoff(records, out / "tradeoff.png")
    return out


def load_results(path: str | os.PathLike) -> tuple[dict, list[Record]]:
    """``(meta, records)`` from a results.json (or the directory holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"no results.json at {p}")
    d = json.loads(p.read_text())
    return d.get("meta", {}), [Record.from_dict(r) for r in d["records"]]


HIGHER_IS_BETTER = {"refusal/harmful": True, "refusal/xstest_unsafe": True, "refusal/harmless": False,
                    "refusal/xstest_safe": False, "truthfulqa/mc1": True, "truthfulqa/mc2": True,
                    "truthfulqa/ab": True, "truthfulqa_gen/true_info": True, "truthfulqa_gen/bleu_acc": True,
                    "truthfulqa_gen/rouge_acc": True, "truthfulqa_gen/info": True, "truthfulqa_gen/bleu_diff": True,
                    "truthfulqa_gen/rouge_diff": True, "utility/mmlu_ab": True, "utility/kl": False, "utility/ppl": False}


def results_markdown(records: Sequence[Record], meta: Optional[dict] = None) -> str:
    """A markdown table of the records (one row per steering x metric)."""
    lines = ["# steerlens evaluation", ""]
    if meta:
        for k in ("model", "split", "seed", "limit", "judge", "data_dir", "started", "total_wall_time_s"):
            if k in meta:
                v = meta[k]["name"] if k == "model" and isinstance(meta[k], dict) else meta[k]
                lines.append(f"- {k}: {v}")
        lines.append("")
    lines += ["| steering | metric | value | 95% CI | n | better | split | wall s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in records:
        hib = HIGHER_IS_BETTER.get(r.metric, None)
        arrow = "" if hib is None else ("higher" if hib else "lower")
        unp = r.extra.get("n_unparseable")
        n = f"{r.n}" + (f" (+{unp} unparseable)" if unp else "")
        lines.append(f"| {r.steering} | {r.metric} | {r.value:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {n} | "
                     f"{arrow} | {r.split} | {r.wall_time_s:.1f} |")
    lines.append("")
    lines.append("Rates are fractions of examples with Wilson 95% intervals; other means (MC2, KL, perplexity) "
                 "have seeded percentile-bootstrap intervals. `degenerate/*` = broken text (empty, repetition "
                 "loops, non-words), counted apart from refusals. `refusal/*` counts refusals and deflections (replies that "
                 "avoid the request without declining); `deflection/*` is the deflections alone.")
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_savefig(fig, path, dpi=110, bbox_inches="tight")


def err_bars(value: float, low: float, high: float) -> list[list[float]]:
    """Matplotlib error bars ``[[below], [above]]`` for an interval, never negative: a bootstrap
    interval computed in float64 can sit a rounding error above a float32 point estimate (all-zero
    KL), and matplotlib refuses a negative bar."""
    return [[max(0.0, value - low)], [max(0.0, high - value)]]


def plot_metrics(records: Sequence[Record], path: str | os.PathLike) -> Path:
    """One panel per metric: a bar per steering configuration with its 95% CI."""
    plt = _plt()
    path = Path(path)
    metrics = list(OrderedDict.fromkeys(r.metric for r in records))
    configs = list(OrderedDict.fromkeys(r.steering for r in records))
    ncol = min(4, len(metrics))
    nrow = (len(metrics) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for i, c in enumerate(configs):
            rs = [r for r in records if r.metric == m and r.steering == c]
            if not rs:
                continue
            r = rs[-1]
            ax.bar(i, r.value, color=f"C{i % 10}", yerr=err_bars(r.value, r.ci_low, r.ci_high), capsize=3)
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels(configs, rotation=30, ha="right", fontsize=7)
        if m.split("/")[0] in ("refusal", "degenerate", "truthfulqa") or m == "utility/mmlu_ab":
            ax.set_ylim(0, 1.05)
        hib = HIGHER_IS_BETTER.get(m)
        ax.set_title(m + ("" if hib is None else (" (↑)" if hib else " (↓)")), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_tradeoff(records: Sequence[Record], path: str | os.PathLike,
                  safety_metric: str = "refusal/harmful",
                  utility_metrics: Sequence[str] = ("refusal/harmless", "utility/mmlu_ab", "utility/kl")) -> Optional[Path]:
    """Scatter of ``safety_metric`` (y) against each available utility metric (x), one point per
    steering configuration, with CI bars on both axes."""
    plt = _plt()
    path = Path(path)
    by = {(r.steering, r.metric): r for r in records}
    configs = list(OrderedDict.fromkeys(r.steering for r in records))
    xs = [m for m in utility_metrics if any((c, m) in by for c in configs)]
    if not any((c, safety_metric) in by for c in configs) or not xs:
        return None
    fig, axes = plt.subplots(1, len(xs), figsize=(3.6 * len(xs), 3.2), squeeze=False)
    for ax, xm in zip(axes.flat, xs):
        for i, c in enumerate(configs):
            if (c, xm) not in by or (c, safety_metric) not in by:
                continue
            x, y = by[(c, xm)], by[(c, safety_metric)]
            ax.errorbar(x.value, y.value, xerr=err_bars(x.value, x.ci_low, x.ci_high),
                        yerr=err_bars(y.value, y.ci_low, y.ci_high), fmt="o", color=f"C{i % 10}",
                        capsize=2, label=c)
        ax.set_xlabel(xm, fontsize=8)
        ax.set_ylabel(safety_metric, fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


PARETO_PANELS = (("refusal/harmless", "refusal/harmful"), ("refusal/xstest_safe", "refusal/harmful"),
                 ("utility/kl", "truthfulqa/mc2"))


def plot_pareto(records: Sequence[Record], path: str | os.PathLike,
                panels: Sequence[tuple[str, str]] = PARETO_PANELS) -> Optional[Path]:
    """Pareto views, one point per configuration with 95% CI bars: harmful refusal against
    over-refusal (Alpaca, XSTest safe), and TruthfulQA MC2 against KL on benign prompts. Panels
    without data are left out; returns ``None`` when none has data."""
    plt = _plt()
    by = {(r.steering, r.metric): r for r in records}
    configs = list(OrderedDict.fromkeys(r.steering for r in records))
    have = [(x, y) for x, y in panels if any((c, x) in by and (c, y) in by for c in configs)]
    if not have:
        return None
    fig, axes = plt.subplots(1, len(have), figsize=(4.0 * len(have), 3.5), squeeze=False)
    for ax, (xm, ym) in zip(axes.flat, have):
        for i, c in enumerate(configs):
            if (c, xm) not in by or (c, ym) not in by:
                continue
            x, y = by[(c, xm)], by[(c, ym)]
            ax.errorbar(x.value, y.value, xerr=err_bars(x.value, x.ci_low, x.ci_high),
                        yerr=err_bars(y.value, y.ci_low, y.ci_high), fmt="o", color=f"C{i % 10}",
                        capsize=2, label=c)
            ax.annotate(c, (x.value, y.value), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xm + (" (lower is better)" if HIGHER_IS_BETTER.get(xm) is False else ""), fontsize=8)
        ax.set_ylabel(ym + (" (higher is better)" if HIGHER_IS_BETTER.get(ym) else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)


def _meta(model, tasks, configs, limit, split, seed, alpha, data_root, judge) -> dict:
    from .data import data_dir
    import steerlens
    from .. import parallel

    try:
        fp = model.fingerprint()
    except Exception as e:  # noqa: BLE001 - keep going, record why
        fp = {"error": repr(e)}
    return {"model": fp, "tasks": list(tasks), "steering": list(configs), "limit": limit, "split": split,
            "seed": seed, "alpha": alpha, "data_dir": str(data_dir(data_root)), "judge": str(judge or "clf"),
            "steerlens_version": steerlens.__version__, "python": platform.python_version(),
            "workers": parallel.world()[1], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_eval(model, tasks: Sequence[str] = ("safety", "truthfulness", "utility"),
             steering_configs: Optional[Mapping[str, Any]] = None, limit: Optional[int] = None,
             out_dir: Optional[str | os.PathLike] = None, *, seed: int = 0, split: str = "test",
             alpha: Optional[float] = None, batch_size: int = 16, data_root=None, judge=None,
             task_kwargs: Optional[Mapping[str, dict]] = None, plots: bool = True,
             progress: bool = True, reuse_unsteered: bool = True) -> list[Record]:
    """Run ``tasks`` for every ``{name: steering}`` configuration (default ``{"none": None}``).

    ``limit`` caps every data set (``None`` = the documented default sizes); ``alpha``
    overrides each steerer's strength; ``task_kwargs`` = extra keyword arguments per task name
    (e.g. ``{"safety": {"max_new_tokens": 64}}``). With ``out_dir`` the results are written
    after every task (see module docstring). Returns all records.

    ``reuse_unsteered`` (default on): the built-in tasks share one :class:`~.reuse.SharedRuns`:
    the unsteered passes are computed once, and rows whose gates are all closed (prompt gates) are
    copied from them instead of being recomputed, as are rows equal to another configuration's
    (the same records as without it: ``tests/test_eval_reuse.py``). ``False`` runs every
    configuration in full (for comparison, ``benchmarks/bench_eval.py``)."""
    configs = dict(steering_configs) if steering_configs else {"none": None}
    tasks = list(tasks)
    for t in tasks:
        get_task(t)
    meta = _meta(model, tasks, configs, limit, split, seed, alpha, data_root, judge)
    records: list[Record] = []
    shared = SharedRuns(model, configs, alpha) if reuse_unsteered else None
    t_start = time.perf_counter()
    task_times: dict[str, float] = {}
    for cname, steering in configs.items():
        for t in tasks:
            kw = dict((task_kwargs or {}).get(t, {}))
            if t in ("safety", "truthfulqa_gen") and judge is not None:
                kw.setdefault("judge", judge)
            t0 = time.perf_counter()
            bs = kw.pop("batch_size", batch_size)  # a task may take its own (scoring pads less in small batches)
            if shared is not None and "shared" in inspect.signature(get_task(t)).parameters:
                kw["shared"] = shared
            records += get_task(t)(model, steering, limit=limit, seed=seed, split=split, batch_size=bs,
                                   alpha=alpha, name=cname, root=data_root, progress=progress, **kw)
            task_times[f"{cname}/{t}"] = round(time.perf_counter() - t0, 2)
            meta["task_wall_time_s"] = task_times
            meta["total_wall_time_s"] = round(time.perf_counter() - t_start, 2)
            if shared is not None:
                meta["reuse"] = dict(shared.stats)
            if out_dir is not None:
                write_results(records, out_dir, meta, plots=False)
    if out_dir is not None:
        write_results(records, out_dir, meta, plots=plots)
    return records


__all__ = ["run_eval", "write_results", "load_results", "results_markdown", "plot_metrics", "plot_tradeoff",
           "plot_pareto",
           "atomic_write_text", "HIGHER_IS_BETTER"]
