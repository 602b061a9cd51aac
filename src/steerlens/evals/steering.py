"""The project-wide "steering" protocol.

Anything that steers is one of

* ``None`` (unsteered),
* a list of :class:`~steerlens.Edit` (or a single edit),
* a fitted steerer: any object with ``edits(model, prompts, alpha=None) -> list[Edit]``
  (it may return per-input edits, one row per prompt, e.g. after a gate).

:func:`resolve_edits` turns any of them into the list of edits for a given list of prompts.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ..hooks.edits import Edit, EditError


def is_steerer(obj: Any) -> bool:
    """True for objects with a callable ``edits(model, prompts, alpha=None)`` method."""
    return callable(getattr(obj, "edits", None))


def resolve_edits(steering: Any, model, prompts: Sequence[str], alpha: Optional[float] = None) -> list[Edit]:
    """Edits for ``prompts`` from ``steering`` (``None`` | edits | fitted steerer).

    ``alpha`` overrides the strength: it is passed to a steerer's ``edits``; for plain edits it
    replaces each edit's ``alpha`` (on copies; the caller's edits are not changed)."""
    if steering is None:
        return []
    if is_steerer(steering):
        out = steering.edits(model, list(prompts), alpha=alpha)
        out = [] if out is None else ([out] if isinstance(out, Edit) else list(out))
    elif isinstance(steering, Edit):
        out = [steering]
    elif isinstance(steering, (list, tuple)):
        out = list(steering)
    else:
        raise EditError(f"cannot steer with {type(steering).__name__}: give None, a list of edits, "
                        "or an object with edits(model, prompts, alpha=None)")
    for e in out:
        if not isinstance(e, Edit):
            raise EditError(f"steering produced {type(e).__name__}, not a steerlens Edit")
    if alpha is not None and not is_steerer(steering):
        out = [e.with_alpha(float(alpha)) for e in out]
    return out


def steering_name(steering: Any, default: str = "steered") -> str:
    """A short name for a steering configuration (``"none"`` for ``None``)."""
    if steering is None:
        return "none"
    return str(getattr(steering, "name", None) or default)


__all__ = ["resolve_edits", "is_steerer", "steering_name"]
