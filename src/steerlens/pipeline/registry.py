"""The method registry: ``make_steerer(method, **params)`` without a central if/else.

A method registers a factory that builds an unfitted :class:`~steerlens.pipeline.base.Steerer`::

    from steerlens.pipeline import register_method

    @register_method("real", help="REAL-selected heads, ITI-style editor")
    def make_real(*, heads: int = 16, alpha: float = 5.0, **kw) -> Steerer:
        return Steerer(REALSelector(heads=heads, **kw), ITIEditor(), alpha=alpha, method="real",
                       method_params=dict(heads=heads, alpha=alpha, **kw))

Plugins listed in :data:`PLUGINS` are imported lazily the first time the registry is read, so
``make_steerer("real")`` works once ``steerlens.pipeline.real`` exists, without importing it at
package import time.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .base import Gate, PipelineError, Steerer

#: Modules that register methods when imported (missing ones are skipped).
PLUGINS: list[str] = [
    "steerlens.pipeline.baselines",
    "steerlens.pipeline.real",
    "steerlens.pipeline.interventions",
    "steerlens.pipeline.finesteer",
    "steerlens.pipeline.odesteer",
]


@dataclass
class MethodInfo:
    name: str
    factory: Callable[..., Steerer]
    help: str = ""
    #: default site family: "resid" (a layer) or "heads".
    family: str = "resid"
    #: how the contract suite builds this method on the 2-layer tiny random model:
    #: ``{"params": {...}, "gen_alpha": strength at which greedy text changes there}``.
    contract: Optional[dict] = None
    hidden: bool = False

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters of the factory and their defaults."""
        sig = inspect.signature(self.factory)
        return {k: (None if p.default is inspect.Parameter.empty else p.default)
                for k, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


METHODS: dict[str, MethodInfo] = {}
_loaded = False


def register_method(name: str, *, help: str = "", family: str = "resid", contract: Optional[dict] = None,
                    hidden: bool = False) -> Callable:
    """Decorator: register ``factory(**params) -> Steerer`` under ``name``.

    ``contract`` tells the contract suite (``tests/test_contract.py``) how to build the method on
    the tiny random model; every registered method runs through it. ``hidden`` methods (test
    roles) are left out of ``steerlens methods``."""
    key = name.lower()

    def deco(factory: Callable[..., Steerer]) -> Callable[..., Steerer]:
        old = METHODS.get(key)
        if old is not None and (old.factory.__module__, old.factory.__qualname__) != (
                factory.__module__, factory.__qualname__):
            raise PipelineError(f"method {name!r} is already registered by {old.factory.__module__}")
        METHODS[key] = MethodInfo(key, factory, help, family, contract, hidden)
        return factory

    return deco


def load_plugins() -> None:
    """Import the plugin modules that register methods and roles (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in PLUGINS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # the plugin itself is absent: fine; anything else is a bug in it
                warnings.warn(f"steering plugin {mod} failed to import ({e!r}); its methods are unavailable")
        except Exception as e:  # noqa: BLE001 - one broken plugin must not hide the others
            warnings.warn(f"steering plugin {mod} failed to import ({e!r}); its methods are unavailable")


def available_methods() -> dict[str, MethodInfo]:
    load_plugins()
    return dict(METHODS)


def available_gates() -> list[str]:
    """Kinds of the registered gate roles (``make_gate`` / ``make_steerer(gate=...)`` names)."""
    from .base import ROLE_TYPES, Gate

    load_plugins()
    return sorted(k for k, c in ROLE_TYPES.items() if issubclass(c, Gate))


def make_gate(gate: Any, **params: Any) -> Gate:
    """An unfitted gate role from its kind (e.g. ``"scs"``, ``"probe"``, ``"always_open"``) and
    parameters; a :class:`Gate` instance is returned as is (then ``params`` must be empty)."""
    from .base import ROLE_TYPES

    if isinstance(gate, Gate):
        if params:
            raise PipelineError("gate parameters given together with a gate instance; set them on the instance")
        return gate
    load_plugins()
    cls = ROLE_TYPES.get(str(gate))
    if cls is None or not issubclass(cls, Gate):
        raise PipelineError(f"unknown gate {gate!r}; available: {', '.join(available_gates())}")
    try:
        return cls(**params)
    except TypeError as e:
        accepted = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "params")]
        raise PipelineError(f"gate {gate!r}: {e}; it takes {accepted}") from None


def make_steerer(method: str, *, gate: Any = None, gate_params: Optional[dict] = None, **params: Any) -> Steerer:
    """An unfitted steerer for ``method`` (e.g. ``"caa"``, ``"repe"``, ``"iti"``, ``"real"``).

    ``params`` go to the method's factory; unknown ones are an error naming the accepted ones.
    ``gate`` (a gate kind such as ``"scs"`` / ``"probe"``, or a :class:`Gate`) with
    ``gate_params`` gates any method: the factory's steerer gets that gate instead of its own
    (see :meth:`Steerer.with_gate`); fit it with ``fit(model, data, gate_data=...)``.
    """
    methods = available_methods()
    info = methods.get(str(method).lower())
    if info is None:
        raise PipelineError(f"unknown steering method {method!r}; available: {', '.join(sorted(methods))}")
    accepted = info.parameters()
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(info.factory).parameters.values())
    bad = [k for k in params if k not in accepted]
    if bad and not has_var_kw:
        raise PipelineError(f"method {info.name!r} does not take {bad}; it takes {sorted(accepted)}")
    st = info.factory(**params)
    if gate is None:
        if gate_params:
            raise PipelineError("gate_params given without gate=")
        return st
    return st.with_gate(make_gate(gate, **(gate_params or {})))


__all__ = ["register_method", "make_steerer", "make_gate", "available_gates", "available_methods", "METHODS", "MethodInfo", "load_plugins", "PLUGINS"]
