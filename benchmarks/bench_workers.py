"""Data-parallel speed-up (issue 15): the same job — steered generation and a capture over the
same prompts — run by 1 worker with 1 thread, 1 worker with 2 threads, and 2 workers with 1
thread each (``steerlens.parallel.spawn``, gloo). Every configuration is a fresh set of processes,
so each time includes process start, imports and model load (``wall_s``); ``work_s`` is the
runners alone (after a barrier, the slowest rank's). The configurations are interleaved over
``--repeats`` rounds (A B C, C B A, ...) and summarised by medians. The reference is plain
Hugging Face ``generate`` (``AutoModelForCausalLM``, default attention) in one process with 2
threads on the same prompts and batches: generation tokens/s of each configuration over it.

    python benchmarks/bench_workers.py --out benchmarks/results/workers.json [--model tiny-random] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from steerlens import parallel
from steerlens.fileio import atomic_write_json

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, interleaved, machine_info, medians, plain_hf, plain_hf_generate  # noqa: E402

CONFIGS = {"1 worker x 1 thread": (1, 1), "1 worker x 2 threads": (1, 2), "2 workers x 1 thread": (2, 1),
           "plain HF x 2 threads": (1, 2)}  # the reference: AutoModelForCausalLM.generate, no capture
PLAIN = "plain HF x 2 threads"


def job(model_name: str, n_prompts: int, max_new_tokens: int, batch_size: int, plain: bool) -> dict:
    import steerlens
    from steerlens import AddVector, capture, generate

    t0 = time.perf_counter()
    m = steerlens.load_model(model_name)
    t_load = time.perf_counter() - t0
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})") for i in range(n_prompts)]
    layer = m.n_layers // 2
    site = f"blocks.{layer}.hook_resid_post"
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
    if plain and m.name != "smollm2-135m-instruct":  # plain_hf() loads the default model's weights
        raise SystemExit(f"the plain HF reference needs the default model, not {m.name}")
    hf_run = plain_hf_generate(plain_hf(m), m, prompts, max_new_tokens, batch_size) if plain else None
    parallel.barrier()
    t1 = time.perf_counter()
    if plain:
        tokens, first, rows = hf_run(), None, n_prompts
    else:
        gens = generate(m, prompts, [AddVector(site, v / v.norm() * 4, 1.0)], max_new_tokens=max_new_tokens,
                        batch_size=batch_size, progress=False, return_details=True)
        tokens, first = sum(len(g.token_ids) for g in gens), gens[0].text  # counted as plain HF counts: to EOS
    t2 = time.perf_counter()
    if not plain:
        rows = int(capture(m, prompts, [site], "last", batch_size=batch_size, progress=False)[site].shape[0])
    t3 = time.perf_counter()
    parallel.barrier()
    return {"threads": torch.get_num_threads(), "load_s": t_load, "generate_s": t2 - t1, "capture_s": t3 - t2,
            "work_s": time.perf_counter() - t1, "tokens": tokens, "rows": rows, "first_reply": first}


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

    def config(name: str):
        def fn():
            workers, threads = CONFIGS[name]
            ranks = parallel.spawn(job, workers, args.model, args.prompts, args.max_new_tokens, args.batch_size,
                                   name == PLAIN, threads=threads)
            assert all(x["rows"] == args.prompts and x["threads"] == threads for x in ranks)
            slowest = {f: max(x[f] for x in ranks) for f in ("work_s", "generate_s", "capture_s", "load_s")}
            runs[name].append({**slowest, "tokens_per_s": ranks[0]["tokens"] / slowest["generate_s"],
                               "first_reply": ranks[0]["first_reply"]})
            print(f"{name}: work {slowest['work_s']:.2f} s", flush=True)
        return fn

    walls = interleaved({k: config(k) for k in CONFIGS}, args.repeats)  # fresh processes: start + load + work
    for k, ws in walls.items():
        for r, w in zip(runs[k], ws):
            r["wall_s"] = w
    fields = ("wall_s", "work_s", "generate_s", "capture_s", "load_s", "tokens_per_s")
    med = {k: {f: round(v, 3) for f, v in medians({f: [r[f] for r in rs] for f in fields}).items()}
           for k, rs in runs.items()}
    base = med["1 worker x 1 thread"]
    speedup = {k: {"work": round(base["work_s"] / v["work_s"], 3), "wall": round(base["wall_s"] / v["wall_s"], 3)}
               for k, v in med.items() if k != PLAIN}
    over_plain = {k: round(v["tokens_per_s"] / med[PLAIN]["tokens_per_s"], 3) for k, v in med.items() if k != PLAIN}
    info["loadavg_end"] = os.getloadavg()
    result = {"benchmark": "workers", "model": args.model, "prompts": args.prompts,
              "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
              "medians": med, "speedup_vs_1x1": speedup, "generation_tokens_per_s_over_plain_hf": over_plain,
              "same_first_reply": len({r["first_reply"] for k, rs in runs.items() if k != PLAIN for r in rs}) == 1,
              "runs": runs, "machine": info,
              "note": "each configuration is fresh processes; wall includes start, imports and model load; "
                      "work is the runners only (slowest rank); the plain HF reference generates the same prompts "
                      "in the same batches, unsteered, with no capture. Other jobs share the cores when "
                      "loadavg > cpus."}
    atomic_write_json(Path(args.out), result, indent=1)
    print(f"speed-up against 1 worker x 1 thread: {speedup}")
    print(f"generation tokens/s over plain HF (2 threads): {over_plain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
