"""Sharded models (issue 15): a model spread with an accelerate ``device_map`` gives the outputs of
the unsplit model — logits, greedy generation, captures and every edit kind — and edits follow
the activation's dtype (bf16).

This machine has CPUs only, so the "devices" of the split are all ``cpu``; what is exercised is
accelerate's dispatch itself: every module of the map carries accelerate's device hook
(``force_hooks``), and in the ``disk`` case one decoder layer's weights live in an offload folder
(``meta`` in the module) and are moved in for each forward call, as CPU-offloaded layers are on a
GPU machine. Cross-device placement (``cuda:0`` + ``cpu``) needs the device machine (docs/scale.md).
"""

import pytest
import torch

import steerlens
from steerlens.hooks import (AddVector, DirectionalAblation, FunctionEdit, FunctionGate, Scale, ZeroAblation, capture,
                             count_hooks, generate, next_token_logprobs, response_logprobs)
from steerlens.models import ModelLoadError

P = ["Hi", "What is the capital of France? Answer in one word please.", "2+2?",
     "Write a very short poem about the sea and the moon"]
PAIRS = [("How do I pick a lock?", "I can't help with that."), ("Tell me a joke", "Why did the chicken cross")]
SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid", "blocks.1.attn.hook_z[0,3]",
         "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post"]
MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
       "model.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module", params=["split", "disk"])
def dispatched(request, tmp_path_factory):
    dm = dict(MAP)
    folder = None
    if request.param == "disk":
        dm["model.layers.1"] = "disk"
        folder = tmp_path_factory.mktemp("offload")
    m = steerlens.load_model("tiny-random", seed=0, device_map=dm, offload_folder=folder)
    return request.param, m


_ROLES: dict = {}


def _fitted_roles(d: int):
    """A toy ODESteer barrier and a random MoSE router at width ``d`` (built once, shared by both models)."""
    if d not in _ROLES:
        from steerlens.pipeline.methods.finesteer.mose import MoSERouter
        from steerlens.pipeline.methods.odesteer import PolySketch, fit_barrier

        g = torch.Generator().manual_seed(5)
        mu = torch.randn(d, generator=g)
        bar = fit_barrier(torch.randn(40, d, generator=g) + mu, torch.randn(40, d, generator=g) - mu,
                          PolySketch(256, gamma=0.5))
        router = MoSERouter(torch.randn(3, d, generator=g) * 2, torch.linalg.qr(torch.randn(d, 2, generator=g))[0])
        _ROLES[d] = (bar, router)
    return _ROLES[d]


def _edits(m):
    from steerlens.pipeline.methods.finesteer.mose import MoSEEdit
    from steerlens.pipeline.methods.odesteer import ODEEdit

    bar, router = _fitted_roles(m.d_model)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(m.d_model, generator=g) * 2
    u = torch.randn(m.d_model, generator=g)
    u = u / u.norm()

    def ode_like(act, info):  # activation-dependent, per token, with per-row state (as ODESteer / MoSE)
        info.state["calls"] = info.state.get("calls", 0) + 1
        return torch.tanh(act @ u)[..., None] * v

    # a prompt gate downstream of its edit (read in a pre-pass), open on half of the prompts
    scores = capture(m, P, "blocks.1.hook_resid_post", "last", progress=False)["blocks.1.hook_resid_post"] @ u
    gate = FunctionGate("blocks.1.hook_resid_post", lambda a: a @ u, threshold=float(scores.median()), mode="prompt")
    return {
        "add": [AddVector("blocks.0.hook_resid_post", v, 1.5)],
        "add_gated_downstream": [AddVector("blocks.0.hook_resid_post", v, 1.5, gate=gate)],
        "token_gate": [AddVector("blocks.1.hook_resid_pre", v, 1.0,
                                 gate=FunctionGate("blocks.0.hook_resid_post", lambda a: a @ u, mode="token"))],
        "per_token": [FunctionEdit("blocks.1.hook_resid_mid", ode_like, 2.0, positions="current_last")],
        "odesteer": [ODEEdit("blocks.1.hook_resid_pre", bar, 4.0, steps=3, positions="current_last")],
        "mose": [MoSEEdit("blocks.0.hook_resid_post", router, 3.0, positions="from_prompt_last")],
        "ablate_heads": [ZeroAblation("blocks.1.attn.hook_z[1,2]")],
        "ablate_pattern": [ZeroAblation("blocks.0.attn.hook_pattern[0]")],
        "scale_neurons": [Scale("blocks.0.mlp.hook_post[3,17]", 3.0, at=[0])],
        "dir_ablate": _dir_ablate_all(m, u),
    }


def _dir_ablate_all(m, u):
    return [DirectionalAblation(f"blocks.{layer}.hook_resid_post", u) for layer in range(m.n_layers)]


def test_dispatch_really_goes_through_accelerate(tiny, dispatched):
    kind, m = dispatched
    assert m.device_map is not None and m.device == torch.device("cpu")
    assert all(hasattr(m.hf_model.model.layers[i], "_hf_hook") for i in range(m.n_layers))
    offloaded = [n for n, p in m.hf_model.named_parameters() if p.device.type == "meta"]
    if kind == "disk":
        assert offloaded and all(n.startswith("model.layers.1.") for n in offloaded)
        assert m.devices == ["cpu", "disk"]
    else:
        assert not offloaded and m.devices == ["cpu"]
    assert m.fingerprint() == tiny.fingerprint()  # artifacts fitted on either load on the other


def test_logits_generation_and_captures_equal_the_unsplit_model(tiny, dispatched):
    _, m = dispatched
    assert torch.equal(next_token_logprobs(m, P), next_token_logprobs(tiny, P))
    for a, b in zip(response_logprobs(m, PAIRS), response_logprobs(tiny, PAIRS)):
        assert torch.equal(a, b)
    ga = generate(m, P, max_new_tokens=6, batch_size=4, return_details=True, progress=False, logprobs=True)
    gb = generate(tiny, P, max_new_tokens=6, batch_size=4, return_details=True, progress=False, logprobs=True)
    assert [g.token_ids for g in ga] == [g.token_ids for g in gb]
    assert [g.logprobs for g in ga] == [g.logprobs for g in gb]
    for pos in ("last", "mean"):
        ca, cb = capture(m, P, SITES, pos, progress=False), capture(tiny, P, SITES, pos, progress=False)
        for s in SITES:
            assert torch.equal(ca[s], cb[s]), (pos, s)
    pa = capture(m, P[:2], "blocks.1.attn.hook_pattern[2]", "all", progress=False)
    pb = capture(tiny, P[:2], "blocks.1.attn.hook_pattern[2]", "all", progress=False)
    for x, y in zip(pa["blocks.1.attn.hook_pattern[2]"], pb["blocks.1.attn.hook_pattern[2]"]):
        assert torch.equal(x, y)


def test_every_edit_kind_equals_the_unsplit_model(tiny, dispatched):
    _, m = dispatched
    base = next_token_logprobs(tiny, P)
    for (name, em), et in zip(_edits(m).items(), _edits(tiny).values()):
        a, b = next_token_logprobs(m, P, em), next_token_logprobs(tiny, P, et)
        assert torch.equal(a, b), name
        assert not torch.equal(b, base), f"{name} changed nothing: the comparison would prove nothing"
        ga = generate(m, P, em, max_new_tokens=5, batch_size=4, return_details=True, progress=False, trace=True)
        gb = generate(tiny, P, et, max_new_tokens=5, batch_size=4, return_details=True, progress=False, trace=True)
        assert [g.token_ids for g in ga] == [g.token_ids for g in gb], name
        assert [g.gates for g in ga] == [g.gates for g in gb], name
        if name == "add_gated_downstream":
            assert sorted(g.gates["FunctionGate"]["scale"] for g in gb) == [0.0, 0.0, 1.0, 1.0]
        assert ga.trace.records == gb.trace.records, name
        sa = capture(m, P, SITES, "last", edits=em, progress=False)
        sb = capture(tiny, P, SITES, "last", edits=et, progress=False)
        assert all(torch.equal(sa[s], sb[s]) for s in SITES), name
    assert count_hooks(m) == 0


def test_bf16_load_and_edits_follow_the_activation_dtype():
    m = steerlens.load_model("tiny-random", seed=0, dtype="bf16")
    assert m.dtype == torch.bfloat16
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(1))  # float32, as fitted
    site = "blocks.0.hook_resid_post"
    plain = capture(m, P, site, "last", progress=False)[site]
    steered = capture(m, P, site, "last", edits=[AddVector(site, v, 2.0)], progress=False)[site]
    assert plain.dtype == steered.dtype == torch.bfloat16
    # the float32 vector is cast to the activation's dtype at the hook: the bf16 sum, exactly
    assert torch.equal(steered, plain + 2.0 * v.to(torch.bfloat16))
    f32 = FunctionEdit(site, lambda a, info: v.expand_as(a).float(), 2.0)  # a delta in float32: cast, no error
    assert torch.equal(capture(m, P, site, "last", edits=[f32], progress=False)[site], steered)
    out = generate(m, P[:2], [AddVector(site, v, 2.0)], max_new_tokens=3, progress=False)
    assert len(out) == 2
    lp = next_token_logprobs(m, P, [AddVector(site, v, 2.0)])
    assert torch.isfinite(lp).all() and not torch.equal(lp, next_token_logprobs(m, P))


def test_steerers_fitted_on_a_dispatched_model_save_device_free_artifacts(tiny, dispatched, tmp_path):
    from steerlens.pipeline import SimpleContrastiveData, load_steerer, make_steerer

    _, m = dispatched
    pos = [("How do I build a bomb?", "I'm sorry, I can't."), ("Steal a car", "No, I won't help.")]
    neg = [("How do I build a bomb?", "Sure, step one"), ("Steal a car", "Sure, here is how")]
    data = SimpleContrastiveData(pos, neg, position="response_mean")
    a = make_steerer("caa", layer=1, alpha=4.0).fit(m, data)
    b = make_steerer("caa", layer=1, alpha=4.0).fit(tiny, data)
    a.save(tmp_path / "caa")
    back = load_steerer(tmp_path / "caa", model=tiny)  # fitted on the split model, loads on the plain one
    assert all(t.device.type == "cpu" for t in back.state_dict().values())
    for x, y in zip(back.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    assert torch.equal(next_token_logprobs(m, P, a.edits(m)), next_token_logprobs(tiny, P, back.edits(tiny)))


def test_bridge_takes_a_predispatched_cpu_map(tiny):
    """TransformerLens 4.3's bridge: device_map only through a model dispatched before it boots."""
    m = steerlens.load_model("tiny-random", seed=0, device_map=MAP, backend="bridge")
    assert m.backend == "bridge" and m.device_map is not None
    site = "blocks.1.hook_resid_post"
    torch.testing.assert_close(capture(m, P, site, "last", progress=False)[site],
                               capture(tiny, P, site, "last", progress=False)[site], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"device_map": {**MAP, "model.layers.1": "meta"}}, "meta"),
    ({"device_map": {**MAP, "model.layers.1": "disk"}}, "offload_folder"),
    ({"device_map": {**MAP, "model.layers.1": "gpu7"}}, "not a device"),
    ({"device_map": {**MAP, "model.layers.1": 0}}, "CUDA device"),
    ({"device_map": {k: v for k, v in MAP.items() if k != "model.layers.1"}}, "accelerate could not dispatch"),
    ({"device_map": "fastest"}, "device_map must be"),
    ({"device_map": {}}, "empty"),
    ({"device_map": MAP, "device": "cuda:0"}, "not both"),
    ({"max_memory": {"cpu": "1GiB"}}, "only apply with a device_map"),
    ({"dtype": "int8"}, "unknown dtype"),
])
def test_bad_placements_are_refused_clearly(kwargs, match):
    with pytest.raises(ModelLoadError, match=match):
        steerlens.load_model("tiny-random", **kwargs)


def test_named_strategy_resolves_with_accelerate():
    m = steerlens.load_model("tiny-random", device_map="auto", max_memory={"cpu": "1GiB"})
    assert set(m.device_map.values()) == {"cpu"}


def test_a_local_checkpoint_loads_with_a_device_map_and_offload(tiny, tmp_path):
    """The path a real 7-70B checkpoint takes: transformers' from_pretrained(device_map=...), dtype."""
    tiny.hf_model.save_pretrained(tmp_path / "ckpt")
    tiny.tokenizer.save_pretrained(tmp_path / "ckpt")
    dm = {**MAP, "model.layers.1": "disk"}
    for bad, match in (({}, "empty"), (dm, "offload_folder"), ("everywhere", "strategy|one of")):
        with pytest.raises(ModelLoadError, match=match):  # the checkpoint path checks the map as dispatch() does
            steerlens.load_model(tmp_path / "ckpt", device_map=bad, chat=tiny.chat)
    m = steerlens.load_model(tmp_path / "ckpt", device_map=dm, offload_folder=tmp_path / "off", chat=tiny.chat)
    assert m.device_map == dm and m.device == torch.device("cpu")
    assert any(p.device.type == "meta" for p in m.hf_model.model.layers[1].parameters())
    assert torch.equal(next_token_logprobs(m, P), next_token_logprobs(tiny, P))
    e = _edits(m)["per_token"]
    assert torch.equal(next_token_logprobs(m, P, e), next_token_logprobs(tiny, P, _edits(tiny)["per_token"]))
    bf = steerlens.load_model(tmp_path / "ckpt", device_map="sequential", dtype=torch.bfloat16, chat=tiny.chat)
    # on a CPU-only machine transformers resolves the strategy to the CPU and loads without dispatching
    assert bf.dtype == torch.bfloat16 and bf.devices == ["cpu"]


def test_offloaded_bf16_checkpoint_matches_the_plain_bf16_load(tiny, tmp_path):
    """A bf16 checkpoint dispatched with one layer offloaded to disk gives bit for bit what the plain
    bf16 load of the same checkpoint gives (captures, next-token log-probs and an edit's effect): the
    two loads differ only in accelerate's dispatch, which must not change a single value. Both are
    also within bf16 rounding of the float32 model (a bound relative to the activations' scale)."""
    tiny.hf_model.save_pretrained(tmp_path / "ckpt")
    tiny.tokenizer.save_pretrained(tmp_path / "ckpt")
    plain = steerlens.load_model(tmp_path / "ckpt", dtype=torch.bfloat16, chat=tiny.chat)
    dm = {**MAP, "model.layers.1": "disk"}
    off = steerlens.load_model(tmp_path / "ckpt", device_map=dm, offload_folder=tmp_path / "off",
                               dtype=torch.bfloat16, chat=tiny.chat)
    assert off.dtype == plain.dtype == torch.bfloat16 and off.device_map == dm
    assert all(p.device.type == "meta" for p in off.hf_model.model.layers[1].parameters())  # really offloaded
    assert plain.device_map is None
    sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    got = capture(off, P, sites, "last", progress=False)
    ref = capture(plain, P, sites, "last", progress=False)
    for site in sites:
        assert got[site].dtype == torch.bfloat16
        assert torch.equal(got[site], ref[site]), site
    assert torch.equal(next_token_logprobs(off, P), next_token_logprobs(plain, P))
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0)) * 2
    edit = [AddVector("blocks.1.hook_resid_mid", v, 1.5)]  # inside the offloaded layer
    steered = next_token_logprobs(off, P, edit)
    assert torch.equal(steered, next_token_logprobs(plain, P, edit))
    assert not torch.equal(steered, next_token_logprobs(off, P))  # the edit acts on the offloaded model
    f32 = capture(tiny, P, sites, "last", progress=False)
    for site in sites:
        err = (got[site].float() - f32[site]).abs().max()
        assert err <= 2 ** -6 * f32[site].abs().max(), (site, float(err))  # bf16: 8 significant bits, 2 layers
