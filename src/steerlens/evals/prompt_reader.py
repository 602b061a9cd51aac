"""Prompt-only reads of the residual stream at every layer, several readings in one pass, cached.

:func:`read_prompts` runs the model once over chat-formatted prompts (no generation) and returns,
per *reading*, a ``[n, n_layers, d_model]`` tensor of ``blocks.{l}.hook_resid_post``:

- ``"last"``: the last prompt token (what a prompt gate reads at run time);
- ``"post"``: the mean over the chat template's tokens after the instruction
  (``<|im_end|>\\n<|im_start|>assistant\\n`` for ChatML models);
- ``"mean"``: the mean over the instruction's own tokens.

Where the template ends and the instruction begins is found once per model by formatting two
different sentinel instructions (the common prefix and suffix of their token ids). The system
prompt and user header that every prompt shares are run once per batch and reused through the
key/value cache (the suffixes are right-padded, so no real token attends to padding); the
activations equal a plain forward pass up to float rounding (tested against
:func:`steerlens.capture`).

With ``cache_dir`` every chunk of prompts is stored in a safetensors file named by a hash of the
model fingerprint, the layers, the readings and the chunk's prompts (written atomically), so
repeated and interrupted runs reuse what is done.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import torch

READINGS = ("last", "post", "mean")


class _Stop(Exception):
    pass


def template_spans(model) -> tuple[int, int]:
    """``(n_prefix, n_suffix)``: tokens every formatted prompt shares before its instruction
    (system prompt, user header) and after it (end of turn, assistant header)."""
    from ..models import as_model

    m = as_model(model)
    a = m.prompt_ids("alpha beta gamma")
    b = m.prompt_ids("Zeta eta theta iota?")
    n_pre = 0
    while n_pre < min(len(a), len(b)) and a[n_pre] == b[n_pre]:
        n_pre += 1
    n_suf = 0
    while n_suf < min(len(a), len(b)) - n_pre and a[-1 - n_suf] == b[-1 - n_suf]:
        n_suf += 1
    return n_pre, n_suf


def _layer_modules(hf) -> list[torch.nn.Module]:
    base = getattr(hf, "model", hf)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"read_prompts needs a decoder with model.layers; {type(hf).__name__} has none")
    return list(layers)


def _model_key(m) -> str:
    fp = m.fingerprint()
    return hashlib.sha256(json.dumps([fp, bool(m.chat)], sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def _read_chunk(m, ids: list[list[int]], n_pre: int, n_suf: int, layers: list[int],
                readings: Sequence[str], batch_size: int) -> dict[str, torch.Tensor]:
    from transformers import DynamicCache

    hf = m.hf_model
    mods = _layer_modules(hf)
    dev = m.device
    pad = m.pad_token_id
    out = {r: [] for r in readings}
    grabbed: dict[int, torch.Tensor] = {}

    deepest = max(layers)

    def hook(i):
        def fn(_mod, _inp, output):
            grabbed[i] = (output[0] if isinstance(output, (tuple, list)) else output).detach()
            if i == deepest:
                raise _Stop  # nothing after the deepest layer read is needed
        return fn

    def run(**kw):
        try:
            hf(**kw)
        except _Stop:
            pass

    handles = [mods[l].register_forward_hook(hook(l)) for l in layers]
    try:
        prefix = ids[0][:n_pre]
        for s in range(0, len(ids), batch_size):
            rows = ids[s:s + batch_size]
            b = len(rows)
            suf = [r[n_pre:] for r in rows]
            t = max(len(x) for x in suf)
            x = torch.full((b, t), pad, dtype=torch.long)
            mask = torch.zeros(b, t, dtype=torch.long)
            for i, r in enumerate(suf):
                x[i, :len(r)] = torch.tensor(r)
                mask[i, :len(r)] = 1
            kw = {}
            if n_pre > 0:
                grabbed.clear()
                cache = DynamicCache(config=hf.config)
                run(input_ids=torch.tensor([prefix], device=dev), use_cache=True, past_key_values=cache)
                cache.batch_repeat_interleave(b)
                kw = {"past_key_values": cache, "use_cache": True}
                full_mask = torch.cat([torch.ones(b, n_pre, dtype=torch.long), mask], 1)
            else:
                full_mask = mask
            pos = (torch.arange(t) + n_pre).unsqueeze(0).expand(b, t)
            grabbed.clear()
            run(input_ids=x.to(dev), attention_mask=full_mask.to(dev), position_ids=pos.to(dev), **kw)
            lens = torch.tensor([len(r) for r in suf])
            for r in readings:
                per_layer = []
                for l in layers:
                    a = grabbed[l].float().cpu()  # [b, t, d]
                    if r == "last":
                        v = a[torch.arange(b), lens - 1]
                    elif r == "post":
                        v = torch.stack([a[i, lens[i] - n_suf:lens[i]].mean(0) for i in range(b)])
                    else:  # mean over the instruction tokens (the prefix is not part of it)
                        v = torch.stack([a[i, :max(1, lens[i] - n_suf)].mean(0) for i in range(b)])
                    per_layer.append(v)
                out[r].append(torch.stack(per_layer, 1))  # [b, L, d]
    finally:
        for h in handles:
            h.remove()
    return {r: torch.cat(v, 0) for r, v in out.items()}


def read_prompts(model, prompts: Sequence[str], *, layers: Optional[Sequence[int]] = None,
                 readings: Sequence[str] = READINGS, batch_size: int = 16, chunk_size: int = 128,
                 cache_dir: Optional[str | os.PathLike] = None, dtype: torch.dtype = torch.float16,
                 progress: bool = False) -> dict[str, torch.Tensor]:
    """``{reading: [n, len(layers), d_model]}`` (float32; stored as ``dtype``) for ``prompts``."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from ..fileio import atomic_write
    from ..models import as_model

    m = as_model(model)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("read_prompts needs at least one prompt")
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("read_prompts takes non-empty prompt strings")
    bad = [r for r in readings if r not in READINGS]
    if bad or not readings:
        raise ValueError(f"readings must be among {READINGS}, got {list(readings)}")
    layers = list(range(m.n_layers)) if layers is None else [int(l) for l in layers]
    if any(not 0 <= l < m.n_layers for l in layers):
        raise ValueError(f"layers must be in [0, {m.n_layers}), got {layers}")
    n_pre, n_suf = template_spans(m)
    ids = [m.prompt_ids(p) for p in prompts]
    # the shared prefix must be a true prefix of every prompt and leave >= 1 token after it
    n_pre = min([n_pre] + [len(r) - n_suf - 1 for r in ids])
    n_pre = max(0, n_pre)
    if n_pre and any(r[:n_pre] != ids[0][:n_pre] for r in ids):
        n_pre = 0
    key0 = _model_key(m) if cache_dir is not None else ""
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))  # similar lengths batch together
    res = {r: torch.empty(len(prompts), len(layers), m.d_model, dtype=dtype) for r in readings}
    bar = tqdm(total=len(prompts), desc="read prompts", disable=not progress, leave=False)
    for s in range(0, len(order), chunk_size):
        idx = order[s:s + chunk_size]
        path = None
        got = None
        if cache_dir is not None:
            h = hashlib.sha256(json.dumps([key0, layers, list(readings), str(dtype),
                                           [prompts[i] for i in idx]]).encode()).hexdigest()[:24]
            path = Path(cache_dir) / f"reads_{h}.safetensors"
            if path.exists():
                got = load_file(str(path))
        if got is None:
            got = _read_chunk(m, [ids[i] for i in idx], n_pre, n_suf, layers, readings, batch_size)
            got = {r: v.to(dtype).contiguous() for r, v in got.items()}
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda tmp, g=got: save_file(g, tmp))
        ix = torch.tensor(idx)
        for r in readings:
            res[r][ix] = got[r]
        bar.update(len(idx))
    bar.close()
    return {r: v.float() for r, v in res.items()}


__all__ = ["read_prompts", "template_spans", "READINGS"]
