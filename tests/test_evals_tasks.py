"""Tasks, steering resolution, reports and the CLI on the tiny random model (fast), plus a small
integration check on the default model (slow)."""

import json

import pytest
import torch

import steerlens
from steerlens.evals import data as D
from steerlens.evals.judges import RefusalJudge, Verdict
from steerlens.evals.report import load_results, run_eval
from steerlens.evals.steering import resolve_edits
from steerlens.evals.tasks import ab_values, edits_for, mc_values, safety_task, truthfulness_task, utility_task
from steerlens.hooks.edits import AddVector, EditError



class RowSteerer:
    """A fitted-steerer stand-in: one vector per prompt (row i gets i * unit)."""

    name = "rows"

    def __init__(self, site, d):
        self.site, self.d, self.calls = site, d, []

    def edits(self, model, prompts, alpha=None):
        self.calls.append(list(prompts))
        v = torch.arange(len(prompts), dtype=torch.float32)[:, None] * torch.ones(len(prompts), self.d)
        return [AddVector(self.site, v, alpha=1.0 if alpha is None else alpha)]


def test_resolve_edits_protocol(tiny):
    site = "blocks.1.hook_resid_post"
    assert resolve_edits(None, tiny, ["a"]) == []
    e = AddVector(site, torch.ones(tiny.d_model), alpha=2.0)
    out = resolve_edits([e], tiny, ["a"], alpha=0.5)
    assert out[0].alpha == 0.5 and e.alpha == 2.0  # caller's edit untouched
    st = RowSteerer(site, tiny.d_model)
    out = resolve_edits(st, tiny, ["a", "b"], alpha=3.0)
    assert out[0].alpha == 3.0 and out[0].vector.shape == (2, tiny.d_model)
    with pytest.raises(EditError):
        resolve_edits(object(), tiny, ["a"])


def test_edits_for_expands_per_input_rows(tiny):
    st = RowSteerer("blocks.1.hook_resid_post", tiny.d_model)
    out = edits_for(st, tiny, ["q0", "q1", "q0", "q1", "q2"])
    assert st.calls == [["q0", "q1", "q2"]]  # resolved once per distinct prompt
    assert out[0].vector[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 2.0]


def test_kl_zero_unsteered_and_identity_positive_when_steered(tiny, root):
    site = "blocks.1.hook_resid_post"
    kw = dict(limit=3, root=root, progress=False, batch_size=4)
    get = lambda recs, m: next(r for r in recs if r.metric == m)  # noqa: E731
    base = utility_task(tiny, None, **kw)
    assert get(base, "utility/kl").value == 0.0
    ident = utility_task(tiny, [AddVector(site, torch.randn(tiny.d_model), alpha=0.0)], **kw)
    assert get(ident, "utility/kl").value == pytest.approx(0.0, abs=1e-6)
    assert get(ident, "utility/ppl").value == pytest.approx(get(base, "utility/ppl").value, rel=1e-5)
    steered = utility_task(tiny, [AddVector(site, 5 * torch.randn(tiny.d_model), alpha=1.0)], **kw)
    assert get(steered, "utility/kl").value > 1e-4
    for r in base:
        assert r.split == "test" and r.n == len(r.sample_ids) == 3 and r.ci_low <= r.value <= r.ci_high
    test_ids = {e.id for e in D.load_mmlu_ab("test", root=root)}
    assert set(get(base, "utility/mmlu_ab").sample_ids) <= test_ids


def test_truthfulness_ranges_and_heldout(tiny, root):
    recs = truthfulness_task(tiny, None, limit=3, root=root, progress=False, batch_size=8)
    by = {r.metric: r for r in recs}
    assert set(by) == {"truthfulqa/mc1", "truthfulqa/mc2", "truthfulqa/ab"}
    assert 0 <= by["truthfulqa/mc2"].value <= 1 and by["truthfulqa/mc1"].value in (0, 1 / 3, 2 / 3, 1)
    fit = {q.id for q in D.load_truthfulqa("fit", root=root)}
    assert not fit & set(by["truthfulqa/mc1"].sample_ids)
    # MC2 is invariant to how the choices are batched
    again = truthfulness_task(tiny, None, limit=3, root=root, progress=False, batch_size=1)
    assert {r.metric: r for r in again}["truthfulqa/mc2"].value == pytest.approx(by["truthfulqa/mc2"].value, abs=1e-5)


class HalfUnparseable(RefusalJudge):
    name = "fake"

    def judge(self, prompts, replies):
        return [Verdict("unparseable", "?") if i % 2 == 0 else Verdict("refusal", "x") for i in range(len(replies))]


def test_safety_unparseable_excluded_and_counted(tiny, root):
    recs = safety_task(tiny, None, limit=3, root=root, progress=False, max_new_tokens=3, judge=HalfUnparseable(),
                       sets=["harmful"])
    ref = next(r for r in recs if r.metric == "refusal/harmful")
    assert ref.n == 1 and ref.value == 1.0 and ref.extra["n_unparseable"] == 2 and ref.extra["n_total"] == 3
    assert len(ref.extra["outputs"]) == 3


def test_run_eval_writes_outputs(tiny, root, tmp_path):
    site = "blocks.1.hook_resid_post"
    configs = {"none": None, "vec": [AddVector(site, torch.randn(tiny.d_model), alpha=3.0)]}
    recs = run_eval(tiny, ["safety", "utility"], configs, limit=2, out_dir=tmp_path, data_root=root, progress=False,
                    task_kwargs={"safety": {"max_new_tokens": 4, "sets": ["harmful"]}})
    meta, loaded = load_results(tmp_path)
    assert [r.metric for r in loaded] == [r.metric for r in recs]
    assert meta["model"]["name"] and meta["split"] == "test" and set(meta["task_wall_time_s"]) == {
        "none/safety", "none/utility", "vec/safety", "vec/utility"}
    assert all("outputs" not in r.extra for r in loaded)
    samples = [json.loads(l) for l in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["steering"] for s in samples} == {"none", "vec"}
    md = (tmp_path / "results.md").read_text()
    assert "refusal/harmful" in md and "utility/kl" in md
    assert (tmp_path / "metrics.png").stat().st_size > 1000 and (tmp_path / "tradeoff.png").stat().st_size > 1000


def test_cli_eval(root, tmp_path, capsys):
    from steerlens.cli import main

    rc = main(["eval", "--tasks", "utility", "--limit", "2", "--model", "tiny-random", "--data-dir", str(root),
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    _, recs = load_results(tmp_path / "o")
    assert {r.metric for r in recs} == {"utility/mmlu_ab", "utility/kl", "utility/ppl"}
    assert main(["eval", "--tasks", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["eval", "--tasks", "utility", "--model", "tiny-random", "--steering", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["eval", "--tasks", "utility", "--data-dir", str(tmp_path / "nodata"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown task" in err and "no such artifact" in err and "STEERLENS_DATA" in err


@pytest.mark.slow
def test_default_model_safety_and_steering_effect(smol, root):
    """The unsteered default model complies with harmful requests; a response-side mean-difference
    vector (refusal - compliance, layer 10, alpha 1) makes it refuse (default-model.md; at alpha 2
    about half of the replies are already judged degenerate)."""
    site = "blocks.10.hook_resid_post"
    cd = D.safety_response_pairs("fit", n=48, seed=0, root=root)
    acts = steerlens.capture(smol, cd.pos + cd.neg, [site], position="response_mean", progress=False)
    a = next(iter(acts.values()))
    v = a[: len(cd)].mean(0) - a[len(cd):].mean(0)
    kw = dict(limit=8, root=root, progress=False, sets=["harmful"], max_new_tokens=24, batch_size=8)
    base = {r.metric: r for r in safety_task(smol, None, **kw)}
    steered = {r.metric: r for r in safety_task(smol, [AddVector(site, v, alpha=1.0)], name="md", **kw)}
    print(f"\nunsteered {base['refusal/harmful'].fmt()}  steered {steered['refusal/harmful'].fmt()}  "
          f"degenerate {steered['degenerate/harmful'].fmt()}")
    assert base["refusal/harmful"].value <= 0.25
    assert steered["refusal/harmful"].value >= base["refusal/harmful"].value + 0.25  # seen: 0/8 -> 4/8
    assert steered["refusal/harmful"].steering == "md"
    assert set(steered["refusal/harmful"].sample_ids) <= {e.id for e in D.load_harmful("test", root=root)}


def test_mc_values_match_direct_log_likelihoods(tiny):
    """MC1/MC2 from mc_values equal the definitions applied to response_logprobs by hand."""
    q = D.Example(id="q:0", prompt="What colour is the sky?", split="test", source="hand",
                  meta={"best": "Blue.", "correct": ["Blue.", "Often blue."], "incorrect": ["Green.", "Purple."]})
    mc1, mc2, n = mc_values(tiny, [q], batch_size=4)
    lps = steerlens.response_logprobs(tiny, [(q.prompt, a) for a in ["Blue.", "Often blue.", "Green.", "Purple."]])
    ll = torch.tensor([float(t.sum()) for t in lps], dtype=torch.float64)
    assert n == 4
    assert mc1 == [float(ll[0] > ll[2:].max())]
    assert abs(mc2[0] - float(torch.softmax(ll, 0)[:2].sum())) < 1e-9
    ab = [D.Example(id=f"ab:{i}", prompt=p, split="test", source="hand", meta={"correct": c, "incorrect": w})
          for i, (p, c, w) in enumerate([("Pick one.", " (A)", " (B)"), ("Is fire cold?", "No.", "Yes, very cold.")])]
    lp = [float(t.sum()) for t in steerlens.response_logprobs(
        tiny, [(e.prompt, e.meta[k]) for e in ab for k in ("correct", "incorrect")])]
    assert ab_values(tiny, ab) == [float(lp[0] > lp[1]), float(lp[2] > lp[3])]


def test_optional_parts_are_left_out_on_request(tiny, root):
    """``ab=False`` / ``ppl=False`` (spec: ``[eval.options]``) drop those metrics and nothing else."""
    from steerlens.evals.tasks import truthfulness_task, utility_task

    full = {r.metric for r in truthfulness_task(tiny, None, limit=3, progress=False)}
    short = {r.metric for r in truthfulness_task(tiny, None, limit=3, progress=False, ab=False)}
    assert full - short == {"truthfulqa/ab"}
    full = {r.metric for r in utility_task(tiny, None, limit=3, progress=False)}
    short = {r.metric for r in utility_task(tiny, None, limit=3, progress=False, ppl=False)}
    assert full - short == {"utility/ppl"}
