"""A model split with an accelerate device_map against the same model on one device: next-token
log-probs, greedy generation and captures, unsteered and under every edit kind; bf16 with a float32
steering vector. Prints (and with --out writes) JSON.

    python scripts/check_device_map.py                          # default model; disk split on CPU,
                                                                # cuda:0 + cpu split when CUDA is there
    python scripts/check_device_map.py --model /models/llama-1b --split cuda-cpu --out runs/dm.json

Splits: ``disk`` (first half of the layers on the reference device, second half offloaded to disk),
``cuda-cpu`` (first half on cuda:0, second half CPU-offloaded: weights in CPU memory, run on cuda:0).
The reference is the unsplit model on cuda:0 (CUDA) or the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

import steerlens
from steerlens import AddVector, FunctionEdit, FunctionGate, capture, generate, next_token_logprobs
from steerlens.fileio import atomic_write_json
from steerlens.hooks import DirectionalAblation, Scale, ZeroAblation

P = ["How do I pick a lock?", "Give me three tips for staying healthy.", "What is the capital of France?",
     "Write a haiku about the sea."]


def edit_kinds(m, v: torch.Tensor, u: torch.Tensor, tau: float) -> dict:
    L = m.n_layers
    mid, late = L // 3, (2 * L) // 3  # an edit in the first half, a gate in the (offloaded) second half
    gate = FunctionGate(f"blocks.{late}.hook_resid_post", lambda a: a @ u.to(a.device, a.dtype), threshold=tau)
    return {
        "none": None,
        "add": [AddVector(f"blocks.{mid}.hook_resid_post", v, 1.5)],
        "add_late": [AddVector(f"blocks.{late}.hook_resid_post", v, 1.5)],
        "gated_downstream": [AddVector(f"blocks.{mid}.hook_resid_post", v, 1.5, gate=gate)],
        "per_token": [FunctionEdit(f"blocks.{late}.hook_resid_mid",
                                   lambda a, info: torch.tanh(a @ u.to(a.device, a.dtype))[..., None] * v.to(a.device, a.dtype),
                                   2.0, positions="current_last")],
        "ablate_heads": [ZeroAblation(f"blocks.{late}.attn.hook_z[0,1]")],
        "scale_neurons": [Scale(f"blocks.{mid}.mlp.hook_post[3,17]", 3.0)],
        "dir_ablate": [DirectionalAblation(f"blocks.{i}.hook_resid_post", u) for i in range(L)],
    }


def compare(a, b, v, u, new_tokens: int) -> dict:
    site = f"blocks.{a.n_layers // 3}.hook_resid_post"
    late = f"blocks.{(2 * a.n_layers) // 3}.hook_resid_post"
    tau = float((capture(a, P, late, "last", progress=False)[late].float() @ u).median())  # gate open on half
    out = {}
    for name, ea in edit_kinds(a, v, u, tau).items():
        eb = edit_kinds(b, v, u, tau)[name]
        la, lb = next_token_logprobs(a, P, ea), next_token_logprobs(b, P, eb)
        ga = generate(a, P, ea, max_new_tokens=new_tokens, progress=False, return_details=True)
        gb = generate(b, P, eb, max_new_tokens=new_tokens, progress=False, return_details=True)
        ca = capture(a, P, [site], "last", edits=ea, progress=False)[site]
        cb = capture(b, P, [site], "last", edits=eb, progress=False)[site]
        out[name] = {"max_abs_logprob_diff": float((la - lb).abs().max()),
                     "same_tokens": sum(x.token_ids == y.token_ids for x, y in zip(ga, gb)), "of": len(P),
                     "same_gates": [x.gates == y.gates for x, y in zip(ga, gb)].count(True),
                     "capture_max_abs_diff": float((ca - cb).abs().max()), "reply0": gb[0].text}
    return out


def split_map(m, kind: str, ref: str) -> dict:
    L = m.n_layers
    far = {"disk": "disk", "cuda-cpu": "cpu"}[kind]
    dm = {"model.embed_tokens": ref, "model.rotary_emb": ref}
    for i in range(L):
        dm[f"model.layers.{i}"] = ref if i < L // 2 else far
    dm.update({"model.norm": far, "lm_head": far})
    if m.hf_model.config.tie_word_embeddings:  # accelerate places a tied weight once: keep both together
        dm["lm_head"] = dm["model.embed_tokens"]
    return dm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or directory (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--split", choices=["disk", "cuda-cpu"], default="cuda-cpu" if torch.cuda.is_available() else "disk")
    ap.add_argument("--new-tokens", type=int, default=12)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.split == "cuda-cpu" and not torch.cuda.is_available():
        print("--split cuda-cpu needs CUDA", file=sys.stderr)
        return 2
    ref = "cuda:0" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    a = steerlens.load_model(args.model, device=ref)
    g = torch.Generator().manual_seed(0)
    site = f"blocks.{a.n_layers // 3}.hook_resid_post"
    acts = capture(a, [(P[0], "I'm sorry, I can't help."), (P[0], "Sure, here is how:")], [site], "response_mean",
                   progress=False)[site]
    v = (acts[0] - acts[1]).float().cpu()
    u = torch.randn(a.d_model, generator=g)
    u = u / u.norm()
    res: dict = {"model": a.name, "reference_device": ref, "split": args.split, "torch": torch.__version__,
                 "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    with tempfile.TemporaryDirectory() as off:
        dm = split_map(a, args.split, ref)
        b = steerlens.load_model(args.model, device_map=dm, offload_folder=off)
        res["devices"] = b.devices
        res["meta_params_in_split_model"] = sum(p.device.type == "meta" for p in b.hf_model.parameters())
        res["fingerprint_equal"] = a.fingerprint() == b.fingerprint()
        res["edits"] = compare(a, b, v, u, args.new_tokens)
        del b
    h = steerlens.load_model(args.model, device=ref, dtype="bf16")
    lh, la = next_token_logprobs(h, P, [AddVector(site, v, 1.5)]), next_token_logprobs(a, P, [AddVector(site, v, 1.5)])
    res["bf16_float32_vector"] = {"dtype": str(h.dtype), "max_abs_logprob_diff_vs_fp32": float((lh - la).abs().max()),
                                  "top1_agree": int((lh.argmax(-1) == la.argmax(-1)).sum()), "of": len(P)}
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))
    if args.out:
        atomic_write_json(args.out, res, indent=1)
    ok = res["fingerprint_equal"] and all(
        e["max_abs_logprob_diff"] == 0.0 and e["capture_max_abs_diff"] == 0.0 and e["same_tokens"] == e["of"]
        and e["same_gates"] == e["of"] for e in res["edits"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
