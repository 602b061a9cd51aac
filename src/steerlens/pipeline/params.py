"""Typed method parameters: the base of the frozen dataclass each registered method keeps of its
factory's keyword arguments (same names and defaults), from which the steerer's recorded
``method_params`` are taken instead of being copied by hand into a ``dict(...)``.

A factory builds its parameters first thing from its own arguments, ``p = CAAParams.of(locals())``,
and records ``p.record()``. Normalisation that used to happen while copying (``layers`` to a
list, site strings, types) lives in the dataclass's ``__post_init__``, so the recorded dict is the
same as before for the same call. Imports nothing from steerlens (low in the import graph).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Sequence, TypeVar

P = TypeVar("P", bound="MethodParams")


@dataclass(frozen=True)
class MethodParams:
    """Base of a method's parameters (subclass with ``@dataclass(frozen=True)``; the field order
    is the order of the recorded dict)."""

    @classmethod
    def of(cls: type[P], args: Mapping[str, Any]) -> P:
        """The parameters named by the fields, picked from ``args`` (a factory's ``locals()``);
        other entries (a ``gate`` role, ``**kw``) are left out."""
        return cls(**{f.name: args[f.name] for f in fields(cls)})

    def record(self) -> dict[str, Any]:
        """The recorded ``method_params`` (``dataclasses.asdict``: a fresh, JSON-ready dict)."""
        return asdict(self)

    def pick(self, *names: str) -> dict[str, Any]:
        """``{name: value}`` for ``names`` (keyword arguments for a role's constructor)."""
        return {n: getattr(self, n) for n in names}

    def _set(self, **values: Any) -> None:
        """Normalise fields in ``__post_init__`` (the dataclass is frozen)."""
        for k, v in values.items():
            object.__setattr__(self, k, v)


#: Layers of the default model (SmolLM2-135M-Instruct), what the ``paper`` presets are scaled to.
DEFAULT_MODEL_LAYERS = 30


def scaled_layer(layer: int, of: int, n_layers: int = DEFAULT_MODEL_LAYERS) -> int:
    """A published layer carried over by relative depth: ``round(layer / of · n_layers)`` (block
    13 of 32 → 12 of 30), clipped to ``[0, n_layers − 1]``. The ``paper`` presets use it."""
    if of < 1 or n_layers < 1:
        raise ValueError(f"layer counts must be >= 1, got of={of}, n_layers={n_layers}")
    return int(min(n_layers - 1, max(0, round(layer / of * n_layers))))


def list_or_none(xs: Optional[Sequence]) -> Optional[list]:
    """``None`` stays ``None``; any other sequence becomes a list (as recorded in JSON)."""
    return None if xs is None else list(xs)


__all__ = ["MethodParams", "list_or_none", "scaled_layer", "DEFAULT_MODEL_LAYERS"]
