"""Foundation benchmarks on the default model: capture vs a plain forward pass, steered vs
unsteered generation, peak memory. Ratios are measured in one run, with the compared variants
interleaved (A, B, A, B, ...) and summarised by their medians, so machine load hits both alike.

    python benchmarks/bench_hooks.py --out benchmarks/results/hooks.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import steerlens
from steerlens import AddVector, capture, generate
from steerlens.fileio import atomic_write_json
from steerlens.hooks import iter_batches

from common import PROMPTS, interleaved, machine_info, medians, plain_hf, plain_hf_generate

def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def bench_capture(model, n_inputs: int, batch_size: int, repeats: int) -> dict:
    prompts = (PROMPTS * (n_inputs // len(PROMPTS) + 1))[:n_inputs]
    batches = list(iter_batches(model, prompts, batch_size))
    hf = model.hf_model

    @torch.no_grad()
    def plain():
        for b in batches:
            # logits for the last position only, as capture computes (hooks are the only difference)
            hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
               use_cache=False, logits_to_keep=1)

    all_sites = [f"blocks.{l}.hook_resid_post" for l in range(model.n_layers)] + [
        f"blocks.{l}.attn.hook_z" for l in range(model.n_layers)]
    fns = {
        "plain_forward": plain,
        "capture_all_layers_resid_and_heads": lambda: capture(model, prompts, all_sites, batch_size=batch_size, progress=False),
        "capture_last_layer_resid": lambda: capture(model, prompts, [f"blocks.{model.n_layers - 1}.hook_resid_post"], batch_size=batch_size, progress=False),
        "capture_layer10_resid": lambda: capture(model, prompts, ["blocks.10.hook_resid_post"], batch_size=batch_size, progress=False),
    }
    for fn in fns.values():  # warm-up
        fn()
    times = interleaved(fns, repeats)
    med = medians(times)
    return {
        "n_inputs": n_inputs, "batch_size": batch_size, "repeats": repeats,
        "seconds_median": med, "seconds_all": times,
        "inputs_per_s": {k: n_inputs / v for k, v in med.items()},
        "throughput_ratio_vs_plain_forward": {k: med["plain_forward"] / v for k, v in med.items() if k != "plain_forward"},
        "goal": "capture throughput >= 0.9x a plain forward pass",
    }


def bench_generate(model, batch_sizes: list[int], new_tokens: int, repeats: int) -> dict:
    """Generation tokens/s: plain HF, steerlens unsteered, a constant residual edit, a per-token
    activation-dependent edit of similar arithmetic (a dot product, a sigmoid and a scaled add per
    token), and both edits with the per-token trace on. Variants interleaved, medians compared."""
    from steerlens import FunctionEdit

    acts = capture(model, ["Tell me about Paris.", "Tell me about the ocean."], ["blocks.10.hook_resid_post"],
                   progress=False)
    v = (acts["blocks.10.hook_resid_post"][1] - acts["blocks.10.hook_resid_post"][0]) * 1e-3  # tiny: same lengths
    u = v / v.norm()
    const = [AddVector("blocks.10.hook_resid_post", v, 1.0)]
    per_token = [FunctionEdit("blocks.10.hook_resid_post",
                              lambda act, info: v * torch.sigmoid(act @ u)[..., None], 1.0)]
    hf = plain_hf(model)
    out = {}
    for bs in batch_sizes:
        prompts = PROMPTS[:bs]

        def run(edits, trace=False):
            texts = generate(model, prompts, edits, max_new_tokens=new_tokens, batch_size=bs, progress=False,
                             return_details=True, trace=trace)
            return sum(len(t.token_ids) for t in texts)

        plain = plain_hf_generate(hf, model, prompts, new_tokens)
        counts: dict = {}
        variants = {
            "plain_hf": plain,
            "unsteered": lambda: run(None),
            "constant_edit": lambda: run(const),
            "per_token_edit": lambda: run(per_token),
            "constant_edit_traced": lambda: run(const, True),
            "per_token_edit_traced": lambda: run(per_token, True),
        }
        fns = {k: (lambda k=k, f=f: counts.__setitem__(k, f())) for k, f in variants.items()}
        for fn in fns.values():
            fn()
        times = interleaved(fns, repeats)
        med = medians(times)
        # tokens/s counts the generated tokens in the batch (up to EOS; padding after EOS not counted)
        tps = {k: counts[k] / med[k] for k in med}
        out[f"batch_{bs}"] = {
            "new_tokens_cap": new_tokens, "tokens_generated": counts, "seconds_median": med,
            "tokens_per_s": tps,
            "steered_over_unsteered_tokens_per_s": {k: tps[k] / tps["unsteered"] for k in tps
                                                     if k not in ("unsteered", "plain_hf")},
            "over_plain_hf_tokens_per_s": {k: tps[k] / tps["plain_hf"] for k in tps if k != "plain_hf"},
        }
    out["goal"] = ("steered >= 0.95x unsteered tokens/s for a constant and a per-token edit (issue 9); "
                   ">= 0.95x plain HF (issue 16)")
    return out


def bench_memory(model, n_inputs: int) -> dict:
    prompts = (PROMPTS * (n_inputs // len(PROMPTS) + 1))[:n_inputs]
    sites = [f"blocks.{l}.attn.hook_z" for l in range(model.n_layers)]
    res = {"n_inputs": n_inputs, "sites": "hook_z, all 270 heads"}
    reset_peak_rss()
    base = peak_rss_mb()
    acts = capture(model, prompts, sites, batch_size=16, progress=False)
    res["in_memory_peak_rss_mb"] = peak_rss_mb()
    res["in_memory_result_mb"] = sum(t.numel() * t.element_size() for t in acts.values()) / 2**20
    del acts
    reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        capture(model, prompts, sites, batch_size=16, progress=False, out_dir=Path(tmp) / "acts", shard_size=64)
        res["streamed_peak_rss_mb"] = peak_rss_mb()
    res["rss_before_mb"] = base
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/hooks.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--capture-inputs", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--memory-inputs", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.capture_inputs, args.new_tokens, args.memory_inputs = 1, 16, 8, 32
    t0 = time.time()
    model = steerlens.load_model()
    result = {
        "benchmark": "hooks",
        "machine": machine_info(),
        "model": model.name,
        "capture": bench_capture(model, args.capture_inputs, 16, args.repeats),
        "generate": bench_generate(model, [1, 8], args.new_tokens, args.repeats),
        "memory": bench_memory(model, args.memory_inputs),
    }
    result["wall_s"] = time.time() - t0
    atomic_write_json(args.out, result, indent=2)
    print(json.dumps({"capture_ratio": result["capture"]["throughput_ratio_vs_plain_forward"],
                      "generate_ratio_vs_unsteered": {k: v["steered_over_unsteered_tokens_per_s"]
                                                      for k, v in result["generate"].items() if isinstance(v, dict)},
                      "generate_ratio_vs_plain_hf": {k: v["over_plain_hf_tokens_per_s"]
                                                     for k, v in result["generate"].items() if isinstance(v, dict)},
                      "memory": result["memory"], "wall_s": result["wall_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
