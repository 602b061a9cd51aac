"""Sites beyond the residual stream and the interpretability interventions, on the tiny model.

The pipeline presets of every intervention (``ablate``, ``scale``, ``set``, ``dir-ablate`` and the
hidden ``contract-*`` presets covering patterns, KV heads, query heads, neurons and token
offsets) run through ``tests/test_contract.py``; here: exact values at strength 1, shapes, errors.
"""

import json
import re

import pytest
import torch

import steerlens
from contract_roles import same_kernel
from steerlens.hooks import (AddVector, DirectionalAblation, EditError, MeanAblation, Patch, Scale, Site, SiteError,
                             ZeroAblation, capture, directional_ablation, mean_activations, parse_site)
from steerlens.hooks.runtime import KIND_RANK, attach, site_order
from steerlens.hooks.sites import ALL_KINDS, SUPPORTED_HOOKS, kv_head_of, n_kv_heads, query_heads_of

P = ["Hi", "What is the capital of France? Answer in one word please.", "2+2?",
     "Write a very short poem about the sea and the moon"]


def _all_sites(layer=1):
    return ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post", "blocks.1.hook_attn_out",
            "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z[0,3]", "blocks.1.attn.hook_q[1]", "blocks.1.attn.hook_k[1]",
            "blocks.1.attn.hook_v[0,1]", "blocks.1.attn.hook_pattern[2]", "blocks.1.mlp.hook_pre[3,5]",
            "blocks.1.mlp.hook_post"]


def test_every_supported_site_parses_round_trips_and_validates(tiny):
    sites = [parse_site(s, tiny) for s in _all_sites()]
    assert {s.kind for s in sites} == set(ALL_KINDS)
    assert [str(s) for s in sites] == _all_sites()
    assert all(parse_site(str(s)) == s for s in sites)
    # bare head names expand to every head (KV heads for k / v)
    assert parse_site("blocks.0.attn.hook_k", tiny).heads == tuple(range(n_kv_heads(tiny)))
    assert parse_site("blocks.0.attn.hook_q", tiny).heads == tuple(range(tiny.n_heads))
    assert parse_site("blocks.0.mlp.hook_post").heads is None  # whole layer, no model needed
    assert Site.neurons(0, [7, 2], "pre") == parse_site("blocks.0.mlp.hook_pre[2,7]")


@pytest.mark.parametrize("spec,msg", [
    ("blocks.1.ln1.hook_normalized", "supported hooks are"),
    ("blocks.1.attn.hook_rot_q", "blocks.L.attn.hook_pattern"),
    ("blocks.1.hook_attn_out[2]", "takes no head or neuron indices"),
    ("blocks.1.attn.hook_k[2]", "KV head(s) [2] out of range"),
    ("blocks.1.attn.hook_q[4]", "head(s) [4] out of range"),
    ("blocks.1.mlp.hook_post[128]", "neuron(s) [128] out of range"),
])
def test_unsupported_or_out_of_range_sites_say_what_is_supported(tiny, spec, msg):
    with pytest.raises(SiteError, match=re.escape(msg)):
        parse_site(spec, tiny)


def test_error_lists_every_supported_hook():
    with pytest.raises(SiteError) as e:
        parse_site("blocks.0.hook_nonsense")
    assert all(h in str(e.value) for h in SUPPORTED_HOOKS)


def test_kind_rank_is_the_order_the_bridge_calls_the_hooks(tiny):
    sites = [parse_site(s, tiny) for s in _all_sites()]
    seen = []

    def rec(site):
        def f(a, hook=None):
            seen.append(site.kind)
            return a
        return f

    ids = torch.tensor([tiny.prompt_ids("Hello")])
    with attach(tiny, [(s.hook_name, rec(s)) for s in sites]), torch.no_grad():
        tiny.hf_model(input_ids=ids)
    assert seen == sorted(seen, key=lambda k: KIND_RANK[k])
    assert set(KIND_RANK) == set(ALL_KINDS)
    assert site_order(parse_site("blocks.0.hook_mlp_out")) < site_order(parse_site("blocks.1.attn.hook_q[0]"))


def test_capture_shapes_at_every_kind(tiny):
    sites = [parse_site(s, tiny) for s in _all_sites() if "pattern" not in s]
    acts = capture(tiny, P, sites, "last", progress=False)
    want = {"resid_pre": (64,), "resid_mid": (64,), "resid_post": (64,), "attn_out": (64,), "mlp_out": (64,),
            "z": (2, 16), "q": (1, 16), "k": (1, 16), "v": (2, 16), "mlp_pre": (2,), "mlp_post": (128,)}
    for s in sites:
        assert tuple(acts[s].shape) == (len(P), *want[s.kind]), s
    pat = capture(tiny, P, ["blocks.1.attn.hook_pattern[2]"], "all", progress=False)["blocks.1.attn.hook_pattern[2]"]
    for p, a in zip(P, pat):
        n = len(tiny.prompt_ids(p))
        assert a.shape == (n, 1, n)
        torch.testing.assert_close(a.sum(-1), torch.ones(n, 1))  # rows of a softmax over real keys only
        assert torch.equal(a[:, 0], a[:, 0].tril())  # causal: no weight on later keys
    with pytest.raises(steerlens.hooks.InputError, match="position='all'"):
        capture(tiny, P, ["blocks.1.attn.hook_pattern[2]"], "last", progress=False)


def test_kv_head_j_is_shared_by_its_query_group(tiny):
    g = tiny.n_heads // n_kv_heads(tiny)
    assert query_heads_of(tiny, 1) == list(range(g, 2 * g)) and kv_head_of(tiny, g) == 1
    site = parse_site("blocks.1.attn.hook_pattern", tiny)
    base = capture(tiny, P[:1], [site], "all", progress=False)[site][0]
    for j in range(n_kv_heads(tiny)):
        hit = capture(tiny, P[:1], [site], "all", progress=False,
                      edits=[Scale(f"blocks.1.attn.hook_k[{j}]", 3.0)])[site][0]
        changed = [h for h in range(tiny.n_heads) if not torch.allclose(hit[:, h], base[:, h])]
        assert changed == query_heads_of(tiny, j)


def _read(model, site, edits=(), prompts=P):
    return capture(model, prompts, [site], "all", progress=False, edits=list(edits))[parse_site(site, model)]


def test_interventions_give_their_exact_value_at_strength_one(tiny):
    for site in ["blocks.1.attn.hook_z[0,3]", "blocks.1.attn.hook_v[1]", "blocks.0.mlp.hook_post[3,9]",
                 "blocks.1.hook_attn_out"]:
        s = parse_site(site, tiny)
        base = _read(tiny, site)
        for a, z in zip(base, _read(tiny, site, [ZeroAblation(s)])):
            assert torch.equal(z, torch.zeros_like(a))
        for a, x in zip(base, _read(tiny, site, [Scale(s, -2.5)])):
            torch.testing.assert_close(x, -2.5 * a)
        for a, x in zip(base, _read(tiny, site, [Scale(s, 3.0, alpha=0.5)])):  # half way: 1 + 0.5 * (3 - 1)
            torch.testing.assert_close(x, 2.0 * a)
        mean = mean_activations(tiny, P, [s])[s]
        assert mean.shape == base[0].shape[1:]
        for x in _read(tiny, site, [MeanAblation(s, mean)]):
            torch.testing.assert_close(x, mean.expand_as(x))
        if not s.is_neuron:
            r = torch.randn(s.width(tiny), generator=torch.Generator().manual_seed(0))
            for x in _read(tiny, site, [DirectionalAblation(s, r)]):
                torch.testing.assert_close(x @ (r / r.norm()), torch.zeros(x.shape[:-1]), atol=1e-5, rtol=0)


def test_strength_zero_and_closed_rows_are_bit_identical(tiny):
    s = parse_site("blocks.1.attn.hook_pattern[0,2]", tiny)
    base = steerlens.next_token_logprobs(tiny, P)
    assert torch.equal(base, steerlens.next_token_logprobs(tiny, P, [ZeroAblation(s, alpha=0.0)]))
    scale = torch.tensor([1.0, 0.0, 1.0, 0.0])
    lp = steerlens.next_token_logprobs(tiny, P, [ZeroAblation(s, scale=scale)])
    with same_kernel(tiny, [ZeroAblation(s)]):  # a pattern edit runs the eager kernel on the native backend
        base = steerlens.next_token_logprobs(tiny, P)
    assert torch.equal(lp[1::2], base[1::2]) and not torch.equal(lp[::2], base[::2])


def test_zero_ablating_a_pattern_equals_zero_ablating_the_head_output(tiny):
    a = steerlens.next_token_logprobs(tiny, P, [ZeroAblation("blocks.1.attn.hook_pattern[1,2]")])
    b = steerlens.next_token_logprobs(tiny, P, [ZeroAblation("blocks.1.attn.hook_z[1,2]")])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ga = steerlens.generate(tiny, P, [ZeroAblation("blocks.1.attn.hook_pattern[1,2]", alpha=10.0)], max_new_tokens=5,
                            progress=False)
    gb = steerlens.generate(tiny, P, [ZeroAblation("blocks.1.attn.hook_z[1,2]", alpha=10.0)], max_new_tokens=5,
                            progress=False)
    assert ga == gb  # also under the KV cache ([b, heads, 1, k] patterns on decode steps)


def test_patterns_take_ablations_only(tiny):
    s = "blocks.1.attn.hook_pattern[0]"
    with pytest.raises(EditError, match="only by ablation"):
        steerlens.next_token_logprobs(tiny, P, [Scale(s, 2.0)])
    with pytest.raises(EditError, match="fixed value"):
        Patch(s, torch.zeros(3))
    with pytest.raises(EditError, match="vector width"):
        steerlens.next_token_logprobs(tiny, P, [AddVector("blocks.0.mlp.hook_post[1,2]", torch.ones(3))])


def test_patch_from_cached_sequences_reproduces_the_clean_run(tiny):
    clean = ["The Eiffel Tower is in the city of", "The Colosseum is in the city of"]
    corrupt = ["The Big Ben tower is in the city of", "The Space Needle is in the city of"]
    assert [len(tiny.prompt_ids(p)) for p in clean] == [len(tiny.prompt_ids(p)) for p in corrupt]
    base_clean = steerlens.next_token_logprobs(tiny, clean)
    base_corrupt = steerlens.next_token_logprobs(tiny, corrupt)
    assert not torch.allclose(base_clean, base_corrupt)
    # the whole last residual stream: the corrupted run becomes the clean one
    last = "blocks.1.hook_resid_post"
    cached = capture(tiny, clean, [last], "all", progress=False)[last]
    torch.testing.assert_close(steerlens.next_token_logprobs(tiny, corrupt, [Patch(last, sequences=cached)]),
                               base_clean, atol=1e-5, rtol=1e-5)
    # patching every kind of site with its clean value keeps the run clean: any misaligned row,
    # column, head, KV head, neuron or key would break it (batched with left padding, inputs reversed)
    sites = [parse_site(x, tiny) for x in ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern",
                                           "blocks.0.attn.hook_v", "blocks.0.attn.hook_q[1]", "blocks.0.mlp.hook_post",
                                           "blocks.1.attn.hook_z[0,2]", "blocks.1.attn.hook_k[1]",
                                           "blocks.1.mlp.hook_pre[4,8]", "blocks.1.hook_mlp_out"]]
    cached = capture(tiny, clean, sites, "all", progress=False)
    edits = [Patch(s, sequences=cached[s] + cached[s][::-1]) for s in sites]
    got = steerlens.next_token_logprobs(tiny, corrupt + corrupt[::-1], edits, batch_size=4)
    torch.testing.assert_close(got, torch.cat([base_clean, base_clean.flip(0)]), atol=1e-4, rtol=1e-4)
    # and a single head's patch changes the corrupted run only partly
    one = steerlens.next_token_logprobs(tiny, corrupt, [Patch(sites[5], sequences=cached[sites[5]])])
    assert not torch.allclose(one, base_corrupt) and not torch.allclose(one, base_clean)


def test_token_offsets_edit_only_those_tokens(tiny):
    site = "blocks.1.hook_resid_post"
    base = _read(tiny, site)
    got = capture(tiny, P, [site], "all", progress=False, batch_size=4,
                  edits=[Scale(site, 0.0, at=[0, -2])])[parse_site(site)]
    for a, x in zip(base, got):
        n = a.shape[0]
        changed = [i - (n - 1) for i in range(n) if not torch.equal(a[i], x[i])]
        assert changed == [-2, 0]
        assert torch.equal(x[-1], torch.zeros_like(x[-1]))
    # decode offsets: the k-th generated token is fed back at offset k
    e = Scale(site, -50.0, at=[2])
    kw = dict(max_new_tokens=5, progress=False, return_details=True)
    g1 = [g.token_ids for g in steerlens.generate(tiny, P, [e], batch_size=4, **kw)]
    g2 = [steerlens.generate(tiny, [p], [e], **kw)[0].token_ids for p in P]
    assert g1 == g2
    plain = [g.token_ids for g in steerlens.generate(tiny, P, None, **kw)]
    # generated tokens 1 and 2 come before offset 2 is fed back: unchanged; later ones change
    assert all(a[:2] == b[:2] for a, b in zip(g1, plain)) and g1 != plain


def test_directional_ablation_removes_the_direction_everywhere(tiny):
    r = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(1))
    u = r / r.norm()
    eds = directional_ablation(tiny, r)
    assert [str(e.site) for e in eds] == ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out",
                                         "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]
    sites = [f"blocks.{l}.hook_resid_{w}" for l in range(tiny.n_layers) for w in ("pre", "post")]
    acts = capture(tiny, P, sites, "all", progress=False, edits=eds)
    for s in sites:
        for x in acts[s]:
            assert (x @ u).abs().max() < 1e-4, s
    plain = capture(tiny, P, sites, "all", progress=False)
    assert max(float((x @ u).abs().max()) for x in plain["blocks.1.hook_resid_post"]) > 1e-2
    only1 = capture(tiny, P, ["blocks.1.hook_resid_pre"], "all", progress=False,
                    edits=directional_ablation(tiny, r, layers=[1]))["blocks.1.hook_resid_pre"]
    assert all((x @ u).abs().max() < 1e-4 for x in only1)


def test_intervention_input_errors(tiny):
    with pytest.raises(EditError, match="exactly one of"):
        Patch("blocks.0.hook_attn_out")
    with pytest.raises(EditError, match="zero norm"):
        DirectionalAblation("blocks.0.hook_attn_out", torch.zeros(64))
    with pytest.raises(EditError, match="expected"):
        steerlens.next_token_logprobs(tiny, P, [MeanAblation("blocks.1.attn.hook_z[0,1]", torch.zeros(3, 16))])
    with pytest.raises(EditError, match="built for 2 inputs, but 4"):
        steerlens.next_token_logprobs(tiny, P, [Patch("blocks.0.hook_attn_out", sequences=[torch.zeros(3, 64)] * 2)])
    with pytest.raises(EditError, match="finite"):
        Scale("blocks.0.hook_attn_out", float("nan"))
    with pytest.raises(EditError, match="cached sequence of shape"):
        steerlens.next_token_logprobs(tiny, P[:1], [Patch("blocks.0.hook_attn_out", sequences=[torch.zeros(3, 8)])])
    with pytest.raises(EditError, match="at least one token offset"):
        ZeroAblation("blocks.0.hook_attn_out", at=[])


def test_pipeline_interventions_from_specs(tiny):
    """The registered methods build from plain parameters (what specs and the CLI pass) and refuse
    what they cannot do."""
    from steerlens.pipeline import PipelineError, SimpleContrastiveData, make_steerer

    data = SimpleContrastiveData([(p, "Yes.") for p in P], [(p, "No.") for p in P], position="response_mean")
    st = make_steerer("ablate", sites=["blocks.1.attn.hook_v", "blocks.0.mlp.hook_post[1,5]"], mode="mean").fit(tiny, data)
    assert [str(s) for s in st.selection.sites()] == ["blocks.0.mlp.hook_post[1,5]", "blocks.1.attn.hook_v[0,1]"]
    eds = st.edits(tiny)
    assert [type(e).__name__ for e in eds] == ["MeanAblation", "MeanAblation"] and eds[1].mean.shape == (2, 16)
    with pytest.raises(PipelineError, match="only be zero-ablated"):
        make_steerer("ablate", sites=["blocks.0.attn.hook_pattern[1]"], mode="mean").fit(tiny, data)
    with pytest.raises(PipelineError, match="give the sites"):
        make_steerer("scale")
    with pytest.raises(PipelineError, match="mode must be"):
        make_steerer("ablate", sites=["blocks.0.hook_attn_out"], mode="half")
    d = make_steerer("dir-ablate", layer=1).fit(tiny, data)
    assert len(d.edits(tiny)) == 1 + 2 * tiny.n_layers


def test_interventions_from_the_command_line(tmp_path, root, capsys):
    from steerlens.cli import main

    out = tmp_path / "abl"
    assert main(["fit", "--method", "ablate", "--task", "safety", "--n", "4", "--model", "tiny-random",
                 "--param", 'sites=["blocks.1.attn.hook_v[1]", "blocks.0.mlp.hook_post[3,4]"]',
                 "--param", 'mode="mean"', "--out", str(out)]) == 0
    fitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fitted["sites"] == ["blocks.0.mlp.hook_post[3,4]", "blocks.1.attn.hook_v[1]"]
    assert main(["generate", "--model", "tiny-random", "--steering", str(out), "--alpha", "30", "--prompt", "Hi",
                 "--max-new-tokens", "3"]) == 0
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert all(f"\n{m} " in "\n" + listed for m in ("ablate", "scale", "set", "dir-ablate"))
    assert "contract-ablate-pattern" not in listed
