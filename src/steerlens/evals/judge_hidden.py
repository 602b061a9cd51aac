"""Hidden-state features of a (prompt, reply) pair for a refusal judge, read from the default model
*unsteered*.

:class:`HiddenReader` runs the first ``depth`` decoder blocks of a Llama-style causal LM (the
default SmolLM2-135M-Instruct unless told otherwise) on the chat-formatted prompt followed by the
reply, and returns, per requested layer, the residual stream (the output of block ``layer``;
``0`` is the token embedding) pooled over the reply tokens (``mean``) and at the last reply token
(``last``).

Unsteered by construction: the reader builds its own truncated base model (a fresh module of the
source model's class with ``depth`` blocks) whose parameters are the *same tensors* as the
source model's (no copy), so steering hooks — PyTorch hooks on the source model's modules, native
or bridge — never run in it, and nothing the reader does touches the source model. Passing the
model an evaluation already has loaded costs no extra weights.

Batches are sorted by length and right-padded: attention is causal, so a real token never sees a
pad token and padding changes nothing (a batch gives the same features as one reply at a time,
up to float rounding).

Used by ``scripts/judge_hidden_experiment.py`` (issue #22): on the judge's held-out design these
features, alone or next to the text features, did not beat the text judge by a clear margin and
cost 40-300 ms CPU a reply (depth 2-16), so no judge is built on them; see that script's docstring.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import numpy as np
import torch
from jaxtyping import Float

READINGS = ("mean", "last")


def _clean_base(hf_model: torch.nn.Module, depth: int) -> torch.nn.Module:
    """A hook-free base model with the first ``depth`` blocks of ``hf_model``, sharing its weights."""
    base = getattr(hf_model, "model", None)
    if base is None or not hasattr(base, "layers") or not hasattr(base, "embed_tokens"):
        raise ValueError(f"HiddenReader needs a Llama-style causal LM (model.embed_tokens, model.layers); "
                         f"got {type(hf_model).__name__}")
    n = len(base.layers)
    if not 0 <= depth <= n:
        raise ValueError(f"depth {depth} out of range: the model has {n} decoder blocks")
    cfg = copy.deepcopy(hf_model.config)
    cfg.num_hidden_layers = depth
    cfg._attn_implementation = "sdpa"
    # parameter names as Hugging Face gives them (the bridge inserts "._original_component")
    src = {k.replace("._original_component", ""): v for k, v in hf_model.named_parameters()}
    with torch.device("meta"):
        clean = type(base)(cfg)
    keep = {}
    for k in clean.state_dict():
        full = f"model.{k}"
        if full not in src:
            raise ValueError(f"HiddenReader: parameter {full} not found in the source model")
        keep[k] = src[full].detach()
    clean.load_state_dict(keep, assign=True, strict=False)
    # buffers (rotary frequencies) are not parameters: build them on the model's device
    dev = src["model.embed_tokens.weight"].device
    with torch.device(dev):
        clean.rotary_emb = type(base.rotary_emb)(config=cfg)
    clean.eval()
    for p in clean.parameters():
        p.requires_grad_(False)
    return clean


class HiddenReader:
    """Residual-stream readings of replies from an unsteered copy (weights shared, hooks not) of
    ``model`` (a :class:`~steerlens.SteerModel`; default: the default model, loaded on first use).

    Args:
        model: the model to read (``None``: :func:`steerlens.load_model` on first use).
        layers: residual streams to read (``0`` = token embedding, ``l`` = output of block ``l``);
            the reader runs ``max(layers)`` blocks only.
        max_prompt_tokens: the user prompt is cut to its first this many tokens before chat formatting.
        max_reply_tokens: the reply is cut to its first this many tokens.
        batch_size: replies per forward pass (sorted by length).
    """

    def __init__(self, model=None, *, layers: Sequence[int] = (4,), max_prompt_tokens: int = 96,
                 max_reply_tokens: int = 64, batch_size: int = 16) -> None:
        if not layers or any(int(x) < 0 for x in layers):
            raise ValueError(f"layers must be non-negative block indices, got {list(layers)}")
        if max_reply_tokens < 1 or max_prompt_tokens < 0 or batch_size < 1:
            raise ValueError("max_reply_tokens and batch_size must be >= 1, max_prompt_tokens >= 0")
        self.layers = tuple(sorted(set(int(x) for x in layers)))
        self.depth = max(self.layers)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.max_reply_tokens = int(max_reply_tokens)
        self.batch_size = int(batch_size)
        self._model = model
        self._base: Optional[torch.nn.Module] = None

    @property
    def model(self):
        if self._model is None:
            from ..models import load_model

            self._model = load_model()
        return self._model

    @property
    def base(self) -> torch.nn.Module:
        if self._base is None:
            self._base = _clean_base(self.model.hf_model, self.depth)
        return self._base

    def token_ids(self, prompt: str, reply: str) -> tuple[list[int], int]:
        """(ids of the chat-formatted prompt + reply, number of prompt ids)."""
        m = self.model
        tok = m.tokenizer
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if len(p_ids) > self.max_prompt_tokens:
            prompt = tok.decode(p_ids[: self.max_prompt_tokens])
        pid = m.prompt_ids(prompt)
        rid = m.response_ids(reply)[: self.max_reply_tokens]
        return pid + rid, len(pid)

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor) -> list[torch.Tensor]:
        base = self.base
        h = base.embed_tokens(ids)
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)
        pe = base.rotary_emb(h, pos)
        out = [h] if 0 in self.layers else []
        for i, blk in enumerate(base.layers, start=1):
            h = blk(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
            h = h[0] if isinstance(h, tuple) else h
            if i in self.layers:
                out.append(h)
        return out

    def features(self, prompts: Sequence[str], replies: Sequence[str],
                 progress: bool = False) -> dict[str, Float[np.ndarray, "n d"]]:
        """``{"L{layer}_{reading}": [n, d_model] float32}`` for every layer and reading in
        :data:`READINGS`. An empty reply is read at the last prompt token."""
        if len(prompts) != len(replies):
            raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
        n = len(replies)
        d = int(self.model.hf_model.config.hidden_size)
        feats = {f"L{l}_{r}": np.zeros((n, d), dtype=np.float32) for l in self.layers for r in READINGS}
        enc = [self.token_ids(str(p or ""), str(r)) for p, r in zip(prompts, replies)]
        order = sorted(range(n), key=lambda i: len(enc[i][0]))
        dev = self.model.device
        pad = self.model.pad_token_id
        starts = range(0, n, self.batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="hidden states", unit="batch")
        for s in starts:
            idx = order[s: s + self.batch_size]
            lens = [len(enc[i][0]) for i in idx]
            T = max(lens)
            ids = torch.full((len(idx), T), pad, dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, : lens[j]] = torch.tensor(enc[i][0])
            hs = self._forward(ids.to(dev))
            for l, h in zip(self.layers, hs):
                h = h.float().cpu()
                for j, i in enumerate(idx):
                    p0, e = enc[i][1], lens[j]
                    lo = min(p0, e - 1)  # empty reply: the last prompt token
                    feats[f"L{l}_mean"][i] = h[j, lo:e].mean(0).numpy()
                    feats[f"L{l}_last"][i] = h[j, e - 1].numpy()
        return feats


def hidden_matrix(feats: dict, layer: int, reading: str) -> np.ndarray:
    """The ``[n, d]`` (``mean``/``last``) or ``[n, 2d]`` (``both``) block of :meth:`HiddenReader.features`."""
    if reading == "both":
        return np.hstack([feats[f"L{layer}_mean"], feats[f"L{layer}_last"]])
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; use 'mean', 'last' or 'both'")
    return feats[f"L{layer}_{reading}"]


__all__ = ["HiddenReader", "READINGS", "hidden_matrix"]
