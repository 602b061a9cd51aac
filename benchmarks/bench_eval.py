"""The main job's evaluation (issue 23, item 3): evaluated items per second with the shared runs
(``run_eval(reuse_unsteered=True)``: the unsteered passes computed once, closed-gate batches copied)
against the full path (``reuse_unsteered=False``), same machine, one run.

The configurations are those of ``steerlens/specs/main.toml`` (unsteered, caa, finesteer, odesteer,
finesteer+odesteer), built from already fitted artifacts (default: the main job's
``runs/demo/artifacts``, loaded read-only with :func:`steerlens.pipeline.load_steerer`), so nothing
is refitted; the tasks, sets and options are the spec's ``[eval]`` table, ``--limit`` per set.

Items = examples evaluated, summed over configurations (a safety prompt, a TruthfulQA question, an
MMLU item, a KL prompt each count once). Written: seconds and items/s of both paths, their ratio,
whether every record (replies, verdicts, gate readings, scores, metrics; not wall times or traces)
is identical between the paths, the reuse counts, and where the time goes (seconds per
configuration and task, both paths).

    python benchmarks/bench_eval.py --out benchmarks/results/eval.json [--limit 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import machine_info

DEFAULT_ARTIFACTS = "/work/main/runs/demo/artifacts"


def _items(records) -> int:
    """Examples evaluated: one per (configuration, set) id (the three safety metrics share theirs)."""
    seen = set()
    for r in records:
        if r.metric.startswith(("degenerate/", "deflection/")) or r.metric == "truthfulqa/mc2":
            continue
        seen.update((r.steering, r.metric, i) for i in r.sample_ids)
    return len(seen)


def _comparable(rec) -> dict:
    d = rec.to_dict()
    d.pop("wall_time_s", None)
    d["extra"].pop("trace", None)
    return d


def _by_config_task(meta: dict) -> dict:
    return dict(meta.get("task_wall_time_s", {}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/eval.json")
    ap.add_argument("--artifacts", default=DEFAULT_ARTIFACTS, help="fitted artifacts of the main spec (read only)")
    ap.add_argument("--limit", type=int, default=None, help="examples per set (default: the spec's)")
    ap.add_argument("--order", choices=("new-first", "old-first"), default="new-first")
    ap.add_argument("--quick", action="store_true", help="--limit 3")
    args = ap.parse_args(argv)
    src = Path(__file__).resolve().parents[1] / "src"
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    import tempfile

    import steerlens
    from steerlens.demo import main_spec
    from steerlens.evals.report import run_eval
    from steerlens.fileio import atomic_write_json
    from steerlens.pipeline.specrun import _eval_settings, _task_kwargs, configurations
    from steerlens.pipeline.steerer import load_steerer

    spec = main_spec()
    ev = _eval_settings(spec)
    limit = 3 if args.quick else (args.limit if args.limit is not None else ev["limit"])
    model = steerlens.load_model()
    fitted = {}
    for st in spec["steerer"] + spec["baseline"]:
        path = Path(args.artifacts) / st["name"]
        if not path.is_dir():
            print(f"no fitted artifact {path}: run the main job first (make demo) or pass --artifacts", file=sys.stderr)
            return 2
        fitted[st["name"]] = load_steerer(path, model)
        fitted[st["name"]].name = st["name"]
    configs = configurations(spec, fitted)
    kw = dict(seed=ev["seed"], split=ev["split"], batch_size=ev["batch_size"], judge=ev["judge"],
              task_kwargs=_task_kwargs(ev, trace=True), plots=False, progress=False)
    runs = {}
    order = [True, False] if args.order == "new-first" else [False, True]
    for reuse in order:
        name = "new" if reuse else "old"
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            recs = run_eval(model, ev["tasks"], configs, limit, tmp, reuse_unsteered=reuse, **kw)
            dt = time.perf_counter() - t0
            meta = json.loads((Path(tmp) / "results.json").read_text())["meta"]
        runs[name] = {"seconds": dt, "records": recs, "meta": meta}
        print(f"{name} path ({'shared runs' if reuse else 'full'}): {dt:.1f}s, {_items(recs)} items", flush=True)
    old, new = runs["old"], runs["new"]
    items = _items(old["records"])
    assert items == _items(new["records"])
    same = [(o.steering, o.metric) for o, n in zip(old["records"], new["records"]) if _comparable(o) != _comparable(n)]
    ips_old, ips_new = items / old["seconds"], items / new["seconds"]
    share = {}
    for name, r in runs.items():
        t = _by_config_task(r["meta"])
        tot = sum(t.values()) or 1.0
        share[name] = {k: {"seconds": v, "share": round(v / tot, 3)} for k, v in sorted(t.items(), key=lambda kv: -kv[1])}
    out = {"benchmark": "eval_main_job", "limit": limit, "configs": list(configs), "tasks": ev["tasks"],
           "items": items, "order": args.order,
           "old": {"seconds": round(old["seconds"], 1), "items_per_s": ips_old},
           "new": {"seconds": round(new["seconds"], 1), "items_per_s": ips_new},
           "ratio_items_per_s_new_over_old": ips_new / ips_old,
           "records_identical": not same, "records_differing": same[:20],
           "reuse": new["meta"].get("reuse"),
           "seconds_by_config_task": share,
           "machine": machine_info(), "loadavg_end": os.getloadavg()}
    p = atomic_write_json(args.out, out, indent=1)
    print(f"wrote {p}: {items} items, old {old['seconds']:.1f}s, new {new['seconds']:.1f}s, "
          f"ratio {out['ratio_items_per_s_new_over_old']:.2f}x, records identical: {not same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
