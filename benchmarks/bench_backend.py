"""steerlens against plain Hugging Face (issue 16): both hook backends, in one process.

The outside reference is what a user would otherwise run: ``AutoModelForCausalLM`` on the cached
default model with its default attention (SDPA). Measured, with variants interleaved (A B, B A, …)
and medians of ``--repeats``; every figure is a ratio ``steerlens / plain`` of throughput:

- generation tokens/s (greedy, up to ``--new-tokens``, counted up to EOS) at batch 1 and batch 8:
  unsteered, a constant residual edit, a per-input edit (one vector per prompt), a per-token
  activation-dependent edit, and a head edit (``attn.hook_z``), on the native backend; unsteered and
  the constant edit on the bridge backend;
- capture of all 30 layers' ``hook_resid_post`` (last prompt token) against a plain forward with
  ``output_hidden_states=True``;
- MC-style log-likelihood scoring of (prompt, answer) pairs against a plain forward + log-softmax;
- load time of a cached default model (fresh process, after import), both backends;
- peak memory of one forward pass over a 2,048-token prompt (fresh process each): plain HF with
  SDPA and with eager attention, steerlens native, steerlens bridge.

    python benchmarks/bench_backend.py --out benchmarks/results/backend.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import steerlens
from steerlens import AddVector, FunctionEdit, Scale, capture, generate, response_logprobs
from steerlens.fileio import atomic_write_json
from steerlens.hooks import iter_batches

from common import PROMPTS, interleaved, machine_info, medians, plain_hf, plain_hf_generate

ANSWERS = [" Eat vegetables, sleep well and move every day.", " Red, yellow and blue.",
           " A nucleus of protons and neutrons, with electrons around it.", " Plant trees and drive less.",
           " Air scatters blue light more than red light.", " Once, a robot picked up a brush.",
           " Canberra, a compromise between Sydney and Melbourne.", " Two young lovers die because of a feud."]


def _edit_sets(model, n_prompts: int) -> dict:
    acts = capture(model, ["Tell me about Paris.", "Tell me about the ocean."], ["blocks.10.hook_resid_post"],
                   progress=False)["blocks.10.hook_resid_post"]
    v = (acts[1] - acts[0]) * 1e-3
    u = v / v.norm()
    g = torch.Generator().manual_seed(0)
    per_input = v[None] * (1 + torch.rand(n_prompts, 1, generator=g))
    return {
        "constant_edit": [AddVector("blocks.10.hook_resid_post", v)],
        "per_input_edit": [AddVector("blocks.10.hook_resid_post", per_input)],
        "per_token_edit": [FunctionEdit("blocks.10.hook_resid_post",
                                        lambda act, info: v * torch.sigmoid(act @ u)[..., None])],
        "head_edit": [Scale("blocks.10.attn.hook_z[0,4]", 0.9)],
    }


def bench_generation(native, bridge, hf, new_tokens: int, repeats: int, batch_sizes) -> dict:
    out = {}
    for bs in batch_sizes:
        prompts = PROMPTS[:max(bs, 2)]
        counts: dict = {}
        nat_edits, br_edits = _edit_sets(native, len(prompts)), _edit_sets(bridge, len(prompts))

        def run(model, edits):
            gens = generate(model, prompts, edits, max_new_tokens=new_tokens, batch_size=bs, progress=False,
                            return_details=True)
            return sum(len(x.token_ids) for x in gens)

        variants = {"plain_hf": plain_hf_generate(hf, native, prompts, new_tokens, batch_size=bs),
                    "native_unsteered": lambda: run(native, None)}
        for k in nat_edits:
            variants[f"native_{k}"] = (lambda k=k: run(native, nat_edits[k]))
        variants["bridge_unsteered"] = lambda: run(bridge, None)
        variants["bridge_constant_edit"] = lambda: run(bridge, br_edits["constant_edit"])
        fns = {k: (lambda k=k, f=f: counts.__setitem__(k, f())) for k, f in variants.items()}
        for fn in fns.values():  # warm-up
            fn()
        med = medians(interleaved(fns, repeats))
        tps = {k: counts[k] / med[k] for k in med}
        out[f"batch_{bs}"] = {"prompts": len(prompts), "tokens_generated": counts, "seconds_median": med,
                              "tokens_per_s": tps,
                              "over_plain_hf": {k: tps[k] / tps["plain_hf"] for k in tps if k != "plain_hf"}}
    return out


def bench_capture(native, bridge, hf, n_inputs: int, repeats: int) -> dict:
    prompts = (PROMPTS * (n_inputs // len(PROMPTS) + 1))[:n_inputs]
    sites = [f"blocks.{l}.hook_resid_post" for l in range(native.n_layers)]
    batches = list(iter_batches(native, prompts, 16))

    @torch.no_grad()
    def plain():  # what a user writes without steerlens: every hidden state, then the last prompt token
        for b in batches:
            hs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                    use_cache=False, output_hidden_states=True, logits_to_keep=1).hidden_states
            ar = torch.arange(b.size)
            [h[ar, b.prompt_last].clone() for h in hs[1:]]

    fns = {"plain_hf": plain,
           "native": lambda: capture(native, prompts, sites, batch_size=16, progress=False),
           "bridge": lambda: capture(bridge, prompts, sites, batch_size=16, progress=False)}
    for fn in fns.values():
        fn()
    med = medians(interleaved(fns, repeats))
    # the last layer's hidden state in HF's output has the final norm applied; compare one layer below
    a = capture(native, prompts[:4], sites[:-1], progress=False)
    b = list(iter_batches(native, prompts[:4], 4))[0]
    with torch.no_grad():
        hs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                use_cache=False, output_hidden_states=True).hidden_states
    inv = torch.argsort(b.rows)
    diff = max(float((hs[l + 1][torch.arange(4), b.prompt_last][inv] - a[s]).abs().max())
               for l, s in enumerate(sites[:-1]))
    return {"n_inputs": n_inputs, "sites": "hook_resid_post x 30 layers, last prompt token", "batch_size": 16,
            "seconds_median": med, "over_plain_hf": {k: med["plain_hf"] / med[k] for k in med if k != "plain_hf"},
            "max_abs_diff_native_vs_plain_hidden_states": diff}


def bench_scoring(native, bridge, hf, repeats: int) -> dict:
    pairs = list(zip(PROMPTS[:8], ANSWERS)) * 4
    batches = list(iter_batches(native, pairs, 8))

    @torch.no_grad()
    def plain():
        for b in batches:
            logits = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                        use_cache=False).logits
            mask = b.response_mask[:, 1:]
            torch.log_softmax(logits[:, :-1][mask].float(), -1).gather(-1, b.input_ids[:, 1:][mask][:, None])

    fns = {"plain_hf": plain,
           "native": lambda: response_logprobs(native, pairs, batch_size=8),
           "bridge": lambda: response_logprobs(bridge, pairs, batch_size=8)}
    for fn in fns.values():
        fn()
    med = medians(interleaved(fns, repeats))
    return {"n_pairs": len(pairs), "batch_size": 8, "seconds_median": med,
            "over_plain_hf": {k: med["plain_hf"] / med[k] for k in med if k != "plain_hf"}}


_LOAD = """
import time, json, sys
t0 = time.perf_counter(); import steerlens; t1 = time.perf_counter()
m = steerlens.load_model(backend=sys.argv[1]); t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1}))
"""

_MEM = """
import json, sys, torch
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024
which = sys.argv[1]
if which.startswith("plain"):
    from transformers import AutoModelForCausalLM
    from steerlens.models import default_model_dir
    m = AutoModelForCausalLM.from_pretrained(str(default_model_dir()), dtype=torch.float32,
                                             attn_implementation=which.split("_")[1]).eval()
    fwd = lambda ids: m(input_ids=ids, use_cache=False, logits_to_keep=1)
else:
    import steerlens
    sm = steerlens.load_model(backend=which)
    fwd = lambda ids: sm.hf_model(input_ids=ids, use_cache=False, logits_to_keep=1)
ids = torch.randint(100, 20000, (1, 2048))
with torch.no_grad():
    fwd(ids[:, :8])
    base = rss()
    open("/proc/self/clear_refs", "w").write("5")
    fwd(ids)
print(json.dumps({"peak_rss_mb": rss(), "rss_before_mb": base, "forward_extra_mb": rss() - base}))
"""


def _subprocess_json(code: str, arg: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip()[-500:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_load(repeats: int) -> dict:
    out = {}
    for backend in ("native", "bridge"):
        runs = [_subprocess_json(_LOAD, backend) for _ in range(repeats)]
        out[backend] = {"load_s_median": sorted(r["load_s"] for r in runs)[len(runs) // 2],
                        "import_s_median": sorted(r["import_s"] for r in runs)[len(runs) // 2], "runs": runs}
    out["goal"] = "cached default model loads in <= 2 s"
    return out


def bench_memory() -> dict:
    out = {k: _subprocess_json(_MEM, k) for k in ("plain_sdpa", "plain_eager", "native", "bridge")}
    out["prompt_tokens"] = 2048
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/backend.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    rep = 1 if args.quick else args.repeats
    res: dict = {"machine": machine_info(), "reference": "AutoModelForCausalLM, default attention (sdpa)"}
    t = time.perf_counter()
    res["load"] = bench_load(1 if args.quick else 3)
    res["memory_2048_token_forward"] = bench_memory()
    native = steerlens.load_model(backend="native")
    bridge = steerlens.load_model(backend="bridge")
    hf = plain_hf(native)
    res["generation"] = bench_generation(native, bridge, hf, 8 if args.quick else args.new_tokens, rep,
                                         [1, 8])
    res["capture"] = bench_capture(native, bridge, hf, 16 if args.quick else 64, rep)
    res["scoring"] = bench_scoring(native, bridge, hf, rep)
    res["goal"] = ">= 0.95x plain HF for generation (constant, per-input, per-token, head edits), capture and scoring"
    res["seconds"] = time.perf_counter() - t
    atomic_write_json(Path(args.out), res)
    print(json.dumps({k: res[k] for k in ("load",)}, indent=1)[:2000])
    for k in ("generation",):
        for b, v in res[k].items():
            print(k, b, {n: round(x, 3) for n, x in v["over_plain_hf"].items()})
    print("capture", {n: round(x, 3) for n, x in res["capture"]["over_plain_hf"].items()})
    print("scoring", {n: round(x, 3) for n, x in res["scoring"]["over_plain_hf"].items()})
    print("memory", json.dumps(res["memory_2048_token_forward"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
