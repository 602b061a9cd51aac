"""Several steerers in one generation, each with its own gate.

``Composition([safety, truthfulness])`` follows the steering protocol (``edits(model, prompts,
alpha=None)``), so it can be handed to :func:`steerlens.generate` and to every eval task.

What happens when two edits meet at one site: the hook layer applies the edits of a hook point
one after the other, **in the order of the list** (the first steerer's edits first). Each edit
computes its delta from the activation as left by the edits before it, and adds its own
``alpha · gate · delta``. For constant edits (CAA, ITI) the order does not matter — the deltas
simply add; for activation-dependent edits (MoSE reads its query, ODESteer integrates from the
activation it meets) the second sees the first's result. Gates read the activation that arrives
at their own hook point, before any edit at that hook.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..hooks import Edit
from .base import PipelineError


class Composition:
    """Steerers acting together; ``alpha`` (when given) must be one value per steerer."""

    def __init__(self, steerers: Sequence, name: Optional[str] = None) -> None:
        self.steerers = list(steerers)
        if not self.steerers:
            raise PipelineError("a composition needs at least one steerer")
        for st in self.steerers:
            if not callable(getattr(st, "edits", None)):
                raise PipelineError(f"{type(st).__name__} is not a steerer (no edits(model, prompts, alpha))")
        self.name = name or "+".join(str(getattr(s, "name", None) or getattr(s, "method", "steerer"))
                                     for s in self.steerers)

    def edits(self, model, prompts=None, alpha: Optional[float | Sequence[float]] = None) -> list[Edit]:
        if alpha is None:
            alphas = [None] * len(self.steerers)
        elif isinstance(alpha, (int, float)):
            alphas = [float(alpha)] * len(self.steerers)
        else:
            alphas = [float(a) for a in alpha]
            if len(alphas) != len(self.steerers):
                raise PipelineError(f"{len(alphas)} strengths for {len(self.steerers)} steerers")
        out: list[Edit] = []
        for st, a in zip(self.steerers, alphas):
            out += list(st.edits(model, prompts, alpha=a))
        return out

    def __repr__(self) -> str:
        return f"Composition({self.name!r}, {len(self.steerers)} steerers)"


__all__ = ["Composition"]
