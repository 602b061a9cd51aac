"""The REAL authors' TruthfulQA protocol as data (issue #25): every answer as a plain-text row read at
the last token, their two halves, ITI's σ from a bank of other texts, and MC scoring in plain text
with or without the TruthfulQA primer (tiny random model; the real data directory)."""

import pytest
import torch

from steerlens.evals import data as D
from steerlens.evals.tasks import mc_values
from steerlens.hooks.activations import capture
from steerlens.interp.metrics import mc2_metric
from steerlens.interp.patching import metric_values
from steerlens.pipeline import ContrastiveActs, PipelineError, Selection, make_steerer
from steerlens.pipeline.editors import ITIEditor
from steerlens.pipeline.fitdata import fit_data
from steerlens.pipeline.selection import all_head_modules


def test_halves_are_the_dataset_in_order_cut_in_two(root):
    a, b = D.truthfulqa_halves(root)
    ids = [int(e.id.split(":")[1]) for e in a + b]
    assert ids == list(range(len(ids))) and len(a) - len(b) in (0, 1)


def test_mc_rows_are_every_answer_of_each_question_with_a_bank(root):
    qs = D.load_truthfulqa("fit", 5, root=root)
    d = D.truthfulness_mc_rows_from(qs, seed=0, split="fit")
    n_true = sum(1 + len([c for c in q.meta["correct"] if c != q.meta["best"]]) for q in qs)
    n_false = sum(len(q.meta["incorrect"]) for q in qs)
    assert (len(d.pos), len(d.neg), len(d.bank)) == (n_true, n_false, n_true + n_false)
    assert d.pos[0] == f"Q: {qs[0].prompt} A: {qs[0].meta['best']}" and d.chat is False and not d.paired
    # the bank's extra question is one of the examples given (a fold's σ never reads another fold)
    prompts = {q.prompt for q in qs}
    assert all(t.rsplit(" Q: ", 1)[1] in prompts for t in d.bank)
    assert set(d.pos_ids) == {q.id for q in qs}
    assert d.fingerprint() != D.truthfulness_mc_rows_from(qs, seed=1, split="fit").fingerprint()  # other bank draw
    assert fit_data("truthfulness-mc", 5, data_root=root).fingerprint() == d.fingerprint()


def test_rows_are_read_at_the_last_token_of_plain_text(tiny, root):
    d = D.truthfulness_mc_rows_from(D.load_truthfulqa("fit", 3, root=root), split="fit")
    st = make_steerer("iti", heads=2)
    acts = st.read_contrastive(tiny, d)
    site = st.selector.candidate_sites(tiny)[1]
    want = capture(tiny, d.pos, [site], "last", chat=False, progress=False)[site]
    torch.testing.assert_close(acts.pos[site], want)
    chat = capture(tiny, d.pos, [site], "last", chat=True, progress=False)[site]
    assert not torch.allclose(chat, want)
    assert acts.paired is False and acts.n_pos == len(d.pos) and acts.n_neg == len(d.neg)


def test_sigma_bank_is_the_std_of_the_bank_projections(tiny, root):
    d = D.truthfulness_mc_rows_from(D.load_truthfulqa("fit", 6, root=root), split="fit")
    mods = all_head_modules(tiny)[:2]
    sel = Selection(mods, torch.ones(2), weighting="ones")
    bank = make_steerer("iti", heads=2, sigma_over="bank").fit(tiny, d, selection=sel)
    plain = make_steerer("iti", heads=2).fit(tiny, d, selection=sel)
    # same direction, σ measured on the bank texts instead of the labelled rows
    for vb, vp in zip(bank.editor.vectors, plain.editor.vectors):
        torch.testing.assert_close(vb / vb.norm(), vp / vp.norm())
    site = mods[0]
    z = capture(tiny, d.bank, [site], "last", chat=False, progress=False)[site][:, 0].float()
    theta = plain.editor.thetas()[0]
    assert bank.editor.sigmas()[0] == pytest.approx(float((z @ theta).std()), rel=1e-4)
    assert bank.editor.sigmas()[0] != pytest.approx(plain.editor.sigmas()[0], rel=1e-3)


def test_sigma_bank_without_a_bank_is_a_clear_error(tiny, root):
    pairs = fit_data("truthfulness", 4, data_root=root)
    with pytest.raises(PipelineError, match="bank"):
        make_steerer("iti", heads=2, sigma_over="bank").fit(tiny, pairs)
    with pytest.raises(PipelineError, match="sigma_over"):
        ITIEditor(sigma_over="elsewhere")


def test_real_paper_preset_fits_on_the_rows(tiny, root):
    d = fit_data("truthfulness-mc", 12, data_root=root)
    st = make_steerer("real", preset="paper", heads=2, vqae={"epochs": 2}, saturation_max=None)
    st.fit(tiny, d)
    assert st.editor.params["sigma_over"] == "bank" and len(st.selection.modules) == 2
    assert st.fit_info["data"]["task"] == "truthfulness_mc_rows"


@pytest.mark.parametrize("fmt", ["qa", "qa_primer"])
def test_plain_mc_formats_score_the_answer_after_the_plain_prompt(tiny, root, fmt):
    from steerlens.hooks import response_logprobs

    qs = D.load_truthfulqa("val", 2, root=root)
    mc1, mc2, n = mc_values(tiny, qs, fmt=fmt)
    prompt, pre = D.mc_prompt(qs[0].prompt, fmt)
    assert prompt.endswith(f"Q: {qs[0].prompt}\nA:") and pre == " "
    assert (D.QA_PRIMER in prompt) == (fmt == "qa_primer")
    trues = [qs[0].meta["best"]] + [a for a in qs[0].meta["correct"] if a != qs[0].meta["best"]]
    answers = trues + qs[0].meta["incorrect"]
    ll = torch.tensor([float(t.sum()) for t in response_logprobs(tiny, [(prompt, " " + a) for a in answers],
                                                                   chat=False)], dtype=torch.float64)
    assert mc2[0] == pytest.approx(float(torch.softmax(ll, 0)[:len(trues)].sum()), rel=1e-5)
    assert mc2 != mc_values(tiny, qs)[1]  # the chat template scores differently
    with pytest.raises(ValueError, match="MC format"):
        D.mc_prompt("q", "primer")


def test_mc2_metric_in_plain_format_equals_mc_values(tiny, root):
    qs = D.load_truthfulqa("val", 3, root=root)
    metric = mc2_metric(qs, fmt="qa")
    assert metric.meta["chat"] is False
    got = metric_values(tiny, metric).double()
    torch.testing.assert_close(got, torch.tensor(mc_values(tiny, qs, fmt="qa")[1], dtype=torch.float64),
                               rtol=1e-4, atol=1e-5)


def test_ode_rows_are_every_answer_with_a_newline_and_fit_odesteer_paper(tiny, root):
    """ODESteer's authors' barrier data (fit task truthfulness-ode): every answer as "Q: q\\nA: a",
    read at the last token of plain text, no bank; the paper preset fits its barrier on it."""
    qs = D.load_truthfulqa("fit", 6, root=root)
    d = fit_data("truthfulness-ode", n=6, data_root=root)
    mc = D.truthfulness_mc_rows_from(qs, seed=0, split="fit")
    assert d.pos == [t.replace(" A: ", "\nA: ", 1) for t in mc.pos] and len(d.neg) == len(mc.neg)
    assert d.pos[0] == f"Q: {qs[0].prompt}\nA: {qs[0].meta['best']}"
    assert d.bank is None and d.chat is False and d.position == "last" and d.task == "truthfulness_ode_rows"
    st = make_steerer("odesteer", preset="paper", layer=1, n_features=64)
    acts = st.read_contrastive(tiny, d)
    site = next(iter(acts.pos))
    want = capture(tiny, d.pos, [site], "last", chat=False, progress=False)[site]
    torch.testing.assert_close(acts.pos[site], want)
    st.fit(tiny, d, acts=acts)
    assert st.editor.fitted and st.editor.stats["n_pos"] == len(d.pos) and st.editor.stats["n_neg"] == len(d.neg)
