"""Steered generation and log-likelihood scoring, batched with left padding.

``generate`` runs Hugging Face generation (KV cache) on the bridge's wrapped model inside
:func:`~steerlens.hooks.context.steer`, so edits apply on the prompt pass and at every
generated token. ``response_logprobs`` and ``next_token_logprobs`` score text under the same
edits (truthfulness multiple choice, KL, perplexity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .. import parallel
from ..models import as_model
from .batching import InputError, check_items, iter_batches
from .edits import Edit, check_edit_inputs, validate_edits
from .gates import GateProbe
from .runtime import Run, batch_run
from .trace import Trace


@dataclass
class Generation:
    """One generated reply: text, token ids, whether it stopped at an end-of-turn token, and
    each gate's score and scale for this input (``{gate name: {"score": s, "scale": c}}``), and
    with ``logprobs=True`` the log-probability of each generated token under the steered model."""

    prompt: str
    text: str
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False
    gates: dict = field(default_factory=dict)
    logprobs: Optional[list[float]] = None


class Replies(list):
    """The list ``generate`` returns (strings, or :class:`Generation` records), with the run's
    :class:`~steerlens.hooks.trace.Trace` in ``.trace`` when ``trace=True`` (else ``None``)."""

    trace: Optional[Trace] = None


def _row_gates(run: Run, j: int) -> dict:
    return {name: {"score": float(d["score"][j]), "scale": float(d["scale"][j])}
            for name, d in run.gate_decisions().items()}


def _generation_config(model, max_new_tokens: int, do_sample: bool, temperature: float,
                       top_p: float, top_k: Optional[int], repetition_penalty: float = 1.0):
    from transformers import GenerationConfig

    kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=model.pad_token_id,
              eos_token_id=model.eos_token_ids or None)
    if do_sample:
        kw.update(temperature=temperature, top_p=top_p, top_k=top_k if top_k is not None else 0)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)
    if repetition_penalty != 1.0:
        kw["repetition_penalty"] = float(repetition_penalty)
    return GenerationConfig(**kw)


def _prepare(model, items, edits, *, pairs: bool, what: str):
    """Validate inputs and edits for one of the batched runners below."""
    m = as_model(model)
    items, is_pair = check_items(items)
    if is_pair != pairs:
        raise InputError(f"{what} takes {'(prompt, response) pairs' if pairs else 'prompts, not (prompt, response) pairs'}")
    edit_list = validate_edits(m, edits)
    check_edit_inputs(edit_list, len(items))
    return m, items, edit_list


@torch.no_grad()
def generate(
    model,
    prompts: Sequence[str],
    edits: Optional[Sequence[Edit]] = None,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: Optional[int] = None,
    seed: int = 0,
    repetition_penalty: float = 1.0,
    chat: Optional[bool] = None,
    system: Optional[str] = None,
    progress: bool = True,
    return_details: bool = False,
    trace: bool = False,
    logprobs: bool = False,
    only: Optional[Sequence[int]] = None,
    probe: Optional[GateProbe] = None,
) -> Replies:
    """Generate a reply to each prompt, steered by ``edits``.

    Greedy by default (batched output equals one-at-a-time output). With ``do_sample=True`` the
    sampling generator is seeded from ``seed`` and the batch index, so the same seed and batch
    size give the same text.

    Args:
        model: a :class:`~steerlens.SteerModel`.
        prompts: user instructions (wrapped in the chat template unless ``chat=False``).
        edits: steering edits; per-input edits carry one entry per prompt.
        max_new_tokens: generation length cap.
        batch_size: prompts per batch (left padding, KV cache).
        repetition_penalty: Hugging Face's repetition penalty (1.0 = none), greedy or sampled.
        system: a system prompt for every input (a system turn of the chat template; in plain
            text, a paragraph before the prompt).
        return_details: return :class:`Generation` records (with each gate's decision) instead
            of strings.
        trace: record every edit's per-token values; the result's ``.trace`` holds them.
        logprobs: record each generated token's log-probability (``Generation.logprobs``).
        only: run only the batches that hold these inputs (indices into ``prompts``), each
            batch whole, as in the run over all prompts (so every reply is the one that run
            gives); the result then has one entry per prompt, ``None`` for prompts not run.
        probe: prompt gates to read in the prompt pass without steering (:class:`GateProbe`).
    """
    m, items, edit_list = _prepare(model, prompts, edits, pairs=False, what="generate")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not repetition_penalty > 0:
        raise InputError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    gen_cfg = _generation_config(m, max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty)
    if logprobs:
        gen_cfg.output_logits, gen_cfg.return_dict_in_generate = True, True
    eos = set(m.eos_token_ids)
    out: list[Optional[Generation]] = [None] * len(items)
    tr = Trace() if trace else None
    live = [e for e in edit_list if not e.is_identity]  # the edits a Run keeps, in its order
    probes = probe.gates if probe is not None else []
    if probe is not None:
        probe.start(len(items))

    def run_batch(bi: int, batch) -> tuple[list, list, list]:  # its Generations, its trace records, probes
        if do_sample:
            torch.manual_seed(seed * 1_000_003 + bi)
        with batch_run(m, edit_list, batch, trace=trace, probes=probes,
                       probe_prepass=probe.prepass if probe is not None else ()) as run:
            res = m.hf_model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                      generation_config=gen_cfg)
        seqs = res.sequences if logprobs else res
        new = seqs[:, batch.input_ids.shape[1]:].cpu()
        step_lp = None
        if logprobs:  # [b, steps]: log p(chosen token) from the raw (unprocessed) logits
            lg = torch.stack(res.logits, 1).float().log_softmax(-1).cpu()
            step_lp = lg.gather(-1, new[:, :lg.shape[1], None]).squeeze(-1)
        rows = batch.rows.tolist()
        kept = []
        gens_b: list[tuple[int, Generation]] = []
        for j, row in enumerate(rows):
            ids = new[j].tolist()
            finished = False
            for k, t in enumerate(ids):
                if t in eos:
                    ids, finished = ids[:k], True
                    break
            while ids and ids[-1] == m.pad_token_id and m.pad_token_id not in eos:
                ids.pop()
            text = m.tokenizer.decode(ids, skip_special_tokens=True)
            gens_b.append((row, Generation(prompt=items[row], text=text, token_ids=ids, finished=finished,
                                           gates=_row_gates(run, j),
                                           logprobs=None if step_lp is None else step_lp[j, :len(ids)].tolist())))
            kept.append(len(ids) + int(finished))
        recs: list = []
        if tr is not None:
            texts = [[m.tokenizer.decode([t]) for t in new[j, :kept[j]].tolist()] for j in range(len(rows))]
            bt = Trace()
            bt.add_run(run, [e.label for e in live], [str(e.site) for e in live], rows, kept, texts)
            recs = bt.records
        return gens_b, recs, (rows, run.probe_decisions()) if probes else None

    for gens_b, recs, pr in parallel.map_batches(run_batch, iter_batches(m, items, batch_size, chat=chat, only=only, system=system),
                                                 total=len(items),
                                                 desc="generate", unit="prompt", progress=progress):
        for row, g in gens_b:
            out[row] = g
        if pr is not None:
            probe.fill(*pr)  # type: ignore[union-attr]
        if tr is not None:
            tr.records.extend(recs)
    if only is not None:
        res = Replies(out if return_details else [None if g is None else g.text for g in out])
        res.trace = tr
        return res
    gens = [g for g in out if g is not None]
    res = Replies(gens if return_details else [g.text for g in gens])
    res.trace = tr
    return res


def _logits_at(m, batch, mask: torch.Tensor) -> torch.Tensor:
    """Logits at the positions ``mask`` (``[b, L-1]``, position t predicts token t+1) only.

    The unembedding is applied to the selected hidden states instead of every position, which
    for a 49k-token vocabulary is most of the cost of scoring long prompts."""
    hf = m.hf_model
    decoder = hf.get_decoder() if hasattr(hf, "get_decoder") else None
    unembed = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    softcap = getattr(hf.config, "final_logit_softcapping", None)
    if decoder is None or unembed is None or softcap:
        logits = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, use_cache=False).logits
        return logits[:, :-1][mask.to(logits.device)]
    hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, use_cache=False).last_hidden_state
    return unembed(hidden[:, :-1][mask.to(hidden.device)])


@torch.no_grad()
def response_logprobs(
    model,
    pairs: Sequence[tuple[str, str]],
    edits: Optional[Sequence[Edit]] = None,
    *,
    batch_size: int = 8,
    chat: Optional[bool] = None,
    progress: bool = False,
    only: Optional[Sequence[int]] = None,
    probe: Optional[GateProbe] = None,
) -> list[Optional[torch.Tensor]]:
    """Log-probability of each response token given the prompt (and the previous response
    tokens), under ``edits``. Returns one 1-D tensor per pair; ``.sum()`` is the log-likelihood.
    ``only`` and ``probe`` as for :func:`generate` (with ``only``: one entry per pair, ``None``
    for pairs not run)."""
    m, items, edit_list = _prepare(model, pairs, edits, pairs=True, what="response_logprobs")
    out: list[Optional[torch.Tensor]] = [None] * len(items)
    probes = probe.gates if probe is not None else []
    if probe is not None:
        probe.start(len(items))

    # every probe is read in the one forward pass: a pre-pass would be the same forward call (the
    # same decoder on the same inputs), so it reads the same activations
    def run_batch(bi: int, batch) -> tuple[list, Optional[tuple]]:
        # position t predicts token t+1: keep the positions whose next token is a response token
        mask = batch.response_mask[:, 1:]
        tgt = batch.input_ids[:, 1:][mask]
        with batch_run(m, edit_list, batch, probes=probes) as run:
            logits = _logits_at(m, batch, mask)  # [n_response_tokens, vocab]
        tok_lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt.to(logits.device).unsqueeze(-1)).squeeze(-1).cpu()
        rows = batch.rows.tolist()
        return list(zip(rows, torch.split(tok_lp, mask.sum(1).tolist()))), (rows, run.probe_decisions()) if probes else None

    for pairs_b, pr in parallel.map_batches(run_batch, iter_batches(m, items, batch_size, chat=chat, only=only),
                                            total=len(items),
                                            desc="score", unit="pair", progress=progress):
        for row, chunk in pairs_b:
            out[row] = chunk
        if pr is not None:
            probe.fill(*pr)  # type: ignore[union-attr]
    return out if only is not None else [t for t in out if t is not None]  # type: ignore[return-value]


@torch.no_grad()
def next_token_logprobs(
    model,
    prompts: Sequence[str],
    edits: Optional[Sequence[Edit]] = None,
    *,
    batch_size: int = 16,
    chat: Optional[bool] = None,
    progress: bool = False,
    only: Optional[Sequence[int]] = None,
    probe: Optional[GateProbe] = None,
) -> torch.Tensor | list[Optional[torch.Tensor]]:
    """``[n, vocab]`` log-probabilities of the token after each prompt, under ``edits``.
    ``only`` and ``probe`` as for :func:`generate` (with ``only``: a list of ``[vocab]`` rows,
    ``None`` for prompts not run)."""
    m, items, edit_list = _prepare(model, prompts, edits, pairs=False, what="next_token_logprobs")
    out: list[Optional[torch.Tensor]] = [None] * len(items)
    probes = probe.gates if probe is not None else []
    if probe is not None:
        probe.start(len(items))

    def run_batch(bi: int, batch) -> tuple[list, torch.Tensor, Optional[tuple]]:
        with batch_run(m, edit_list, batch, probes=probes) as run:
            logits = m.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                position_ids=batch.position_ids, use_cache=False, logits_to_keep=1).logits
        rows = batch.rows.tolist()
        return rows, torch.log_softmax(logits[:, -1].float(), -1).cpu(), (rows, run.probe_decisions()) if probes else None

    for rows, lp, pr in parallel.map_batches(run_batch, iter_batches(m, items, batch_size, chat=chat, only=only),
                                             total=len(items),
                                             desc="next-token", unit="prompt", progress=progress):
        for j, row in enumerate(rows):
            out[row] = lp[j]
        if pr is not None:
            probe.fill(*pr)  # type: ignore[union-attr]
    if only is not None:
        return out  # type: ignore[return-value]
    return torch.stack([t for t in out if t is not None])
