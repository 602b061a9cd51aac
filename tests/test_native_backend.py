"""The native backend (plain Hugging Face model, virtual hook points) against the TransformerLens
bridge: the same values read and the same outputs under every kind of edit, at every hook name
steerlens supports, with left padding."""

import zlib

import pytest
import torch

import steerlens
from steerlens.hooks import (AddVector, DirectionalAblation, EditError, Scale, ZeroAblation, capture, generate,
                             next_token_logprobs, response_logprobs)
from steerlens.hooks.runtime import attach, count_hooks
from steerlens.hooks.sites import SUPPORTED_HOOKS, parse_site

P = ["Hi", "What is the capital of France? Answer in one word please.", "2+2?",
     "Write a very short poem about the sea and the moon"]
SITES = ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post", "blocks.1.hook_attn_out",
         "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z", "blocks.1.attn.hook_q", "blocks.1.attn.hook_k",
         "blocks.1.attn.hook_v", "blocks.1.attn.hook_pattern", "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post"]


@pytest.fixture(scope="module")
def pair():
    native = steerlens.load_model("tiny-random", seed=0, backend="native")
    bridge = steerlens.load_model("tiny-random", seed=0, backend="bridge")
    return native, bridge


def test_backends_and_names(pair):
    native, bridge = pair
    assert native.backend == "native" and bridge.backend == "bridge"
    assert native.hf_model.config._attn_implementation != "eager"  # the model keeps its own kernel
    assert native.fingerprint() == bridge.fingerprint()  # artifacts move between backends
    for h in SUPPORTED_HOOKS:
        name = h.replace(".L.", ".0.")
        assert name in native.hook_dict and name in bridge.hook_dict
    for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "n_key_value_heads"):
        assert getattr(native.cfg, k) == getattr(bridge.cfg, k), k
    with pytest.raises(steerlens.ModelLoadError, match="backend must be one of"):
        steerlens.load_model("tiny-random", backend="fast")


def test_reads_equal_the_bridge_at_every_supported_hook(pair):
    native, bridge = pair
    a = capture(native, P, SITES, position="all", batch_size=4, progress=False)
    b = capture(bridge, P, SITES, position="all", batch_size=4, progress=False)
    for s in SITES:
        key = parse_site(s, native)
        for x, y in zip(a[key], b[key]):
            assert x.shape == y.shape, s
            torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-4, msg=s)
    assert native.hf_model.config._attn_implementation == "sdpa"  # back after the pattern read


def _edits(m, site):
    s = parse_site(site, m)
    g = torch.Generator().manual_seed(zlib.crc32(site.encode()) % 1000)  # the same in every process
    if s.is_pattern:
        return [ZeroAblation(s)]
    out = [Scale(s, 0.5), ZeroAblation(s)]
    act = capture(m, P[:1], s, position="last", progress=False)[s][0]
    out.append(AddVector(s, torch.randn(act.shape, generator=g) * act.norm() / act.numel() ** 0.5))
    if s.heads is None and s.kind.startswith("resid"):
        out.append(DirectionalAblation(s, torch.randn(act.shape[-1], generator=g)))
    return out


@pytest.mark.parametrize("site", SITES)
def test_edits_give_the_bridges_outputs(pair, site):
    native, bridge = pair
    for en, eb in zip(_edits(native, site), _edits(bridge, site)):
        ln = next_token_logprobs(native, P, [en], batch_size=4)
        lb = next_token_logprobs(bridge, P, [eb], batch_size=4)
        base = next_token_logprobs(native, P, None, batch_size=4)
        base_b = next_token_logprobs(bridge, P, None, batch_size=4)
        assert not torch.allclose(ln, base, atol=1e-4), f"{type(en).__name__} at {site} changed nothing"
        torch.testing.assert_close(ln, lb, atol=2e-4, rtol=1e-4, msg=f"{type(en).__name__} at {site}")
        # the edit's effect itself, which can be far smaller than the log-probs' rtol allows
        torch.testing.assert_close(ln - base, lb - base_b, atol=2e-5, rtol=1e-3, msg=f"{type(en).__name__} at {site}")
        assert count_hooks(native) == 0
    assert native.hf_model.config._attn_implementation == "sdpa"


def test_generation_and_scoring_equal_the_bridge(pair):
    native, bridge = pair
    e = lambda m: [AddVector("blocks.0.hook_resid_post", torch.linspace(-2, 2, m.d_model)),  # noqa: E731
                   Scale("blocks.1.attn.hook_z[1,2]", 0.0)]
    gn = generate(native, P, e(native), max_new_tokens=8, batch_size=4, progress=False, return_details=True)
    gb = generate(bridge, P, e(bridge), max_new_tokens=8, batch_size=4, progress=False, return_details=True)
    assert [g.token_ids for g in gn] == [g.token_ids for g in gb]
    pairs = [(p, " Paris is the answer.") for p in P]
    for x, y in zip(response_logprobs(native, pairs, e(native)), response_logprobs(bridge, pairs, e(bridge))):
        torch.testing.assert_close(x, y, atol=2e-4, rtol=1e-4)


def test_virtual_hook_points_cost_nothing_until_attached(pair):
    native, _ = pair
    mods = list(native.hf_model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in mods)
    with attach(native, [("blocks.1.attn.hook_z", lambda a, hook=None: a), ("blocks.1.hook_resid_post", lambda a, hook=None: a)]):
        assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods) == 2
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in mods)
    with pytest.raises(NotImplementedError):
        native.hook_dict["blocks.0.hook_resid_post"].add_hook(lambda a, hook=None: a, dir="bwd")


def test_gradients_flow_through_native_hooks(pair):
    native, _ = pair
    ids = torch.tensor([native.prompt_ids("Hello there")])
    delta = torch.zeros(native.d_model, requires_grad=True)
    with attach(native, [("blocks.0.hook_resid_post", lambda a, hook=None: a + delta)]):
        native.hf_model(input_ids=ids).logits[0, -1].logsumexp(-1).backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_bridge_is_available_on_demand_and_separate(pair):
    native, _ = pair
    br = native.bridge  # booted around a copy
    assert br.original_model is not native.hf_model
    with pytest.raises(EditError):
        steerlens.hooks.runtime._hook_point(native, "blocks.0.hook_nonsense")


def test_unknown_layouts_fall_back_to_the_bridge(monkeypatch):
    import steerlens.models.native as nat

    monkeypatch.setattr(nat, "NATIVE_MODEL_TYPES", ())
    with pytest.raises(steerlens.ModelLoadError, match="native backend cannot hook"):
        steerlens.load_model("tiny-random", backend="native")
    assert steerlens.load_model("tiny-random").backend == "bridge"


def test_environment_chooses_the_backend(monkeypatch):
    monkeypatch.setenv("STEERLENS_BACKEND", "bridge")
    assert steerlens.load_model("tiny-random").backend == "bridge"
    assert steerlens.load_model("tiny-random", backend="native").backend == "native"
    monkeypatch.setenv("STEERLENS_BACKEND", "nope")
    with pytest.raises(steerlens.ModelLoadError, match="backend must be one of"):
        steerlens.load_model("tiny-random")
