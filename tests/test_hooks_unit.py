"""Foundation contract tests on the tiny random model: sites, capture, edits, steer, generate."""

import re

import pytest
import torch

import steerlens
from steerlens import AddVector, FunctionEdit, Site, SiteError, capture, generate, steer
from steerlens.hooks import EditError, HookLeakError, InputError, count_hooks, next_token_logprobs, response_logprobs
from steerlens.hooks.activations import ShardedActivations
from steerlens.hooks.sites import parse_site

PROMPTS = [
    "Hi",
    "Write a long and detailed poem about the sea, the wind and the sailors who cross it.",
    "What is 2 + 2?",
    "Name three colours.",
    "Explain photosynthesis to a child in two sentences.",
]
PAIRS = [(p, r) for p, r in zip(PROMPTS, ["Hello!", "The sea is wide and deep and blue.", "4", "Red, green, blue.", "Plants eat light."])]


# ---------------------------------------------------------------- sites

def test_site_parsing_roundtrip(tiny):
    for s in ["blocks.1.hook_resid_post", "blocks.0.hook_resid_pre", "blocks.1.attn.hook_z[0,3]"]:
        assert str(parse_site(s, tiny)) == s
    assert parse_site("blocks.1.attn.hook_z", tiny).heads == (0, 1, 2, 3)
    assert Site.head(0, [3, 1]).heads == (1, 3)


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("blocks.7.hook_resid_post", "layer 7 out of range"),
        ("blocks.1.attn.hook_z[0,9]", "head(s) [9] out of range"),
        ("blocks.1.hook_nonsense", "cannot read site"),
        ("resid_post", "cannot read site"),
    ],
)
def test_bad_sites_give_clear_errors(tiny, spec, msg):
    with pytest.raises(SiteError, match=re.escape(msg)):
        capture(tiny, PROMPTS[:1], [spec], progress=False)


def test_exactly_one_bos(tiny):
    bos = tiny.tokenizer.bos_token_id
    plain = tiny.prompt_ids("Hello", chat=False)
    assert plain[0] == bos and plain.count(bos) == 1
    chat = tiny.prompt_ids("Hello", chat=True)  # SmolLM2's BOS <|im_start|> also opens each turn
    assert chat[0] == bos and chat[1] != bos
    plain = tiny.prompt_ids(tiny.tokenizer.bos_token + "Hello", chat=False)
    assert plain[0] == bos and plain[1] != bos


# ---------------------------------------------------------------- capture

SITES = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post", "blocks.0.attn.hook_z[1,2]"]


@pytest.mark.parametrize("position, inputs", [("last", PROMPTS), ("mean", PROMPTS), ("response_mean", PAIRS)])
def test_capture_batched_equals_one_at_a_time(tiny, position, inputs):
    batched = capture(tiny, inputs, SITES, position=position, batch_size=4, progress=False)
    for i, x in enumerate(inputs):
        single = capture(tiny, [x], SITES, position=position, progress=False)
        for s in batched:
            torch.testing.assert_close(batched[s][i], single[s][0], atol=1e-4, rtol=0)


def test_capture_shapes(tiny):
    out = capture(tiny, PROMPTS, SITES, progress=False)
    shapes = {str(s): tuple(v.shape) for s, v in out.items()}
    assert shapes["blocks.1.hook_resid_post"] == (5, tiny.d_model)
    assert shapes["blocks.0.attn.hook_z[1,2]"] == (5, 2, tiny.d_head)
    allpos = capture(tiny, PROMPTS, ["blocks.1.hook_resid_post"], position="all", progress=False)
    seqs = list(allpos.values())[0]
    assert [t.shape[0] for t in seqs] == [len(tiny.prompt_ids(p)) for p in PROMPTS]
    single = capture(tiny, [PROMPTS[1]], ["blocks.1.hook_resid_post"], position="all", progress=False)
    torch.testing.assert_close(seqs[1], list(single.values())[0][0], atol=1e-4, rtol=0)


def test_capture_last_equals_all_positions_last_row(tiny):
    last = capture(tiny, PROMPTS, ["blocks.1.hook_resid_post"], progress=False)
    allpos = capture(tiny, PROMPTS, ["blocks.1.hook_resid_post"], position="all", progress=False)
    site = Site.resid(1)
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(last[site][i], allpos[site][i][-1])


def test_capture_streams_to_disk(tiny, tmp_path):
    mem = capture(tiny, PROMPTS, SITES, progress=False)
    disk = capture(tiny, PROMPTS, SITES, batch_size=2, out_dir=tmp_path / "acts", shard_size=2, progress=False)
    assert isinstance(disk, ShardedActivations) and len(disk) == len(PROMPTS)
    assert len(disk.index["shards"]) == 3
    for s in mem:
        torch.testing.assert_close(disk[s], mem[s], atol=1e-4, rtol=0)


def test_capture_crash_leaves_nothing_on_disk(tiny, tmp_path, monkeypatch):
    import steerlens.hooks.activations as cap

    calls = {"n": 0}
    real = cap._write_shard

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(cap, "_write_shard", failing)
    with pytest.raises(OSError):
        capture(tiny, PROMPTS, SITES, batch_size=1, out_dir=tmp_path / "acts", shard_size=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_capture_input_errors(tiny):
    with pytest.raises(InputError, match="empty"):
        capture(tiny, [], SITES, progress=False)
    with pytest.raises(InputError, match="pairs"):
        capture(tiny, PROMPTS, SITES, position="response_mean", progress=False)
    with pytest.raises(InputError, match="position"):
        capture(tiny, PROMPTS, SITES, position="first", progress=False)


# ---------------------------------------------------------------- edits and steer

def _logits(model, prompts, edits=None):
    return next_token_logprobs(model, prompts, edits)


def test_strength_zero_is_identity(tiny):
    v = torch.randn(tiny.d_model) * 10
    h = torch.randn(2, tiny.d_head) * 10
    base = _logits(tiny, PROMPTS)
    for e in [AddVector("blocks.1.hook_resid_post", v, 0.0), AddVector("blocks.0.attn.hook_z[0,2]", h, 0.0),
              FunctionEdit("blocks.0.hook_resid_post", lambda a, info: a * 100, alpha=0.0)]:
        assert torch.equal(_logits(tiny, PROMPTS, [e]), base)
    assert not torch.equal(_logits(tiny, PROMPTS, [AddVector("blocks.1.hook_resid_post", v, 1.0)]), base)


def test_head_edit_touches_only_selected_heads(tiny):
    h = torch.randn(2, tiny.d_head)
    e = AddVector("blocks.0.attn.hook_z[1,3]", h, 2.0)
    site_all = Site.head(0, range(tiny.n_heads))
    before = capture(tiny, PROMPTS, [site_all], position="all", progress=False)[site_all]
    after = capture(tiny, PROMPTS, [site_all], position="all", edits=[e], progress=False)[site_all]
    for b, a in zip(before, after):
        d = a - b  # [seq, heads, d_head]
        torch.testing.assert_close(d[:, [1, 3]], (2.0 * h).expand(d.shape[0], 2, -1), atol=1e-5, rtol=0)
        assert d[:, [0, 2]].abs().max() == 0


def test_last_position_edit_only_touches_last_token(tiny):
    v = torch.randn(tiny.d_model)
    site = Site.resid(1, "post")
    before = capture(tiny, PROMPTS, [site], position="all", progress=False)[site]
    after = capture(tiny, PROMPTS, [site], position="all", progress=False,
                    edits=[AddVector(site, v, 1.0, positions="last")])[site]
    for b, a in zip(before, after):
        assert (a[:-1] - b[:-1]).abs().max() == 0
        torch.testing.assert_close(a[-1] - b[-1], v, atol=1e-5, rtol=0)


def test_hooks_removed_after_exception(tiny):
    n0 = count_hooks(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, [AddVector("blocks.1.hook_resid_post", torch.ones(tiny.d_model), 1.0),
                          AddVector("blocks.0.attn.hook_z[0]", torch.ones(1, tiny.d_head), 1.0)]):
            assert count_hooks(tiny) > n0
            raise RuntimeError("boom")
    assert count_hooks(tiny) == n0
    # an exception raised inside a hook during the forward pass too
    bad = FunctionEdit("blocks.0.hook_resid_post", lambda a, info: (_ for _ in ()).throw(ValueError("in hook")))
    with pytest.raises(ValueError, match="in hook"):
        generate(tiny, PROMPTS[:2], [bad], max_new_tokens=2, progress=False)
    assert count_hooks(tiny) == n0


def test_leak_check_fails_when_a_handle_is_left(tiny, monkeypatch):
    """The cleanup check can fail: with removal disabled, a leaked hook is counted and reported."""
    import steerlens.hooks.runtime as rt

    n0 = count_hooks(tiny)
    monkeypatch.setattr(rt, "_remove", lambda hp, handle: None)
    with pytest.raises(HookLeakError, match="blocks.1.hook_resid_post"):
        generate(tiny, PROMPTS[:1], [AddVector("blocks.1.hook_resid_post", torch.ones(tiny.d_model))],
                 max_new_tokens=2, progress=False)
    assert count_hooks(tiny) == n0 + 1  # the leak is visible to the count
    monkeypatch.undo()
    for hp in tiny.hook_dict.values():  # clean up the deliberate leak
        hp.remove_hooks("both")
    assert count_hooks(tiny) == n0


def test_cleanup_leaves_other_callers_hooks(tiny, monkeypatch):
    """Our cleanup removes exactly our handles: a hook someone else attached stays, also when a
    hook raises, and also when removing one of ours fails (HookLeakError names it)."""
    import steerlens.hooks.runtime as rt

    seen = []
    foreign = tiny.hook_dict["blocks.1.hook_resid_post"].add_hook(lambda a, hook: seen.append(1))
    try:
        n_foreign = count_hooks(tiny)
        bad = FunctionEdit("blocks.1.hook_resid_post", lambda a, info: (_ for _ in ()).throw(ValueError("x")))
        with pytest.raises(ValueError):
            generate(tiny, PROMPTS[:1], [bad], max_new_tokens=2, progress=False)
        assert count_hooks(tiny) == n_foreign
        real = rt._remove

        def flaky(hp, handle):
            if hp is tiny.hook_dict["blocks.0.hook_resid_post"]:
                raise RuntimeError("cannot remove")
            real(hp, handle)

        monkeypatch.setattr(rt, "_remove", flaky)
        edits = [AddVector("blocks.0.hook_resid_post", torch.ones(tiny.d_model)),
                 AddVector("blocks.1.hook_resid_post", torch.ones(tiny.d_model))]
        with pytest.raises(HookLeakError, match="blocks.0.hook_resid_post"):
            generate(tiny, PROMPTS[:1], edits, max_new_tokens=2, progress=False)
        monkeypatch.undo()
        assert count_hooks(tiny) == n_foreign + 1  # ours at layer 0 is stuck; the foreign one is intact
        n_seen = len(seen)
        next_token_logprobs(tiny, PROMPTS[:1])
        assert len(seen) == n_seen + 1
        tiny.hook_dict["blocks.0.hook_resid_post"].remove_hooks("both")
        assert count_hooks(tiny) == n_foreign
    finally:
        foreign.hook.remove()
    assert count_hooks(tiny) == n_foreign - 1


def test_edit_validation_errors(tiny):
    with pytest.raises(EditError, match="NaN"):
        AddVector("blocks.1.hook_resid_post", torch.full((tiny.d_model,), float("nan")))
    with pytest.raises(EditError, match="width"):
        generate(tiny, PROMPTS[:1], [AddVector("blocks.1.hook_resid_post", torch.ones(7))], progress=False)
    with pytest.raises(EditError, match="head rows"):
        AddVector("blocks.0.attn.hook_z[0,1]", torch.ones(3, tiny.d_head))
    per_input = AddVector("blocks.1.hook_resid_post", torch.ones(3, tiny.d_model))
    with pytest.raises(EditError, match="3 inputs"):
        generate(tiny, PROMPTS, [per_input], progress=False)


# ---------------------------------------------------------------- generation

def test_greedy_generate_batched_equals_one_at_a_time(tiny):
    v = torch.randn(tiny.d_model)
    for edits in (None, [AddVector("blocks.0.hook_resid_post", v, 1.0)]):
        batched = generate(tiny, PROMPTS, edits, max_new_tokens=8, batch_size=5, progress=False)
        single = [generate(tiny, [p], edits, max_new_tokens=8, progress=False)[0] for p in PROMPTS]
        assert batched == single


def test_per_input_edits_batched_equals_one_at_a_time(tiny):
    torch.manual_seed(1)
    vecs = torch.randn(len(PROMPTS), tiny.d_model) * 3
    gate = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.0])
    e = AddVector("blocks.1.hook_resid_mid", vecs, 1.0, scale=gate)
    batched = generate(tiny, PROMPTS, [e], max_new_tokens=6, batch_size=3, progress=False)
    for i, p in enumerate(PROMPTS):
        one = AddVector("blocks.1.hook_resid_mid", vecs[i] * gate[i], 1.0)
        assert batched[i] == generate(tiny, [p], [one], max_new_tokens=6, progress=False)[0]
    # gate 0 means untouched
    plain = generate(tiny, [PROMPTS[1], PROMPTS[4]], max_new_tokens=6, progress=False)
    assert [batched[1], batched[4]] == plain


def test_sampling_same_seed_same_result(tiny):
    a = generate(tiny, PROMPTS, max_new_tokens=8, do_sample=True, seed=3, progress=False)
    b = generate(tiny, PROMPTS, max_new_tokens=8, do_sample=True, seed=3, progress=False)
    c = generate(tiny, PROMPTS, max_new_tokens=8, do_sample=True, seed=4, progress=False)
    assert a == b and a != c


def test_response_logprobs_match_full_forward(tiny):
    lp = response_logprobs(tiny, PAIRS, batch_size=5)
    for (p, r), got in zip(PAIRS, lp):
        ids = tiny.prompt_ids(p) + tiny.response_ids(r)
        n_p = len(tiny.prompt_ids(p))
        with torch.no_grad():
            logits = tiny.hf_model(torch.tensor([ids])).logits[0].float()
        want = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)[n_p - 1:]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- model loading

def test_load_model_errors(tmp_path):
    with pytest.raises(steerlens.ModelLoadError, match="Known names: smollm2-135m-instruct"):
        steerlens.load_model("no-such-model")
    with pytest.raises(steerlens.ModelLoadError, match="no config.json"):
        steerlens.load_model(str(tmp_path))
    with pytest.raises(steerlens.ModelLoadError, match="Known names"):
        steerlens.load_model(str(tmp_path / "missing" / "dir"))


def test_tiny_model_is_deterministic():
    a, b = steerlens.load_model("tiny-random", seed=0), steerlens.load_model("tiny-random", seed=0)
    assert a.fingerprint() == b.fingerprint()
    assert steerlens.load_model("tiny-random", seed=1).fingerprint() != a.fingerprint()


def test_hub_id_offline_and_unwrappable_architecture_errors(monkeypatch, tmp_path):
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(steerlens.ModelLoadError, match="offline"):
        steerlens.load_model("some-org/some-model")
    monkeypatch.undo()

    def cannot_wrap(*a, **k):
        raise ValueError("Unsupported architecture: FooForCausalLM")

    monkeypatch.setattr(TransformerBridge, "boot_transformers", cannot_wrap)
    with pytest.raises(steerlens.ModelLoadError, match="cannot wrap .*FooForCausalLM"):
        steerlens.load_model("tiny-random", backend="bridge")


def test_bfloat16_option(tiny):
    m = steerlens.load_model("tiny-random", dtype="bfloat16")
    assert m.dtype == torch.bfloat16
    out = capture(m, PROMPTS[:2], ["blocks.1.hook_resid_post"], progress=False)
    ref = capture(tiny, PROMPTS[:2], ["blocks.1.hook_resid_post"], progress=False)
    v, r = list(out.values())[0], list(ref.values())[0]
    assert v.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(v.float(), r, dim=-1).min() > 0.98


def test_capture_cache_reads_repeated_captures_once(tiny):
    from steerlens.hooks import attach, capture_cache

    sites = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z[1,2]"]
    plain = capture(tiny, PROMPTS, sites, progress=False)
    calls = []
    with capture_cache() as cache:
        with attach(tiny, [("blocks.0.hook_resid_pre", lambda a, hook=None: calls.append(1))]):
            a = capture(tiny, PROMPTS, sites, progress=False)
            n = len(calls)
            b = capture(tiny, PROMPTS, sites[:1], progress=False)  # all cached: no forward pass
            assert len(calls) == n
            c = capture(tiny, PROMPTS, ["blocks.1.hook_resid_post", sites[0]], progress=False)  # one new site
            assert len(calls) > n
            capture(tiny, PROMPTS[:2], sites[:1], progress=False)  # other inputs: a miss
            steered = capture(tiny, PROMPTS, sites[:1], progress=False,
                              edits=[AddVector("blocks.0.hook_resid_post", torch.ones(tiny.d_model))])
        assert cache["hits"] == 2 and cache["misses"] == 4
    for s in sites:
        assert torch.equal(a[s], plain[s])
    assert torch.equal(b[sites[0]], plain[sites[0]]) and torch.equal(c[sites[0]], plain[sites[0]])
    assert not torch.equal(steered[sites[0]], plain[sites[0]])  # steered captures bypass the cache
    b[sites[0]].zero_()  # callers get copies
    with capture_cache():
        assert torch.equal(capture(tiny, PROMPTS, sites[:1], progress=False)[sites[0]], plain[sites[0]])
    with capture_cache() as cache:
        capture(tiny, PROMPTS, sites[:1], batch_size=2, progress=False)
        capture(tiny, PROMPTS, sites[:1], batch_size=3, progress=False)  # other padding, other bits: a miss
        ids = [(p, [5, 6, 7]) for p in PROMPTS[:2]]  # token-id responses are unhashable: read uncached
        assert capture(tiny, ids, sites[:1], "response_mean", progress=False)[sites[0]].shape[0] == 2
        assert cache["hits"] == 0 and cache["misses"] == 2
