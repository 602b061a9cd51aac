"""The evaluation's shared runs (:mod:`steerlens.evals.reuse`): the fast path (unsteered pass shared,
closed-gate rows copied, rows copied between configurations) gives the records of the full path,
on the tiny model, for gated configurations with rows open and closed; and run_spec uses it."""

import json

import pytest
import torch

from steerlens.evals.report import run_eval
from steerlens.evals.reuse import SharedRuns
from steerlens.hooks import AddVector, FunctionGate, GateProbe, generate, next_token_logprobs, response_logprobs
from steerlens.pipeline.spec import normalise_spec
from steerlens.pipeline.specrun import run_spec
from tiny_specs import tiny_spec


class Gated:
    """A steerer stand-in: one constant edit, gated by ``sign · <h, u>`` at ``gate_layer``."""

    def __init__(self, name, d, edit_layer, gate_layer, thr, sign=1.0, mode="prompt", seed=0, strength=6.0):
        g = torch.Generator().manual_seed(seed)
        self.name, self.edit_layer, self.gate_layer, self.thr, self.sign, self.mode = name, edit_layer, gate_layer, thr, sign, mode
        self.u = torch.randn(d, generator=torch.Generator().manual_seed(123))
        self.v = strength * torch.randn(d, generator=g)

    def edits(self, model, prompts, alpha=None):
        gate = FunctionGate(f"blocks.{self.gate_layer}.hook_resid_post", lambda h: self.sign * (h @ self.u),
                            mode=self.mode, threshold=self.sign * self.thr, name=f"gate-{self.name}")
        return [AddVector(f"blocks.{self.edit_layer}.hook_resid_post", self.v, alpha=1.0 if alpha is None else alpha,
                          gate=gate, name=f"edit-{self.name}")]


class Both:
    def __init__(self, steerers, name):
        self.steerers, self.name = list(steerers), name

    def edits(self, model, prompts, alpha=None):
        return [e for s in self.steerers for e in s.edits(model, prompts, alpha)]


def _threshold(tiny, root, layer):
    """The median gate score over some evaluation prompts, so the gates open on about half of them."""
    from steerlens.evals import data as D

    prompts = [e.prompt for e in D.load_harmful("test", 4, 0, root=root) + D.load_harmless("test", 4, 0, root=root)]
    probe = GateProbe([FunctionGate(f"blocks.{layer}.hook_resid_post",
                                    lambda h: h @ torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(123)))])
    next_token_logprobs(tiny, prompts, [], probe=probe)
    s = probe.score[0].sort().values
    return float((s[3] + s[4]) / 2)  # between two readings: no score sits on the threshold


def _comparable(rec):
    d = rec.to_dict()
    d.pop("wall_time_s", None)
    ex = d["extra"]
    trace = ex.pop("trace", None)
    return d, trace


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


def _configs(tiny, root):
    thr = _threshold(tiny, root, 1)
    # a: edit at layer 0, gate at layer 1 (downstream: read in the runners' pre-pass)
    # b: the inverted gate, edit at layer 1 (same hook as a's gate: a's reading is unaffected by it)
    a = Gated("a", tiny.d_model, 0, 1, thr, seed=1)
    b = Gated("b", tiny.d_model, 1, 1, thr, sign=-1.0, seed=2)
    ungated = [AddVector("blocks.1.hook_resid_post", 3 * torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(5)))]
    return {"unsteered": None, "plain": ungated, "a": a, "b": b, "a+b": Both([a, b], "a+b")}


def test_fast_path_gives_the_full_path_records(tiny, root):
    configs = _configs(tiny, root)
    kw = dict(limit=4, seed=0, split="test", batch_size=4, data_root=root, plots=False, progress=False,
              task_kwargs={"safety": {"max_new_tokens": 6, "trace": True, "sets": ["harmful", "harmless"]},
                           "truthfulness": {"ab": False}, "utility": {"ppl": True}})
    tasks = ["safety", "truthfulness", "utility"]
    old = run_eval(tiny, tasks, configs, reuse_unsteered=False, **kw)
    shared = SharedRuns(tiny, configs)
    import steerlens.evals.report as report

    made = []
    orig = report.SharedRuns
    report.SharedRuns = lambda *a, **k: made.append(shared) or shared  # noqa: E731 - see the stats below
    try:
        new = run_eval(tiny, tasks, configs, reuse_unsteered=True, **kw)
    finally:
        report.SharedRuns = orig
    assert made, "run_eval did not use SharedRuns"
    # the test covers every path: rows run steered, copied from the unsteered pass, copied from another config
    st = shared.stats
    assert st["run"] > 0 and st["copied_unsteered"] > 0 and st["copied_other"] > 0, st
    assert len(old) == len(new)
    opened = {"a": 0, "b": 0}
    for o, n in zip(old, new):
        (do, to), (dn, tn) = _comparable(o), _comparable(n)
        assert do == dn, (o.steering, o.metric, _diff(do, dn))
        if to is not None:  # a copied row carries its source's trace: every record of the fast trace is in the full one
            old_recs = [json.dumps(r, sort_keys=True) for r in to]
            assert all(json.dumps(r, sort_keys=True) in old_recs for r in tn), (o.steering, o.metric)
            if o.steering in ("plain",):
                assert sorted(old_recs) == sorted(json.dumps(r, sort_keys=True) for r in tn)
        for out in o.extra.get("outputs", []):
            for k in opened:
                opened[k] += out.get("gates", {}).get(f"gate-{k}", {}).get("scale", 0.0) > 0
    assert opened["a"] > 0 and opened["b"] > 0  # both gates open on some rows (and close on others)


def test_token_gates_and_plain_edits_are_never_copied(tiny, root):
    thr = _threshold(tiny, root, 1)
    tok = Gated("t", tiny.d_model, 1, 1, thr, mode="token", seed=3)
    prompts = ["Tell me a joke.", "How do I bake bread?", "Name a colour.", "What is 2 + 2?"]
    shared = SharedRuns(tiny, {"unsteered": None, "tok": tok})
    from steerlens.evals.tasks import edits_for

    got = shared.run("generate", tok, prompts, edits_for(tok, tiny, prompts), max_new_tokens=5, batch_size=4,
                     return_details=True)
    assert shared.stats["run"] == len(prompts) and shared.stats["copied_unsteered"] == 0
    want = generate(tiny, prompts, tok.edits(tiny, prompts), max_new_tokens=5, batch_size=4, progress=False,
                    return_details=True)
    assert [g.text for g in got] == [g.text for g in want] and [g.gates for g in got] == [g.gates for g in want]


def test_only_runs_whole_batches_as_in_the_whole_run(tiny):
    prompts = ["a short one", "a somewhat longer prompt than the first one", "mid length prompt", "x", "y z"]
    pairs = [(p, " answer " + p) for p in prompts]
    full = response_logprobs(tiny, pairs, None, batch_size=2)
    part = response_logprobs(tiny, pairs, None, batch_size=2, only=[1])
    got = [i for i, t in enumerate(part) if t is not None]
    assert 1 in got and len(got) == 2  # the batch holding input 1 (the longest), whole (batches of 2)
    assert all(torch.equal(full[i], part[i]) for i in got)
    nt = next_token_logprobs(tiny, prompts, None, batch_size=2, only=[1])
    whole = next_token_logprobs(tiny, prompts, None, batch_size=2)
    assert nt[1] is not None and torch.equal(nt[1], whole[1]) and sum(t is not None for t in nt) == 2
    gens = generate(tiny, prompts, None, max_new_tokens=3, batch_size=2, progress=False, only=[0])
    assert gens[0] == generate(tiny, prompts, None, max_new_tokens=3, batch_size=2, progress=False)[0]
    with pytest.raises(ValueError):
        next_token_logprobs(tiny, prompts, None, only=[7])


SPEC = tiny_spec(gate='{ kind = "scs", layer = 1, rank_benign = 2, rank_target = 2, fpr = 0.3 }', n=12,
                 baseline=False, eval_toml='tasks = ["safety", "utility"]\nlimit = 3\nmax_new_tokens = 3\ntrace = true\n'
                 'options = { utility = { ppl = false } }\n')


def test_run_spec_uses_the_shared_runs_and_matches_the_full_path(tiny, tmp_path, root):
    spec = normalise_spec(__import__("tomllib").loads(SPEC))
    fast = run_spec(spec, tiny, tmp_path / "fast", progress=False)
    full = run_spec(spec, tiny, tmp_path / "full", progress=False, reuse_unsteered=False)
    meta = json.loads((tmp_path / "fast" / "eval" / "results.json").read_text())["meta"]
    assert meta["reuse"]["rows"] > 0 and meta["reuse"]["copied_unsteered"] > 0
    assert "reuse" not in json.loads((tmp_path / "full" / "eval" / "results.json").read_text())["meta"]
    for o, n in zip(full["records"], fast["records"]):
        assert _comparable(o)[0] == _comparable(n)[0], (o.steering, o.metric)
