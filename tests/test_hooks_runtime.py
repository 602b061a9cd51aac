"""The hook layer's runtime on the tiny model: position windows, live gates (prompt and token,
upstream and downstream of their edits), per-row state, traces, capture keys."""

import json

import pytest
import torch

import steerlens
from steerlens import AddVector, FunctionEdit, FunctionGate, capture, generate
from steerlens.hooks import EditError, Site, Trace, response_logprobs

PROMPTS = ["Hi", "Write a long and detailed poem about the sea, the wind and the sailors who cross it.",
           "What is 2 + 2?", "Name three colours."]
PAIRS = [("Hi", "Hello there, friend!"), ("What is 2 + 2?", "It is 4, of course."),
         ("Write a long and detailed poem about the sea.", "The sea.")]


def _mean_score(a):
    return a.float().mean(-1) * 100


def test_capture_answers_to_the_hook_names_passed(tiny):
    acts = capture(tiny, PROMPTS, ["blocks.1.hook_resid_post", "blocks.0.attn.hook_z", "blocks.0.attn.hook_z[1,2]"],
                   progress=False)
    assert acts["blocks.1.hook_resid_post"].shape == (4, tiny.d_model)
    assert torch.equal(acts["blocks.1.hook_resid_post"], acts[Site.resid(1)])
    assert acts["blocks.0.attn.hook_z"].shape == (4, tiny.n_heads, tiny.d_head)
    assert torch.equal(acts["blocks.0.attn.hook_z[1,2]"], acts["blocks.0.attn.hook_z"][:, [1, 2]])
    assert "blocks.1.hook_resid_post" in acts and "blocks.0.hook_resid_post" not in acts
    with pytest.raises(KeyError, match="was not captured"):
        acts["blocks.0.hook_resid_post"]


@pytest.mark.parametrize("positions", ["from_prompt_last", "current_last", "last"])
def test_response_window_in_teacher_forced_passes(tiny, positions):
    """On (prompt, response) pairs both response-window modes edit the last prompt token and every
    response token — what generation would edit — and nothing before."""
    v = torch.randn(tiny.d_model)
    site = Site.resid(0, "post")
    before = capture(tiny, PAIRS, [site], position="all", progress=False)[site]
    after = capture(tiny, PAIRS, [site], position="all", progress=False,
                    edits=[AddVector(site, v, 1.0, positions=positions)])[site]
    for (p, _), b, a in zip(PAIRS, before, after):
        n_prompt = len(tiny.prompt_ids(p))
        assert (a[:n_prompt - 1] - b[:n_prompt - 1]).abs().max() == 0
        torch.testing.assert_close(a[n_prompt - 1:] - b[n_prompt - 1:], v.expand(len(a) - n_prompt + 1, -1),
                                   atol=1e-5, rtol=0)


def test_bad_positions_rejected():
    with pytest.raises(EditError, match="positions must be one of"):
        AddVector("blocks.0.hook_resid_post", torch.zeros(64), positions="first")


def test_per_token_edit_sees_each_token_and_keeps_row_state(tiny):
    """A delta that depends on the live activation (and on a per-row value computed once from the
    prompt) gives the same generation batched as alone, and is called once per decode step."""
    calls = []
    torch.manual_seed(0)
    v = torch.randn(tiny.d_model)

    def delta(act, info):
        if info.is_prompt:
            info.state["q"] = act[torch.arange(act.shape[0]), info.prompt_last].detach().clone()
        calls.append((info.step, act.shape[1]))
        return v * (1 + torch.tanh(act.sum(-1, keepdim=True))) + info.state["q"][:, None] * 0.5

    e = FunctionEdit("blocks.0.hook_resid_post", delta, 20.0, positions="current_last")
    batched = generate(tiny, PROMPTS, [e], max_new_tokens=5, batch_size=4, progress=False)
    alone = [generate(tiny, [p], [e], max_new_tokens=5, progress=False)[0] for p in PROMPTS]
    assert batched == alone
    assert batched != generate(tiny, PROMPTS, None, max_new_tokens=5, batch_size=4, progress=False)
    calls.clear()
    generate(tiny, PROMPTS[:1], [e], max_new_tokens=4, progress=False)
    assert [c[0] for c in calls] == [0, 1, 2, 3] and all(t == 1 for _, t in calls)


def test_prompt_gate_upstream_and_downstream_decide_the_same(tiny):
    """A prompt gate read at its layer inline and one read in the pre-pass (gate after the edit)
    give the scores that a plain capture of the unsteered prompt gives."""
    ref = capture(tiny, PROMPTS, ["blocks.1.hook_resid_post"], progress=False)["blocks.1.hook_resid_post"]
    want = _mean_score(ref)
    thr = float(want.median())
    v = torch.randn(tiny.d_model) * 20
    g = FunctionGate("blocks.1.hook_resid_post", _mean_score, threshold=thr, name="g")
    for site in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):  # pre-pass, then inline
        gens = generate(tiny, PROMPTS, [AddVector(site, v, gate=g)], max_new_tokens=3, progress=False,
                        return_details=True)
        got = torch.tensor([x.gates["g"]["score"] for x in gens])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert [x.gates["g"]["scale"] for x in gens] == (want > thr).float().tolist()
    with pytest.raises(EditError, match="pre-pass"):
        with steerlens.steer(tiny, [AddVector("blocks.0.hook_resid_post", v, gate=g)]):
            pass


def test_soft_gate_scales_the_edit(tiny):
    v = torch.randn(tiny.d_model)
    site = Site.resid(1)
    g = FunctionGate("blocks.0.hook_resid_post", lambda a: torch.full(a.shape[:2], 0.3), threshold=0.0,
                     temperature=1.0)
    before = capture(tiny, PROMPTS, [site], progress=False)[site]
    after = capture(tiny, PROMPTS, [site], progress=False, edits=[AddVector(site, v, 2.0, gate=g)])[site]
    s = torch.sigmoid(torch.tensor(0.3))
    torch.testing.assert_close(after - before, (2.0 * s * v).expand_as(before), atol=1e-5, rtol=0)


def test_token_gate_switches_per_token(tiny):
    """A token gate opens on some generated tokens and not others; closed tokens get no delta."""
    state_resets = []

    class Alternating(FunctionGate):
        def update(self, scores, state):
            state_resets.append(len(state))
            n = state.get("n", 0)
            state["n"] = n + scores.shape[1]
            cols = torch.arange(n, n + scores.shape[1])
            return (cols % 2 == 0).float().expand_as(scores)

    g = Alternating("blocks.0.hook_resid_post", _mean_score, mode="token", name="alt")
    e = AddVector("blocks.1.hook_resid_post", torch.randn(tiny.d_model), 3.0, gate=g)
    res = generate(tiny, PROMPTS[:2], [e], max_new_tokens=4, progress=False, trace=True, batch_size=2)
    recs = res.trace.records
    assert {r["gate_scale"] for r in recs} == {0.0, 1.0}
    for r in recs:
        assert (r["delta_norm"] > 0) == (r["gate_scale"] > 0)
    generate(tiny, PROMPTS[:2], [e], max_new_tokens=2, progress=False, batch_size=2)
    assert state_resets.count(0) == 2  # fresh per-row state for each generation


def test_token_gate_downstream_of_its_edit_is_an_error(tiny):
    g = FunctionGate("blocks.1.hook_resid_post", _mean_score, mode="token")
    with pytest.raises(EditError, match="downstream"):
        generate(tiny, PROMPTS[:1], [AddVector("blocks.0.hook_resid_post", torch.ones(tiny.d_model), gate=g)],
                 max_new_tokens=2, progress=False)


def test_trace_records_plot_and_jsonl(tiny, tmp_path):
    def delta(act, info):
        info.report("act_norm", act.float().norm(dim=-1), per_token=True)
        info.report("pair", torch.stack([act[..., 0].mean(1), act[..., 1].mean(1)], -1))
        return torch.ones_like(act)

    g = FunctionGate("blocks.0.hook_resid_post", _mean_score, threshold=-1e9, name="open")
    edits = [FunctionEdit("blocks.1.hook_resid_post", delta, 2.0, gate=g, name="fn"),
             AddVector("blocks.0.attn.hook_z[1]", torch.ones(1, tiny.d_head), 1.0, name="head")]
    res = generate(tiny, PROMPTS, edits, max_new_tokens=5, progress=False, trace=True, return_details=True)
    tr = res.trace
    n_tok = [len(r.token_ids) + int(r.finished) for r in res]
    assert len(tr) == 2 * sum(n_tok)
    fn = [r for r in tr.records if r["edit"] == "fn"]
    assert all(r["gate_scale"] == 1.0 and isinstance(r["pair"], list) and len(r["pair"]) == 2 for r in fn)
    torch.testing.assert_close(torch.tensor([r["delta_norm"] for r in fn]),
                               torch.full((len(fn),), 2.0 * tiny.d_model ** 0.5), atol=1e-3, rtol=0)
    assert [r["token"] for r in tr.for_input(0) if r["edit"] == "head"] == list(range(n_tok[0]))
    assert "".join(r["token_text"] for r in tr.for_input(0) if r["edit"] == "head").startswith(res[0].text[:3])
    tr.write_jsonl(tmp_path / "trace.jsonl")
    back = Trace.read_jsonl(tmp_path / "trace.jsonl")
    assert back.records == json.loads(json.dumps(tr.records))
    tr.plot(0, tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 5000
    assert generate(tiny, PROMPTS, edits, max_new_tokens=5, progress=False).trace is None


def test_logprobs_of_generation_match_teacher_forcing(tiny):
    """Per-step log-probs recorded while generating equal the teacher-forced log-probs of the
    same continuation, for a per-token edit on the current last position."""
    e = FunctionEdit("blocks.0.hook_resid_post", lambda a, info: torch.tanh(a) * 5, positions="current_last")
    gens = generate(tiny, PROMPTS, [e], max_new_tokens=6, progress=False, return_details=True, logprobs=True)
    lps = response_logprobs(tiny, [(g.prompt, g.token_ids) for g in gens], [e])
    for g, lp in zip(gens, lps):
        torch.testing.assert_close(lp, torch.tensor(g.logprobs), atol=1e-4, rtol=0)
