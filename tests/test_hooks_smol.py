"""Foundation contract tests on the real default model (SmolLM2-135M-Instruct)."""

import pytest
import torch

import steerlens
from steerlens import AddVector, Site, capture, generate, steer
from steerlens.hooks import count_hooks, next_token_logprobs

pytestmark = pytest.mark.slow

PROMPTS = [
    "Give me three tips for staying healthy.",
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling in the park at dusk.",
    "Hi",
]


def test_default_model_shape(smol):
    assert (smol.n_layers, smol.n_heads, smol.d_model, smol.d_head) == (30, 9, 576, 64)
    assert smol.has_chat_template
    ids = smol.prompt_ids("Hello")
    # SmolLM2's BOS is <|im_start|>, which also opens each turn: system, user, assistant header.
    assert ids.count(smol.tokenizer.bos_token_id) == 3
    assert ids[0] == smol.tokenizer.bos_token_id and ids[1] != smol.tokenizer.bos_token_id


def test_capture_batched_equals_sequential(smol):
    sites = ["blocks.3.attn.hook_z", "blocks.10.hook_resid_post", "blocks.29.hook_resid_post"]
    pairs = [(p, "Sure. " * (i + 1)) for i, p in enumerate(PROMPTS)]
    for inputs, position in ((PROMPTS, "last"), (pairs, "response_mean")):
        batched = capture(smol, inputs, sites, position=position, batch_size=4, progress=False)
        assert batched[Site.head(3, range(9))].shape == (4, 9, 64)
        for i, x in enumerate(inputs):
            single = capture(smol, [x], sites, position=position, progress=False)
            for s in batched:
                torch.testing.assert_close(batched[s][i], single[s][0], atol=1e-4, rtol=1e-4)  # SDPA: padded and single rows reduce in another order


def test_greedy_generation_batched_equals_sequential_and_steering_acts(smol):
    batched = generate(smol, PROMPTS, max_new_tokens=10, batch_size=4, progress=False)
    single = [generate(smol, [p], max_new_tokens=10, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert "Paris" in batched[1]

    acts = capture(smol, ["Tell me about Paris.", "Tell me about the ocean."], ["blocks.10.hook_resid_post"], progress=False)
    v = list(acts.values())[0]
    direction = v[1] - v[0]
    zero = generate(smol, PROMPTS, [AddVector("blocks.10.hook_resid_post", direction, 0.0)], max_new_tokens=10, progress=False)
    assert zero == batched
    steered = generate(smol, PROMPTS, [AddVector("blocks.10.hook_resid_post", direction, 2.0)], max_new_tokens=10, progress=False)
    assert steered != batched


def test_hooks_gone_after_exception_on_real_model(smol):
    n0 = count_hooks(smol)
    base = next_token_logprobs(smol, PROMPTS[:2])  # before: a hook left behind would change what follows
    with pytest.raises(KeyError):
        with steer(smol, [AddVector("blocks.10.hook_resid_post", torch.ones(576), 1.0)]):
            raise KeyError("x")
    assert count_hooks(smol) == n0
    assert torch.equal(base, next_token_logprobs(smol, PROMPTS[:2]))


def test_current_last_edit_teacher_forced_equals_generation(smol):
    """An activation-dependent edit on the current last position only: the teacher-forced
    log-probs of the steered greedy continuation equal the per-step log-probs recorded while
    generating it (the edit touches the same tokens in both), batched with left padding."""
    from steerlens import FunctionEdit
    from steerlens.hooks import response_logprobs

    acts = capture(smol, ["I'm sorry, I can't help.", "Sure, here is how."], ["blocks.10.hook_resid_post"],
                   progress=False)["blocks.10.hook_resid_post"]
    v = acts[0] - acts[1]
    u = v / v.norm()

    def delta(act, info):  # push along v, harder the less the token already points that way
        return v * (1.5 - torch.tanh(act @ u / 10))[..., None]

    e = FunctionEdit("blocks.10.hook_resid_post", delta, 1.0, positions="current_last")
    gens = generate(smol, PROMPTS, [e], max_new_tokens=16, batch_size=4, progress=False, return_details=True,
                    logprobs=True)
    plain = generate(smol, PROMPTS, None, max_new_tokens=16, batch_size=4, progress=False)
    assert [g.text for g in gens] != plain
    lps = response_logprobs(smol, [(g.prompt, g.token_ids) for g in gens], [e], batch_size=4)
    diff = max(float((lp - torch.tensor(g.logprobs)).abs().max()) for g, lp in zip(gens, lps))
    assert diff <= 1e-4, diff
    unsteered = response_logprobs(smol, [(g.prompt, g.token_ids) for g in gens], None, batch_size=4)
    assert max(float((a - b).abs().max()) for a, b in zip(lps, unsteered)) > 0.1


def test_native_backend_equals_the_bridge_on_the_default_model(smol):
    """The default backend against TransformerLens's bridge on the real model: every supported hook
    read at the last prompt token, and greedy generation under a residual and a head edit."""
    from steerlens.hooks import Scale
    from steerlens.hooks.sites import SUPPORTED_HOOKS

    assert smol.backend == "native"
    bridge = steerlens.load_model(backend="bridge")
    sites = [h.replace(".L.", ".12.") for h in SUPPORTED_HOOKS if "pattern" not in h]
    a = capture(smol, PROMPTS[:3], sites, batch_size=3, progress=False)
    b = capture(bridge, PROMPTS[:3], sites, batch_size=3, progress=False)
    for s in a:
        torch.testing.assert_close(a[s], b[s], atol=1e-4, rtol=1e-4, msg=str(s))
    v = capture(smol, ["Tell me a joke."], "blocks.10.hook_resid_post", progress=False)["blocks.10.hook_resid_post"][0]
    edits = [AddVector("blocks.10.hook_resid_post", 0.5 * v), Scale("blocks.12.attn.hook_z[0,4]", 0.0)]
    gn = generate(smol, PROMPTS[:3], edits, max_new_tokens=12, progress=False)
    gb = generate(bridge, PROMPTS[:3], edits, max_new_tokens=12, progress=False)
    assert gn == gb
    assert gn != generate(smol, PROMPTS[:3], None, max_new_tokens=12, progress=False)
