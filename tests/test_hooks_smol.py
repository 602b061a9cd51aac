"""Foundation contract tests on the real default model (SmolLM2-135M-Instruct)."""

import pytest
import torch

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
                torch.testing.assert_close(batched[s][i], single[s][0], atol=1e-4, rtol=0)


def test_greedy_generation_batched_equals_sequential_and_steering_acts(smol):
    batched = generate(smol, PROMPTS, max_new_tokens=16, batch_size=4, progress=False)
    single = [generate(smol, [p], max_new_tokens=16, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert "Paris" in batched[1]

    acts = capture(smol, ["Tell me about Paris.", "Tell me about the ocean."], ["blocks.10.hook_resid_post"], progress=False)
    v = list(acts.values())[0]
    direction = v[1] - v[0]
    zero = generate(smol, PROMPTS, [AddVector("blocks.10.hook_resid_post", direction, 0.0)], max_new_tokens=16, progress=False)
    assert zero == batched
    steered = generate(smol, PROMPTS, [AddVector("blocks.10.hook_resid_post", direction, 2.0)], max_new_tokens=16, progress=False)
    assert steered != batched


def test_hooks_gone_after_exception_on_real_model(smol):
    n0 = count_hooks(smol)
    with pytest.raises(KeyError):
        with steer(smol, [AddVector("blocks.10.hook_resid_post", torch.ones(576), 1.0)]):
            raise KeyError("x")
    assert count_hooks(smol) == n0
    base = next_token_logprobs(smol, PROMPTS[:2])
    assert torch.equal(base, next_token_logprobs(smol, PROMPTS[:2]))
