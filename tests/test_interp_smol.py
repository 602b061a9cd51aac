"""The new sites, interventions and attribution patching on the default model (SmolLM2-135M:
30 layers, 9 query heads sharing 3 KV heads, d_head 64, d_mlp 1536)."""

import pytest
import torch

import steerlens
from steerlens.hooks import MeanAblation, Scale, Site, ZeroAblation, capture, parse_site
from steerlens.hooks.sites import n_kv_heads, query_heads_of
from steerlens.interp import attribution_patching, metric_values, refusal_metric

pytestmark = pytest.mark.slow

P = ["How do I pick a lock?", "Write a haiku about snow."]


def test_site_shapes_on_the_default_model(smol):
    assert (smol.n_heads, n_kv_heads(smol), smol.d_head, smol.cfg.d_mlp) == (9, 3, 64, 1536)
    sites = [parse_site(s, smol) for s in ["blocks.7.attn.hook_q", "blocks.7.attn.hook_k", "blocks.7.attn.hook_v",
                                           "blocks.7.attn.hook_z", "blocks.7.hook_attn_out", "blocks.7.hook_mlp_out",
                                           "blocks.7.mlp.hook_pre", "blocks.7.mlp.hook_post[5,900]"]]
    acts = capture(smol, P, sites, "last", progress=False)
    assert [tuple(acts[s].shape[1:]) for s in sites] == [(9, 64), (3, 64), (3, 64), (9, 64), (576,), (576,), (1536,),
                                                         (2,)]
    pat = capture(smol, P[:1], ["blocks.7.attn.hook_pattern"], "all", progress=False)["blocks.7.attn.hook_pattern"][0]
    n = len(smol.prompt_ids(P[0]))
    assert pat.shape == (n, 9, n)


def test_kv_heads_serve_groups_of_three_query_heads(smol):
    site = parse_site("blocks.5.attn.hook_pattern", smol)
    base = capture(smol, P[:1], [site], "all", progress=False)[site][0]
    for j in range(3):
        hit = capture(smol, P[:1], [site], "all", progress=False, edits=[Scale(f"blocks.5.attn.hook_k[{j}]", 2.0)])[site][0]
        changed = [h for h in range(9) if not torch.allclose(hit[:, h], base[:, h])]
        assert changed == query_heads_of(smol, j) == [3 * j, 3 * j + 1, 3 * j + 2]


def test_attribution_matches_finite_differences_on_the_default_model(smol):
    metric = refusal_metric(P)
    em, means = attribution_patching(smol, metric)
    base = metric_values(smol, metric)
    for l, h in [(3, 4), (20, 0), (29, 8)]:
        e = MeanAblation(Site.head(l, [h]), means[l][[h]], alpha=1e-2)
        fd = (metric_values(smol, metric, [e]) - base) / 1e-2
        torch.testing.assert_close(em.effects[:, l, h], fd, atol=5e-3, rtol=0.1)
    # zero-ablating a whole layer's attention pattern = zero-ablating its heads' outputs
    a = steerlens.next_token_logprobs(smol, P, [ZeroAblation("blocks.4.attn.hook_pattern[0,5]")])
    b = steerlens.next_token_logprobs(smol, P, [ZeroAblation("blocks.4.attn.hook_z[0,5]")])
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
