"""Turning prompts and (prompt, response) pairs into left-padded batches.

Left padding keeps the last prompt token in the last column, which is what generation with
the KV cache and ``positions="last"`` edits rely on. Position ids count real tokens only, so a
padded row sees the same positions as the same input alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import torch
from jaxtyping import Bool, Int

from ..models import SteerModel

Item = Union[str, tuple[str, str]]


class InputError(ValueError):
    """Empty or malformed inputs."""


@dataclass
class Batch:
    """One left-padded batch.

    Attributes:
        rows: indices of these inputs in the caller's list.
        input_ids, attention_mask, position_ids: ``[b, L]``.
        prompt_last: ``[b]`` column of each input's last prompt token.
        response_mask: ``[b, L]`` True on response tokens (pairs only, else all False).
    """

    rows: Int[torch.Tensor, "b"]
    input_ids: Int[torch.Tensor, "b L"]
    attention_mask: Int[torch.Tensor, "b L"]
    position_ids: Int[torch.Tensor, "b L"]
    prompt_last: Int[torch.Tensor, "b"]
    response_mask: Bool[torch.Tensor, "b L"]

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.rows, self.input_ids, self.attention_mask,
                                               self.position_ids, self.prompt_last, self.response_mask)))

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def check_items(items: Sequence[Item]) -> tuple[list[Item], bool]:
    """Validate inputs; return them as a list and whether they are (prompt, response) pairs.
    A response may be text or a list of token ids."""
    if isinstance(items, (str, tuple)):
        items = [items]
    items = list(items)
    if not items:
        raise InputError("no inputs given (empty list)")
    is_pair = [isinstance(x, (tuple, list)) for x in items]
    if any(is_pair) and not all(is_pair):
        raise InputError("mix of prompts and (prompt, response) pairs; give one kind")
    for x in items:
        parts = x if isinstance(x, (tuple, list)) else (x,)
        if isinstance(x, (tuple, list)) and len(x) != 2:
            raise InputError(f"a pair must be (prompt, response), got {len(x)} items")
        for k, p in enumerate(parts):
            if k == 1 and isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p):
                continue  # a response given as token ids (e.g. exactly what generate produced)
            if not isinstance(p, str):
                raise InputError(f"inputs must be strings, got {type(p).__name__}")
    return items, all(is_pair)


def tokenize_items(model: SteerModel, items: Sequence[Item], chat: Optional[bool] = None,
                   max_length: Optional[int] = None, system: Optional[str] = None,
                   close_turn: bool = False) -> list[tuple[list[int], int]]:
    """``(ids, n_prompt_tokens)`` per input. Response tokens are tokenized separately and appended,
    so the prompt/response boundary is exact. ``max_length`` trims the prompt from the left.
    ``system``: a system prompt for every input (:meth:`~steerlens.models.SteerModel.prompt_ids`).
    ``close_turn``: a response is a finished chat turn: the template's end-of-turn tokens
    (:meth:`~steerlens.models.SteerModel.turn_end_ids`) follow it and count as response tokens."""
    out = []
    end = model.turn_end_ids() if close_turn and (model.chat if chat is None else chat) else []
    for x in items:
        if isinstance(x, (tuple, list)):
            p = model.prompt_ids(x[0], chat=chat, system=system)
            r = list(x[1]) if isinstance(x[1], (list, tuple)) else model.response_ids(x[1])
            r = r + end
        else:
            p, r = model.prompt_ids(x, chat=chat, system=system), []
        if max_length is not None and len(p) + len(r) > max_length:
            keep = max(1, max_length - len(r))
            p = p[:1] + p[len(p) - keep + 1:] if keep > 1 else p[-1:]
            r = r[: max_length - len(p)]
        if not p:
            raise InputError("an input tokenized to nothing")
        out.append((p + r, len(p)))
    return out


def collate(tokens: Sequence[tuple[list[int], int]], rows: Sequence[int], pad_id: int) -> Batch:
    L = max(len(ids) for ids, _ in tokens)
    b = len(tokens)
    input_ids = torch.full((b, L), pad_id, dtype=torch.long)
    attn = torch.zeros((b, L), dtype=torch.long)
    resp = torch.zeros((b, L), dtype=torch.bool)
    last = torch.zeros(b, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(tokens):
        pad = L - len(ids)
        input_ids[i, pad:] = torch.tensor(ids, dtype=torch.long)
        attn[i, pad:] = 1
        resp[i, pad + n_prompt:] = True
        last[i] = pad + n_prompt - 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return Batch(torch.as_tensor(list(rows), dtype=torch.long), input_ids, attn, pos, last, resp)


def iter_batches(model: SteerModel, items: Sequence[Item], batch_size: int, chat: Optional[bool] = None,
                 sort_by_length: bool = True, max_length: Optional[int] = None,
                 only: Optional[Sequence[int]] = None, system: Optional[str] = None,
                 close_turn: bool = False) -> Iterator[Batch]:
    """Left-padded batches of at most ``batch_size`` inputs, grouped by length to save padding.

    Every batch says which inputs it holds (``Batch.rows``), so results can be put back in order.
    ``only``: the inputs wanted (indices into ``items``): the batches are cut from all of
    ``items`` as without it, and only those holding a wanted input are yielded, whole (a row's
    numbers can depend on the shape of its batch in the last bits, so a batch is never cut).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    toks = tokenize_items(model, items, chat=chat, max_length=max_length, system=system, close_turn=close_turn)
    order = sorted(range(len(toks)), key=lambda i: -len(toks[i][0])) if sort_by_length else list(range(len(toks)))
    wanted = None if only is None else {int(i) for i in only}
    if wanted is not None and any(not 0 <= i < len(toks) for i in wanted):
        raise InputError(f"only= names inputs outside 0..{len(toks) - 1}")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        if wanted is not None and not wanted.intersection(rows):
            continue
        yield collate([toks[i] for i in rows], rows, model.pad_token_id).to(model.device)
