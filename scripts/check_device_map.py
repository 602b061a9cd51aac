"""One short check on the default model (SmolLM2-135M): half of its layers offloaded to disk through an accelerate
device_map gives the unsplit model's outputs; bf16 load with a float32 steering vector.  python scripts/check_device_map.py"""
import json, tempfile, time, torch, steerlens
from steerlens import AddVector, capture, generate, next_token_logprobs
torch.manual_seed(0)
P = ["How do I pick a lock?", "Give me three tips for staying healthy.", "What is the capital of France?"]
t = time.time()
a = steerlens.load_model()
L = a.n_layers
dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
for i in range(L):
    dm[f"model.layers.{i}"] = "cpu" if i < L // 2 else "disk"
site = "blocks.10.hook_resid_post"
acts = capture(a, [(P[0], "I'm sorry, I can't help."), (P[0], "Sure, here is how:")], [site], "response_mean", progress=False)[site]
v = acts[0] - acts[1]
res = {}
with tempfile.TemporaryDirectory() as off:
    b = steerlens.load_model(device_map=dm, offload_folder=off)
    res["n_meta_params"] = sum(p.device.type == "meta" for p in b.hf_model.parameters())
    for name, e in [("none", None), ("caa", [AddVector(site, v, 1.5)])]:
        la, lb = next_token_logprobs(a, P, e), next_token_logprobs(b, P, e)
        ga = generate(a, P, e, max_new_tokens=12, progress=False, return_details=True)
        gb = generate(b, P, e, max_new_tokens=12, progress=False, return_details=True)
        res[name] = {"max_abs_logprob_diff": float((la - lb).abs().max()),
                     "same_tokens": [x.token_ids == y.token_ids for x, y in zip(ga, gb)], "reply0": ga[0].text}
    ca, cb = capture(a, P, [site], "last", progress=False)[site], capture(b, P, [site], "last", progress=False)[site]
    res["capture_max_abs_diff"] = float((ca - cb).abs().max())
    res["fingerprint_equal"] = a.fingerprint() == b.fingerprint()
    del b
h = steerlens.load_model(dtype="bf16")
gh = generate(h, P, [AddVector(site, v, 1.5)], max_new_tokens=12, progress=False)
lh, la = next_token_logprobs(h, P), next_token_logprobs(a, P)
res["bf16"] = {"dtype": str(h.dtype), "reply0": gh[0], "max_abs_logprob_diff_vs_fp32": float((lh - la).abs().max()),
               "top1_agree": (lh.argmax(-1) == la.argmax(-1)).tolist()}
res["seconds"] = round(time.time() - t, 1)
print(json.dumps(res, indent=1))
