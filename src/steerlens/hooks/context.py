"""Attaching hooks with guaranteed cleanup.

``steer(model, edits)`` attaches one forward hook per hook point (composing every edit that
targets it) and removes them when the block exits, also when the body raises. Inside the
block, any forward pass of the model — ``model.hf_model(...)``, ``model.bridge(...)``, Hugging
Face ``generate`` — is steered.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Callable, Iterator, Sequence

import torch

from ..models import SteerModel, as_model
from .edits import Edit, validate_edits
from .sites import Site

HookFn = Callable[..., torch.Tensor]


class HookLeakError(RuntimeError):
    """Hooks survived the context that attached them (should never happen)."""


def _apply_site(act: torch.Tensor, site: Site, edits: Sequence[Edit]) -> torch.Tensor:
    """Apply edits to the part of ``act`` that belongs to ``site`` (heads, positions)."""
    by_pos: dict[str, list[Edit]] = defaultdict(list)
    for e in edits:
        by_pos[e.positions].append(e)
    out = act
    for positions, group in by_pos.items():
        pos = slice(None) if positions == "all" else slice(-1, None)
        if site.is_head:
            heads = list(site.heads or ())
            part = out[:, pos][:, :, heads]
        else:
            part = out[:, pos]
        new = part
        for e in group:
            new = e.apply(new)
        if new is part:
            continue
        out = out.clone() if out is act else out
        if site.is_head:
            idx = torch.tensor(heads, device=out.device)
            view = out[:, pos]
            view.index_copy_(2, idx, new)  # writes into `out` (view of a slice)
        else:
            out[:, pos] = new
    return out


def make_hooks(model: SteerModel, edits: Sequence[Edit]) -> list[tuple[str, HookFn]]:
    """``(hook_name, fn)`` pairs for ``bridge.hooks``: one function per hook point."""
    by_hook: dict[str, list[Edit]] = defaultdict(list)
    for e in edits:
        if not e.is_identity:
            by_hook[e.site.hook_name].append(e)
    hooks: list[tuple[str, HookFn]] = []
    for hook_name, group in by_hook.items():
        by_site: dict[Site, list[Edit]] = defaultdict(list)
        for e in group:
            by_site[e.site].append(e)

        def fn(act: torch.Tensor, hook=None, _by_site=dict(by_site)) -> torch.Tensor:
            for site, site_edits in _by_site.items():
                act = _apply_site(act, site, site_edits)
            return act

        hooks.append((hook_name, fn))
    return hooks


def count_hooks(model) -> int:
    """Number of forward/backward hook functions currently attached to the model's hook points."""
    m = as_model(model)
    n = 0
    for hp in m.bridge.hook_dict.values():
        n += len(getattr(hp, "_forward_hooks", {})) + len(getattr(hp, "_backward_hooks", {}))
        n += len(getattr(hp, "fwd_hooks", []) or []) + len(getattr(hp, "bwd_hooks", []) or [])
    return n


@contextlib.contextmanager
def attach(model: SteerModel, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[SteerModel]:
    """Attach raw ``(hook_name, fn)`` hooks for the duration of the block, then remove them."""
    before = count_hooks(model)
    try:
        with model.bridge.hooks(fwd_hooks=list(hooks)):
            yield model
    finally:
        after = count_hooks(model)
        if after > before:  # defensive: the bridge removes them itself
            model.bridge.reset_hooks(including_permanent=False)
            if count_hooks(model) > before:
                raise HookLeakError(f"{after - before} hook(s) survived steer(); the model was reset")


@contextlib.contextmanager
def steer(model, edits: Sequence[Edit] | Edit | None) -> Iterator[SteerModel]:
    """Steer every forward pass inside the block with ``edits``.

    Example::

        v = acts_pos.mean(0) - acts_neg.mean(0)
        with steerlens.steer(model, [AddVector("blocks.10.hook_resid_post", v, alpha=1.0)]):
            logits = model.hf_model(ids).logits

    Per-input edits must match the batch size of each forward pass; ``generate`` and
    ``capture`` slice them per batch for you.
    """
    m = as_model(model)
    checked = validate_edits(m, edits)
    with attach(m, make_hooks(m, checked)):
        yield m
