"""Head effect maps: attribution patching (all heads, one forward + backward) vs exact patching.

On the default model (30 layers x 9 heads = 270 heads) with the safety metric (log-probability
of a refusal opening — "I'm sorry" / "I cannot" / "I can't" — after 64 harmful requests of the
``val`` split, 192 scored items), mean-ablation of each head's ``hook_z`` at every token:

- attribution: :func:`steerlens.interp.attribution_patching`, every head at once (goal: <= 120 s
  on 2 cores);
- exact: :func:`steerlens.interp.exact_patching` on ``--exact-heads`` heads, extrapolated to all
  270 (reported as extrapolated);
- interleaved (attribution, exact, attribution), medians; wall time and the process's CPU time
  (``time.process_time``: what the work costs, whatever else the machine runs), torch threads and
  the load average. On a shared machine the wall time depends on the other jobs; with one thread,
  the CPU time is the wall time the work would take on one free core (an upper bound for two).

    OMP_NUM_THREADS=1 python benchmarks/bench_patch.py --out benchmarks/results/patch.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/patch.json")
    ap.add_argument("--task", default="safety", choices=("safety", "truthfulness"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--exact-heads", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="attribution runs (interleaved around the exact run)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny model, 8 prompts")
    args = ap.parse_args(argv)

    import steerlens
    from steerlens.fileio import atomic_write_json
    from steerlens.interp import attribution_patching, exact_patching, task_metric

    if args.quick:
        args.model, args.n = "tiny-random", 8
    torch.set_num_threads(args.threads)
    model = steerlens.load_model(args.model)
    kw = {"max_true": 2, "max_false": 2} if args.task == "truthfulness" else {}
    metric = task_metric(args.task, "val", args.n, 0, **kw)
    load0 = os.getloadavg()
    attr_s, exact_s, attr_cpu, exact_cpu = [], [], [], []
    heads = [(model.n_layers // 2, 0), (model.n_layers - 1, model.n_heads - 1), (0, 1)][:args.exact_heads]
    em = means = None
    for i in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        em, means = attribution_patching(model, metric, batch_size=args.batch_size)
        attr_s.append(time.perf_counter() - t0)
        attr_cpu.append(time.process_time() - c0)
        print(f"attribution: {attr_s[-1]:.1f}s wall, {attr_cpu[-1]:.1f}s CPU", flush=True)
        if i == 0:
            t0, c0 = time.perf_counter(), time.process_time()
            ex = exact_patching(model, metric, heads, means=means, base=em.base, batch_size=args.batch_size)
            exact_s.append((time.perf_counter() - t0) / len(heads))
            exact_cpu.append((time.process_time() - c0) / len(heads))
            print(f"exact: {exact_s[-1]:.1f}s wall, {exact_cpu[-1]:.1f}s CPU per head", flush=True)
    n_heads = model.n_layers * model.n_heads
    attr = statistics.median(attr_s)
    per_head = statistics.median(exact_s)
    result = {
        "benchmark": "patch", "task": args.task, "metric": metric.name, "model": model.name,
        "n_examples": len(metric), "n_items": len(metric.items), "n_heads": n_heads, "mode": "mean",
        "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "machine": platform.platform(), "quick": args.quick,
        "attribution_seconds": attr_s, "attribution_median_s": attr,
        "attribution_cpu_seconds": attr_cpu, "attribution_cpu_median_s": statistics.median(attr_cpu),
        "exact_seconds_per_head": exact_s, "exact_cpu_seconds_per_head": exact_cpu, "exact_heads_timed": len(heads),
        "exact_all_heads_s_extrapolated": per_head * n_heads,
        "exact_all_heads_cpu_s_extrapolated": statistics.median(exact_cpu) * n_heads,
        "speedup_attribution_vs_exact": per_head * n_heads / attr,
        "goal_s": 120.0, "goal_met_wall": attr <= 120.0,
        "goal_met_cpu": statistics.median(attr_cpu) <= 120.0,
        "exact_vs_attribution_on_timed_heads": [
            {"head": f"L{l}H{h}", "exact": float(ex.mean()[l, h]), "attribution": float(em.mean()[l, h])}  # type: ignore[union-attr]
            for l, h in heads],
    }
    atomic_write_json(Path(args.out), result)
    print(f"attribution {attr:.1f}s for {n_heads} heads x {len(metric)} prompts; exact {per_head:.1f}s/head "
          f"(~{per_head * n_heads:.0f}s for all); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
