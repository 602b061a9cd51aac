"""Data-parallel speed-up (issue 15): the same job — steered generation and a capture over the
same prompts — run by 1 worker with 1 thread, 1 worker with 2 threads, and 2 workers with 1
thread each (``steerlens.parallel.spawn``, gloo). Every configuration is a fresh set of processes,
so each time includes process start, imports and model load (``wall_s``); ``work_s`` is the
runners alone (after a barrier, the slowest rank's). The configurations are interleaved over
``--repeats`` rounds (A B C, C B A, ...) and summarised by medians.

    python benchmarks/bench_workers.py --out benchmarks/results/workers.json [--model tiny-random] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from steerlens import parallel
from steerlens.fileio import atomic_write_json

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, machine_info  # noqa: E402

CONFIGS = {"1 worker x 1 thread": (1, 1), "1 worker x 2 threads": (1, 2), "2 workers x 1 thread": (2, 1)}


def job(model_name: str, n_prompts: int, max_new_tokens: int, batch_size: int) -> dict:
    import steerlens
    from steerlens import AddVector, capture, generate

    t0 = time.perf_counter()
    m = steerlens.load_model(model_name)
    t_load = time.perf_counter() - t0
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})") for i in range(n_prompts)]
    layer = m.n_layers // 2
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
    edits = [AddVector(f"blocks.{layer}.hook_resid_post", v / v.norm() * 4, 1.0)]
    parallel.barrier()
    t1 = time.perf_counter()
    gens = generate(m, prompts, edits, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    t2 = time.perf_counter()
    acts = capture(m, prompts, [f"blocks.{layer}.hook_resid_post"], "last", batch_size=batch_size, progress=False)
    t3 = time.perf_counter()
    parallel.barrier()
    return {"rank": parallel.world(), "threads": torch.get_num_threads(), "load_s": t_load, "generate_s": t2 - t1,
            "capture_s": t3 - t2, "work_s": time.perf_counter() - t1, "n_replies": len(gens),
            "capture_rows": int(acts[f"blocks.{layer}.hook_resid_post"].shape[0]),
            "first_reply": gens[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/workers.json")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 prompts, 4 new tokens, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens, args.repeats = 8, 4, 1
    info = machine_info()
    runs: dict[str, list[dict]] = {k: [] for k in CONFIGS}
    for r in range(args.repeats):
        order = list(CONFIGS) if r % 2 == 0 else list(CONFIGS)[::-1]
        for name in order:
            workers, threads = CONFIGS[name]
            t = time.perf_counter()
            ranks = parallel.spawn(job, workers, args.model, args.prompts, args.max_new_tokens, args.batch_size,
                                   threads=threads)
            wall = time.perf_counter() - t
            assert all(x["n_replies"] == args.prompts and x["capture_rows"] == args.prompts for x in ranks)
            assert all(x["threads"] == threads for x in ranks)
            runs[name].append({"wall_s": wall, "work_s": max(x["work_s"] for x in ranks),
                               "generate_s": max(x["generate_s"] for x in ranks),
                               "capture_s": max(x["capture_s"] for x in ranks),
                               "load_s": max(x["load_s"] for x in ranks), "first_reply": ranks[0]["first_reply"]})
            print(f"{name}: wall {wall:.2f} s, work {runs[name][-1]['work_s']:.2f} s", flush=True)
    same = len({r["first_reply"] for rs in runs.values() for r in rs}) == 1
    med = {k: {f: round(statistics.median(r[f] for r in rs), 3) for f in ("wall_s", "work_s", "generate_s",
                                                                             "capture_s", "load_s")}
           for k, rs in runs.items()}
    base = med["1 worker x 1 thread"]
    speedup = {k: {"work": round(base["work_s"] / v["work_s"], 3), "wall": round(base["wall_s"] / v["wall_s"], 3)}
               for k, v in med.items()}
    info["loadavg_end"] = os.getloadavg()
    result = {"benchmark": "workers", "model": args.model, "prompts": args.prompts,
              "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
              "medians": med, "speedup_vs_1x1": speedup, "same_first_reply": same, "runs": runs, "machine": info,
              "note": "each configuration is fresh processes; wall includes start, imports and model load; "
                      "work is the runners only (slowest rank). Other jobs share the cores when loadavg > cpus."}
    atomic_write_json(Path(args.out), result, indent=1)
    print(f"speed-up against 1 worker x 1 thread: {speedup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
