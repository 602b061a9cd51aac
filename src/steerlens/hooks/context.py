"""``steer(model, edits)``: steer every forward pass inside a ``with`` block.

The hooks are attached through :func:`~steerlens.hooks.runtime.attach`, which removes exactly
the handles it added when the block exits — also when the body or a hook raises — and leaves
other callers' hooks alone. Inside the block, any forward pass of the model (``model.hf_model``,
Hugging Face ``generate``; on the bridge backend also ``model.bridge``) is steered; the prompt boundary is unknown there,
so edits on the last prompt token act on the last column of each call. Use
:func:`steerlens.generate` / :func:`steerlens.response_logprobs` / :func:`steerlens.capture` for
batched runs with left padding, per-input edits and traces.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from ..models import SteerModel, as_model
from .edits import Edit, EditError, validate_edits
from .runtime import HookLeakError, Run, attach, count_hooks


@contextlib.contextmanager
def steer(model, edits: Sequence[Edit] | Edit | None) -> Iterator[SteerModel]:
    """Steer every forward pass inside the block with ``edits``.

    Example::

        v = acts_pos.mean(0) - acts_neg.mean(0)
        with steerlens.steer(model, [AddVector("blocks.10.hook_resid_post", v, alpha=1.0)]):
            logits = model.hf_model(ids).logits

    Per-input edits must match the batch size of each forward pass; ``generate`` and
    ``capture`` slice them per batch for you. Each forward call counts as a new prompt pass
    (prompt gates are re-read on every call).
    """
    m = as_model(model)
    checked = validate_edits(m, edits)
    run = _RawRun(checked)
    if run.needs_prepass:
        g = run.prepass_gates[0]
        raise EditError(f"prompt gate {g.name} at {g.site} sits downstream of an edit it controls: it can only be "
                        "read in a pre-pass, which steerlens.generate / response_logprobs / capture do; "
                        "steer() cannot")
    with attach(m, run.hooks()):
        yield m


class _RawRun(Run):
    """A run outside the runners: every forward call is its own prompt pass."""

    def _make_hook(self, name, gates, sites, stop):
        inner = super()._make_hook(name, gates, sites, stop)

        def fn(act, hook=None):
            self.calls[name] = 0
            self.edit_state.clear()
            return inner(act, hook)

        return fn


__all__ = ["steer", "attach", "count_hooks", "HookLeakError"]
