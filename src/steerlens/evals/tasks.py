"""Evaluation tasks: safety, truthfulness, utility.

Each task is ``task(model, steering=None, *, limit=None, seed=0, split="test", batch_size=...,
alpha=None, ...) -> list[Record]``. ``steering`` follows the project protocol (``None``, a list
of edits, or a fitted steerer; see :mod:`steerlens.evals.steering`). Every record carries its
split and the ids of the examples it was computed on, its n and a bootstrap 95% interval.

Default sizes (``limit=None``; chosen so the three tasks on the unsteered default model fit in
15 minutes on 2 shared CPU cores, see :data:`DEFAULT_LIMITS`): the whole held-out test split of
every set except harmless Alpaca (100 of 6266 prompts) and the utility KL / perplexity prompts
(100 Alpaca test prompts each). ``limit=N`` caps every set at N examples (seeded subsample).

Choices (parameters):

* safety: greedy generation, ``max_new_tokens=48``; judge = the trained
  :class:`~.judges.ClassifierJudge` unless ``judge`` is given (``"pattern"`` for the phrase list).
  ``refusal/<set>`` is the not-complied rate: refusals plus deflections (:data:`~.judges.NOT_COMPLIED`);
  ``deflection/<set>`` reports deflections on their own. Rates are over the judged replies;
  ``unparseable`` verdicts (model judges) are excluded from the denominator and counted in ``extra``.
* truthfulness: MC1 = the Best Answer has a higher total log-likelihood than every incorrect
  answer; MC2 = sum of p(true answers) / sum of p(all answers), p = exp(total log-likelihood of
  the answer tokens given the question in the chat template); choices are scored as full answers
  (no length normalisation, ``length_norm`` to change it). A/B accuracy: log-likelihood of the
  reply ``"(A)"`` vs ``"(B)"`` after the item's prompt (the CAA format puts the choices in the
  prompt, the answer letter in parentheses in the reply).
* truthfulqa_gen: open-ended TruthfulQA on the same held-out questions as the MC task: one sampled
  answer per question with ODESteer's system prompt and decoding (temperature 0.7, top-p 0.9,
  repetition penalty 1.1, 50 new tokens; :data:`~.tqa_gen.DECODING`), seeded (the same seed and
  batch size give the same text), scored offline by the TruthfulQA paper's BLEU / ROUGE-L
  comparison with the correct and incorrect reference answers and an informativeness check
  (:mod:`~.tqa_gen`; the papers' 7B GPT-judges do not run here).
* utility: MMLU A/B the same way; KL(unsteered || steered) of the next-token distribution after
  benign prompts (Alpaca, last prompt token, chat template); perplexity of benign text = Alpaca
  instructions as plain text (no chat template) conditioned on their first word, reported as the
  geometric mean over texts of the per-text perplexity (``exp`` of the mean per-token NLL), CI by
  bootstrap on the log scale.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..hooks import generate, next_token_logprobs, response_logprobs
from ..hooks.edits import Edit
from . import data as D
from .judges import NOT_COMPLIED, RefusalJudge, get_judge
from .stats import Record, bootstrap_ci, summarize
from . import tqa_gen as G
from .steering import resolve_edits, steering_name

DEFAULT_LIMITS: dict[str, Optional[int]] = {
    "harmful": None,         # 160 test prompts (deduplicated pool of 800)
    "harmless": 100,         # of 6266 Alpaca test prompts
    "xstest_safe": None,     # 50
    "xstest_unsafe": None,   # 40
    "heldout": 120,          # of ~1100 test prompts of 6 held-out sources, balanced
    "wrapped": None,         # the harmful test prompts (160), wrapped
    "truthfulqa_mc": None,   # 164 questions
    "truthfulqa_ab": None,   # 164
    "truthfulqa_gen": None,  # 164 questions (open-ended answers)
    "mmlu_ab": None,         # 114
    "kl": 100,
    "ppl": 100,
}


def _limit(name: str, limit: Optional[int]) -> Optional[int]:
    return DEFAULT_LIMITS.get(name) if limit is None else limit


def edits_for(steering: Any, model, prompts: Sequence[str], alpha: Optional[float] = None) -> list[Edit]:
    """Edits for a list of prompts with repeats (e.g. one per answer choice): the steering is
    resolved once per distinct prompt, and per-input edits are expanded to one row per entry."""
    if steering is None:
        return []
    uniq: dict[str, int] = {}
    for p in prompts:
        uniq.setdefault(p, len(uniq))
    edits = resolve_edits(steering, model, list(uniq), alpha=alpha)
    if len(uniq) == len(prompts):
        return edits
    rows = torch.tensor([uniq[p] for p in prompts], dtype=torch.long)
    return [e.take(rows) for e in edits]  # shared edits return themselves


def _name(steering, name: Optional[str]) -> str:
    return name if name is not None else steering_name(steering)


# ---------------------------------------------------------------------------------------------
# safety


#: safety sets built only when named in ``sets``: harmful prompts of the sources no steerer is
#: fitted on, and the shared harmful prompts in held-out jailbreak wrappers (evals.safety_sources)
EXTRA_SAFETY_SETS = ("heldout", "wrapped")


def _safety_sets(split: str, limit: Optional[int], seed: int, root,
                 extra: Sequence[str] = ()) -> dict[str, list[D.Example]]:
    from . import safety_sources as S

    out = {
        "harmful": D.load_harmful(split, _limit("harmful", limit), seed, root=root),
        "harmless": D.load_harmless(split, _limit("harmless", limit), seed, root=root),
        "xstest_safe": D.load_xstest(split, "safe", _limit("xstest_safe", limit), seed, root=root),
        "xstest_unsafe": D.load_xstest(split, "unsafe", _limit("xstest_unsafe", limit), seed, root=root),
    }
    if "heldout" in extra:
        out["heldout"] = S.load_heldout_harmful(split, _limit("heldout", limit), seed, root=root)
    if "wrapped" in extra:
        out["wrapped"] = S.load_wrapped_harmful(split, _limit("wrapped", limit), seed, root=root)
    return out


def safety_task(model, steering=None, *, limit: Optional[int] = None, seed: int = 0, split: str = "test",
                batch_size: int = 16, alpha: Optional[float] = None, max_new_tokens: int = 48,
                judge: str | RefusalJudge | None = None, sets: Optional[Sequence[str]] = None,
                name: Optional[str] = None, root=None, progress: bool = True, trace: bool = False,
                shared=None) -> list[Record]:
    """Refusal rates on held-out harmful prompts (higher = safer), harmless Alpaca and XSTest
    safe prompts (over-refusal, lower is better), XSTest unsafe prompts; the degenerate-text rate
    next to each. Metrics: ``refusal/<set>`` and ``degenerate/<set>``; ``extra`` has the label
    counts, the judge's name and per-example outputs (``outputs``: id, reply, label, reason, and
    ``gates``: each gate's score and scale for that prompt when the steering is gated; ``extra["gates"]``
    summarises how many prompts each gate opened). With ``trace`` the per-token trace of every
    reply is kept in ``extra["trace"]`` (records tagged with the example id).

    ``shared``: a :class:`~.reuse.SharedRuns` of the evaluation (:func:`~.report.run_eval` passes
    one): the model passes go through it (unsteered pass shared, closed-gate rows copied)."""
    j = get_judge(judge)
    all_sets = _safety_sets(split, limit, seed, root, [s for s in sets or () if s in EXTRA_SAFETY_SETS])
    chosen = list(sets) if sets is not None else [s for s in all_sets if s not in EXTRA_SAFETY_SETS]
    for s in chosen:
        if s not in all_sets:
            raise ValueError(f"unknown safety set {s!r}; known: {list(all_sets) + list(EXTRA_SAFETY_SETS)}")
    sname = _name(steering, name)
    records = []
    for s in tqdm(chosen, desc=f"safety[{sname}]", disable=not progress, leave=False):
        exs = all_sets[s]
        if not exs:
            raise D.DataError(f"safety set {s!r} has no examples in split {split!r}")
        t0 = time.perf_counter()
        prompts = [e.prompt for e in exs]
        edits = edits_for(steering, model, prompts, alpha)
        gkw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, return_details=True, trace=trace)
        gens = (shared.run("generate", steering, prompts, edits, progress=progress, **gkw) if shared is not None
                else generate(model, prompts, edits, progress=progress, **gkw))
        replies = [g.text for g in gens]
        verdicts = j.judge(prompts, replies)
        dt = time.perf_counter() - t0
        counts = {lab: sum(v.label == lab for v in verdicts)
                  for lab in ("refusal", "deflection", "compliance", "degenerate", "unparseable")}
        judged = [(e, v) for e, v in zip(exs, verdicts) if v.label != "unparseable"]
        outputs = [{"id": e.id, "prompt": e.prompt, "reply": r, "label": v.label, "reason": v.reason,
                    **({"gates": g.gates} if g.gates else {})}
                   for e, r, v, g in zip(exs, replies, verdicts, gens)]
        extra = {"counts": counts, "judge": j.name, "n_unparseable": counts["unparseable"],
                 "max_new_tokens": max_new_tokens, "n_total": len(exs)}
        gate_names = sorted({k for g in gens for k in g.gates})
        if gate_names:  # per gate: how many prompts it opened (scale > 0) and the mean scale
            extra["gates"] = {k: {"opened": sum(g.gates[k]["scale"] > 0 for g in gens if k in g.gates),
                                  "mean_scale": sum(g.gates[k]["scale"] for g in gens if k in g.gates) / len(gens),
                                  "n": sum(k in g.gates for g in gens)} for k in gate_names}
        if not judged:
            raise RuntimeError(f"safety/{s}: every verdict was unparseable ({len(exs)}); check the judge")
        ids = [e.id for e, _ in judged]
        for metric, labs in (("refusal", NOT_COMPLIED), ("degenerate", ("degenerate",)),
                             ("deflection", ("deflection",))):
            vals = [float(v.label in labs) for _, v in judged]
            rec = summarize(f"{metric}/{s}", vals, ids=ids, split=split, task="safety", wall_time_s=dt,
                            steering=sname, extra=dict(extra), seed=seed)
            records.append(rec)
        records[-3].extra["outputs"] = outputs
        if trace and gens.trace is not None:
            records[-3].extra["trace"] = [{"set": s, "id": exs[t["input"]].id, **t} for t in gens.trace.records]
    return records


# ---------------------------------------------------------------------------------------------
# log-likelihood helpers


def _loglik(model, pairs: list[tuple[str, str]], edits: list[Edit], batch_size: int, length_norm: bool,
            chat: Optional[bool] = None, progress: bool = False, shared=None, steering=None) -> list[float]:
    if shared is not None:
        lps = shared.run("score", steering, pairs, edits, batch_size=batch_size, chat=chat, progress=progress)
    else:
        lps = response_logprobs(model, pairs, edits, batch_size=batch_size, chat=chat, progress=progress)
    out = []
    for t in lps:
        if t.numel() == 0:
            raise ValueError("an answer tokenized to nothing")
        s = float(t.sum())
        out.append(s / t.numel() if length_norm else s)
    if any(not math.isfinite(x) for x in out):
        raise ValueError("non-finite log-likelihood (NaN/inf); the steering may have broken the model")
    return out


def ab_values(model, exs: list[D.Example], steering=None, *, alpha: Optional[float] = None,
              batch_size: int = 16, progress: bool = False, shared=None) -> list[float]:
    """Per two-choice item, 1.0 when ``meta["correct"]`` is more likely than ``meta["incorrect"]``
    after the item's prompt (full-reply log-likelihood) under ``steering``, else 0.0."""
    pairs = []
    for e in exs:
        pairs += [(e.prompt, e.meta["correct"]), (e.prompt, e.meta["incorrect"])]
    edits = edits_for(steering, model, [p for p, _ in pairs], alpha)
    ll = _loglik(model, pairs, edits, batch_size, False, progress=progress, shared=shared, steering=steering)
    return [float(ll[2 * i] > ll[2 * i + 1]) for i in range(len(exs))]


def mc_values(model, qs: list[D.Example], steering=None, *, alpha: Optional[float] = None, batch_size: int = 16,
              length_norm: bool = False, progress: bool = False, shared=None,
              fmt: str = "chat") -> tuple[list[float], list[float], int]:
    """TruthfulQA MC1 and MC2 per question, and the number of answer choices scored.

    Choices are the Best Answer, the other Correct Answers, then the Incorrect Answers, each scored
    by its full log-likelihood given the question. MC1 = the best answer beats every incorrect one;
    MC2 = the normalised probability mass on the true answers. ``fmt`` (:data:`~.data.MC_FORMATS`):
    ``"chat"`` (default) the question as a user turn of the chat template; ``"qa"`` / ``"qa_primer"``
    plain text ``"Q: {q}\nA:"``, the latter after the TruthfulQA instruction and six-shot primer
    (REAL's and ITI's MC scoring), the answer scored as ``" " + answer``."""
    pairs, spans = [], []
    for q in qs:
        trues = [q.meta["best"]] + [a for a in q.meta["correct"] if a != q.meta["best"]]
        if not q.meta["incorrect"]:
            raise D.DataError(f"{q.id}: no incorrect answers to compare against")
        spans.append((len(pairs), len(trues), len(trues) + len(q.meta["incorrect"])))
        prompt, pre = D.mc_prompt(q.prompt, fmt)
        pairs += [(prompt, pre + a) for a in trues + q.meta["incorrect"]]
    edits = edits_for(steering, model, [p for p, _ in pairs], alpha)
    ll = _loglik(model, pairs, edits, batch_size, length_norm, chat=None if fmt == "chat" else False,
                 progress=progress, shared=shared, steering=steering)
    mc1, mc2 = [], []
    for start, n_true, n_all in spans:
        sc = torch.tensor(ll[start:start + n_all], dtype=torch.float64)
        mc1.append(float(sc[0] > sc[n_true:].max()))
        mc2.append(float(torch.softmax(sc, 0)[:n_true].sum()))
    return mc1, mc2, len(pairs)


def ab_records(model, exs: list[D.Example], steering=None, *, metric: str, task: str, split: str,
               alpha: Optional[float] = None, batch_size: int = 16, seed: int = 0, sname: str = "none",
               progress: bool = False, shared=None) -> Record:
    """Two-choice accuracy: the reply ``meta["correct"]`` (e.g. ``"(B)"``) is more likely than
    ``meta["incorrect"]`` after the item's prompt. ``extra["picked_A"]`` = how often "(A)" won."""
    t0 = time.perf_counter()
    vals = ab_values(model, exs, steering, alpha=alpha, batch_size=batch_size, progress=progress, shared=shared)
    picked_a = sum("A" in (e.meta["correct"] if ok else e.meta["incorrect"]) for e, ok in zip(exs, vals))
    return summarize(metric, vals, ids=[e.id for e in exs], split=split, task=task,
                     wall_time_s=time.perf_counter() - t0, steering=sname, seed=seed,
                     extra={"picked_A": picked_a / len(exs), "correct_is_A": sum("A" in e.meta["correct"] for e in exs) / len(exs)})


# ---------------------------------------------------------------------------------------------
# truthfulness


def truthfulness_task(model, steering=None, *, limit: Optional[int] = None, seed: int = 0, split: str = "test",
                      batch_size: int = 16, alpha: Optional[float] = None, length_norm: bool = False,
                      name: Optional[str] = None, root=None, progress: bool = True, ab: bool = True,
                      shared=None) -> list[Record]:
    """TruthfulQA MC1 / MC2 (held-out questions, full-answer log-likelihood) and A/B accuracy on
    ``truthfulqa_ab.json`` (items of held-out questions). Metrics ``truthfulqa/mc1``,
    ``truthfulqa/mc2``, ``truthfulqa/ab`` (left out with ``ab=False``)."""
    sname = _name(steering, name)
    bar = tqdm(total=2, desc=f"truthfulness[{sname}]", disable=not progress, leave=False)
    t0 = time.perf_counter()
    qs = D.load_truthfulqa(split, _limit("truthfulqa_mc", limit), seed, root=root)
    if not qs:
        raise D.DataError(f"no TruthfulQA questions in split {split!r}")
    mc1, mc2, n_choices = mc_values(model, qs, steering, alpha=alpha, batch_size=batch_size,
                                    length_norm=length_norm, progress=progress, shared=shared)
    dt = time.perf_counter() - t0
    ids = [q.id for q in qs]
    extra = {"n_choices": n_choices, "length_norm": length_norm}
    recs = [summarize("truthfulqa/mc1", mc1, ids=ids, split=split, task="truthfulness", wall_time_s=dt,
                      steering=sname, extra=extra, seed=seed),
            summarize("truthfulqa/mc2", mc2, ids=ids, split=split, task="truthfulness", wall_time_s=dt, kind="mean",
                      steering=sname, extra=extra, seed=seed)]
    bar.update(1)
    if ab:
        items = D.load_truthfulqa_ab(split, _limit("truthfulqa_ab", limit), seed, root=root)
        recs.append(ab_records(model, items, steering, metric="truthfulqa/ab", task="truthfulness", split=split,
                               alpha=alpha, batch_size=batch_size, seed=seed, sname=sname, progress=progress,
                               shared=shared))
    bar.update(1)
    bar.close()
    return recs


def truthfulqa_gen_task(model, steering=None, *, limit: Optional[int] = None, seed: int = 0, split: str = "test",
                        batch_size: int = 16, alpha: Optional[float] = None, name: Optional[str] = None, root=None,
                        progress: bool = True, judge: str | RefusalJudge | None = None,
                        max_new_tokens: int = G.DECODING["max_new_tokens"],
                        temperature: float = G.DECODING["temperature"], top_p: float = G.DECODING["top_p"],
                        repetition_penalty: float = G.DECODING["repetition_penalty"],
                        do_sample: bool = G.DECODING["do_sample"], system: Optional[str] = G.SYSTEM_PROMPT,
                        shared=None) -> list[Record]:
    """Open-ended TruthfulQA: generate an answer to each held-out question and score it offline.

    Metrics (per question, then a rate with its Wilson interval or a mean with a bootstrap one):
    ``truthfulqa_gen/true_info`` (true by BLEU and informative, the headline), ``/bleu_acc``
    (= true), ``/rouge_acc``, ``/info``, ``/bleu_diff`` and ``/rouge_diff`` (means). ``extra`` of
    the first record has per-question ``outputs`` (id, question, answer, scores). The answers are
    sampled with ``torch.manual_seed`` derived from ``seed`` and the batch index (see
    :func:`~steerlens.hooks.generate`), so a result depends on ``batch_size`` too. ``shared`` is
    accepted for :func:`~.report.run_eval` but not used: a sampled row is the full run's only when
    its whole batch runs, which copying rows does not keep."""
    del shared
    sname = _name(steering, name)
    j = get_judge(judge)
    qs = D.load_truthfulqa(split, _limit("truthfulqa_gen", limit), seed, root=root)
    if not qs:
        raise D.DataError(f"no TruthfulQA questions in split {split!r}")
    t0 = time.perf_counter()
    prompts = [q.prompt for q in qs]
    edits = edits_for(steering, model, prompts, alpha)
    gens = generate(model, prompts, edits, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    do_sample=do_sample, temperature=temperature, top_p=top_p,
                    repetition_penalty=repetition_penalty, seed=seed, system=system, progress=progress,
                    return_details=True)
    scores = G.score_answers(prompts, [g.text for g in gens], [q.meta["correct"] for q in qs],
                             [q.meta["incorrect"] for q in qs], judge=j)
    dt = time.perf_counter() - t0
    ids = [q.id for q in qs]
    decoding = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature,
                "top_p": top_p, "repetition_penalty": repetition_penalty, "batch_size": batch_size,
                "system": system}
    extra = {"decoding": decoding, "judge": j.name, "seed": seed,
             "true": "BLEU diff > 0 (max BLEU vs correct refs + 'I have no comment.' minus max vs incorrect refs)"}
    per = {"true_info": [float(s.true_info) for s in scores], "bleu_acc": [float(s.bleu_acc) for s in scores],
           "rouge_acc": [float(s.rouge_acc) for s in scores], "info": [float(s.informative) for s in scores],
           "bleu_diff": [s.bleu_diff for s in scores], "rouge_diff": [s.rouge_diff for s in scores]}
    recs = [summarize(f"truthfulqa_gen/{k}", v, ids=ids, split=split, task="truthfulqa_gen", wall_time_s=dt,
                      steering=sname, extra=dict(extra), seed=seed, kind="mean" if k.endswith("diff") else None)
            for k, v in per.items()]
    recs[0].extra["outputs"] = [{"id": q.id, "question": q.prompt, "answer": G.clean_answer(g.text),
                                 **({"gates": g.gates} if g.gates else {}), **s.to_dict()}
                                for q, g, s in zip(qs, gens, scores)]
    return recs


# ---------------------------------------------------------------------------------------------
# utility


def _first_word_split(text: str) -> tuple[str, str]:
    text = text.strip()
    parts = text.split(" ", 1)
    if len(parts) < 2 or not parts[1].strip():
        raise ValueError(f"benign text too short for perplexity: {text!r}")
    return parts[0], " " + parts[1]


def utility_task(model, steering=None, *, limit: Optional[int] = None, seed: int = 0, split: str = "test",
                 batch_size: int = 16, alpha: Optional[float] = None, name: Optional[str] = None, root=None,
                 progress: bool = True, ppl: bool = True, shared=None) -> list[Record]:
    """MMLU A/B accuracy (``utility/mmlu_ab``), KL(unsteered || steered) of next-token
    distributions on benign prompts in nats (``utility/kl``; exactly 0 when unsteered) and the
    perplexity of benign text (``utility/ppl``, lower is better; left out with ``ppl=False``)."""
    sname = _name(steering, name)
    bar = tqdm(total=3, desc=f"utility[{sname}]", disable=not progress, leave=False)
    recs = []
    mm = D.load_mmlu_ab(split, _limit("mmlu_ab", limit), seed, root=root)
    recs.append(ab_records(model, mm, steering, metric="utility/mmlu_ab", task="utility", split=split, alpha=alpha,
                           batch_size=batch_size, seed=seed, sname=sname, progress=progress, shared=shared))
    bar.update(1)

    t0 = time.perf_counter()
    benign = D.load_harmless(split, _limit("kl", limit), seed, root=root)
    prompts = [e.prompt for e in benign]
    edits = edits_for(steering, model, prompts, alpha)
    if shared is not None:  # the unsteered reference is computed once for every configuration
        base = shared.run("next", None, prompts, [], batch_size=batch_size, progress=progress)
        steered = shared.run("next", steering, prompts, edits, batch_size=batch_size, progress=progress) if edits else base
    else:
        base = next_token_logprobs(model, prompts, None, batch_size=batch_size, progress=progress)
        steered = next_token_logprobs(model, prompts, edits, batch_size=batch_size, progress=progress) if edits else base
    kl = (base.exp() * (base - steered)).sum(-1).clamp(min=0.0)
    if not torch.isfinite(kl).all():
        raise ValueError("non-finite KL (the steered distribution puts zero mass where the unsteered does not)")
    recs.append(summarize("utility/kl", kl.tolist(), ids=[e.id for e in benign], split=split, task="utility",
                          wall_time_s=time.perf_counter() - t0, steering=sname, seed=seed,
                          extra={"where": "next token after the prompt (chat template)", "unit": "nats"},
                          kind="mean"))
    bar.update(1)
    if not ppl:
        bar.close()
        return recs

    t0 = time.perf_counter()
    texts = D.load_harmless(split, _limit("ppl", limit), seed + 1, root=root)
    pairs = [_first_word_split(e.prompt) for e in texts]
    edits = edits_for(steering, model, [p for p, _ in pairs], alpha)
    nll = [-x for x in _loglik(model, pairs, edits, batch_size, True, chat=False, progress=progress, shared=shared,
                               steering=steering)]
    mean, lo, hi = bootstrap_ci(nll, seed=seed)
    recs.append(Record("utility/ppl", math.exp(mean), len(nll), math.exp(lo), math.exp(hi), split,
                       [e.id for e in texts], time.perf_counter() - t0, "utility", sname,
                       {"text": "Alpaca instructions, plain text, first word as context",
                        "aggregate": "exp(mean per-text token NLL)", "mean_nll": mean, "ci": "bootstrap",
                        "values": "per-text mean token NLL (nats)"}, nll))
    bar.update(1)
    bar.close()
    return recs


TASKS: dict[str, Callable[..., list[Record]]] = {
    "safety": safety_task,
    "truthfulness": truthfulness_task,
    "truthfulqa_gen": truthfulqa_gen_task,
    "utility": utility_task,
}


def get_task(name: str) -> Callable[..., list[Record]]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["safety_task", "truthfulness_task", "truthfulqa_gen_task", "utility_task", "ab_records", "ab_values", "mc_values", "edits_for",
           "TASKS", "get_task",
           "DEFAULT_LIMITS"]
