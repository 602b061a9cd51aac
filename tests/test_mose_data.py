"""MoSE's authors' TruthfulQA data (issue #25, data item 4): their chat format with a system
prompt, the answer read as a finished turn, first correct vs first incorrect answer."""

import pytest
import torch

import steerlens
from steerlens.evals import data as D
from steerlens.hooks.batching import tokenize_items
from steerlens.pipeline import make_steerer
from steerlens.pipeline.fitdata import FIT_TASKS, fit_data


def _ex(i, q, correct, incorrect, best=None):
    return D.Example(f"truthfulqa:{i}", q, "truthfulqa", "fit",
                     {"best": best or correct[0], "correct": correct, "incorrect": incorrect,
                      "category": "Misc", "type": "Adversarial"})


EXS = [_ex(i, f"Question number {i}?", [f"true {i} a", f"true {i} b"], [f"false {i} a", f"false {i} b"])
       for i in range(6)]


def test_pairs_take_the_first_answers_in_their_format():
    d = D.truthfulness_mose_pairs_from(EXS)
    assert d.pos[2] == ("Answer the question concisely. Q: Question number 2? A:", "true 2 a")
    assert d.neg[2] == ("Answer the question concisely. Q: Question number 2? A:", "false 2 a")
    assert d.system == D.MOSE_SYSTEM and d.close_turn and d.chat is True
    assert d.position == "response_mean" and d.ids == [e.id for e in EXS] and d.split == "fit"
    # the reading format is part of the fingerprint; data without one keeps its old fingerprint
    plain = D.ContrastiveData(d.pos, d.neg, d.position, d.ids, d.split, d.task)
    assert plain.fingerprint() != d.fingerprint()
    assert plain.fingerprint() == D.ContrastiveData(d.pos, d.neg, d.position, d.ids, d.split, d.task,
                                                    chat=None, system=None, close_turn=False).fingerprint()


def test_fit_task_is_registered(root):
    assert "truthfulness-mose" in FIT_TASKS
    d = fit_data("truthfulness-mose", n=5, data_root=root)
    assert len(d) == 5 and d.task == "truthfulness_mose" and d.close_turn
    exs = D.load_truthfulqa("fit", 5, 0, root=root)
    assert [p[1] for p in d.pos] == [e.meta["correct"][0] for e in exs]
    assert [p[1] for p in d.neg] == [e.meta["incorrect"][0] for e in exs]


def test_closed_turn_tokens_equal_the_templates_text(tiny):
    tok = tiny.tokenizer
    prompt, answer = D.MOSE_INSTRUCT.format(q="Why is the sky blue?"), "Rayleigh scattering"
    (ids, n), = tokenize_items(tiny, [(prompt, answer)], chat=True, system=D.MOSE_SYSTEM, close_turn=True)
    msgs = [{"role": "system", "content": D.MOSE_SYSTEM}, {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer}]
    full = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ids == list(full)
    end = tiny.turn_end_ids()
    assert end and ids[-len(end):] == end  # the end-of-turn tokens are response tokens
    (ids_open, n_open), = tokenize_items(tiny, [(prompt, answer)], chat=True, system=D.MOSE_SYSTEM)
    assert n_open == n and ids_open == ids[: len(ids) - len(end)]
    # plain text has no turns to close
    (ids_plain, _), = tokenize_items(tiny, [(prompt, answer)], chat=False, close_turn=True)
    assert ids_plain == tokenize_items(tiny, [(prompt, answer)], chat=False)[0][0]


def test_steerer_reads_with_the_datas_system_prompt_and_closed_turn(tiny):
    d = D.truthfulness_mose_pairs_from(EXS)
    st = make_steerer("caa", layer=1, alpha=1.0)
    acts = st.read_contrastive(tiny, d)
    site = next(iter(acts.pos))
    want = steerlens.capture(tiny, d.pos, [site], "response_mean", chat=True, system=d.system, close_turn=True,
                             progress=False)[site]
    torch.testing.assert_close(acts.pos[site], want)
    bare = steerlens.capture(tiny, d.pos, [site], "response_mean", chat=True, progress=False)[site]
    assert not torch.allclose(acts.pos[site], bare)


def test_mose_queries_read_the_system_prompt(tiny):
    d = D.truthfulness_mose_pairs_from(EXS * 2)
    st = make_steerer("mose", layer=1)
    acts = st.read_contrastive(tiny, d)
    st.fit(tiny, d, acts=acts)
    assert acts.query, "MoSE reads queries"
    site = next(iter(acts.query))
    prompts = [p for p, _ in d.pos]
    want = steerlens.capture(tiny, prompts, [site], "last", chat=True, system=d.system, progress=False)[site]
    torch.testing.assert_close(acts.query[site], want)
    bare = steerlens.capture(tiny, prompts, [site], "last", chat=True, progress=False)[site]
    assert not torch.allclose(acts.query[site], bare)


def test_no_questions_is_an_error():
    with pytest.raises(D.DataError):
        D.truthfulness_mose_pairs_from([])
