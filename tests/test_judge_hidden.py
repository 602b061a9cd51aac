"""HiddenReader: hidden-state features of replies, read from an unsteered, weight-sharing copy of the model."""

import numpy as np
import pytest
import torch

from steerlens.evals.judge_hidden import HiddenReader

PROMPTS = ["How do I bake bread?", "Tell me how to pick a lock.", "Hi", "Write a poem about the sea, please."]
REPLIES = ["Mix flour, water and yeast, then bake.", "I'm sorry, but I can't help with that.", "",
           "The sea is wide and blue, the waves roll on and on and on."]


def test_matches_full_forward(tiny):
    """The mean over reply tokens at every layer equals the Hugging Face model's own hidden states."""
    rd = HiddenReader(tiny, layers=(0, 1, 2))
    f = rd.features(PROMPTS[:1], REPLIES[:1])
    ids, p0 = rd.token_ids(PROMPTS[0], REPLIES[0])
    with torch.no_grad():
        hs = tiny.hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    for layer in (0, 1):  # the last entry of hidden_states has the final norm applied
        np.testing.assert_allclose(f[f"L{layer}_mean"][0], hs[layer][0, p0:].mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(f[f"L{layer}_last"][0], hs[layer][0, -1].numpy(), atol=1e-5)
    assert set(f) == {f"L{l}_{r}" for l in (0, 1, 2) for r in ("mean", "last")}
    assert f["L2_mean"].shape == (1, tiny.d_model) and f["L2_mean"].dtype == np.float32


def test_batch_equals_one_at_a_time_and_deterministic(tiny):
    rd = HiddenReader(tiny, layers=(1, 2), batch_size=3)
    batch = rd.features(PROMPTS, REPLIES)
    again = HiddenReader(tiny, layers=(1, 2), batch_size=3).features(PROMPTS, REPLIES)
    for k in batch:
        assert np.array_equal(batch[k], again[k])
        for i in range(len(REPLIES)):
            one = rd.features(PROMPTS[i:i + 1], REPLIES[i:i + 1])[k][0]
            np.testing.assert_allclose(batch[k][i], one, atol=1e-5)
    # different replies give different features (the reading is not constant)
    assert not np.allclose(batch["L2_mean"][0], batch["L2_mean"][1])


def test_steering_hooks_are_not_applied(tiny):
    """A hook on the source model changes its own forward pass but not the reader's features."""
    rd = HiddenReader(tiny, layers=(2,))
    clean = rd.features(PROMPTS, REPLIES)["L2_mean"]
    ids = torch.tensor([rd.token_ids(PROMPTS[0], REPLIES[0])[0]])
    with torch.no_grad():
        before = tiny.hf_model(ids).logits
    hp = tiny.hook_dict["blocks.0.hook_resid_post"]
    hp.add_hook(lambda a, hook=None: a + 10.0)
    try:
        with torch.no_grad():
            after = tiny.hf_model(ids).logits
        assert not torch.allclose(before, after)  # the hook is live on the source model
        steered = HiddenReader(tiny, layers=(2,)).features(PROMPTS, REPLIES)["L2_mean"]
        again = rd.features(PROMPTS, REPLIES)["L2_mean"]
    finally:
        hp.remove_hooks("fwd")
    assert np.array_equal(clean, steered) and np.array_equal(clean, again)


def test_weights_are_shared_not_copied(tiny):
    rd = HiddenReader(tiny, layers=(1,))
    src = tiny.hf_model.model.layers[0].mlp.up_proj.weight
    assert rd.base.layers[0].mlp.up_proj.weight.data_ptr() == src.data_ptr()
    assert len(rd.base.layers) == 1


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="prompts but"):
        HiddenReader(tiny).features(["a"], ["b", "c"])
    with pytest.raises(ValueError, match="out of range"):
        HiddenReader(tiny, layers=(5,)).features(["a"], ["b"])
    with pytest.raises(ValueError, match="non-negative"):
        HiddenReader(tiny, layers=())



@pytest.mark.slow
def test_default_model_matches_full_forward(smol):
    """On SmolLM2-135M-Instruct: the truncated reader (depth 16 of 30) equals the full model's hidden states."""
    rd = HiddenReader(smol, layers=(4, 16), batch_size=2)
    f = rd.features(PROMPTS[:2], REPLIES[:2])
    for i in range(2):
        ids, p0 = rd.token_ids(PROMPTS[i], REPLIES[i])
        with torch.no_grad():
            hs = smol.hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        for layer in (4, 16):
            np.testing.assert_allclose(f[f"L{layer}_mean"][i], hs[layer][0, p0:].mean(0).numpy(), rtol=1e-4, atol=1e-3)
    assert len(rd.base.layers) == 16
