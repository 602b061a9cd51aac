"""The three roles of a steering method and their registry.

A steering method answers three questions, each answered by one *role*:

- **where** — a :class:`Selector` ranks candidate *modules* (a residual layer, or one attention
  head's ``hook_z`` output) and returns a :class:`~steerlens.pipeline.selection.Selection`;
- **when** — a :class:`Gate` gives each input prompt a score and a scale in ``[0, 1]``
  (default :class:`~steerlens.pipeline.gates.AlwaysOpen`);
- **how** — an :class:`Editor` turns the selection into hook-layer edits.

Every role is serialisable: ``config()`` (JSON: constructor parameters plus fitted non-tensor
state) and ``state_dict()`` (tensors); ``Role.from_state(config, tensors)`` rebuilds it. Role
classes register themselves with :func:`register_role` under their ``kind`` (artifacts record the
kind, not the class path), so artifacts load without a central list.

Specs name roles by short names (:data:`ROLE_ALIASES`, added with :func:`register_role_alias`)
and may fill a role's parameters from the editor it is paired with
(:func:`register_spec_defaults`). Method packages register their aliases and defaults
themselves when imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
from jaxtyping import Float

from ..hooks import Edit, HookGate, Site
from .contrastive import ContrastiveActs
from .errors import PipelineError
from .selection import Selection

ROLE_TYPES: dict[str, type["Role"]] = {}


def register_role(cls: type["Role"]) -> type["Role"]:
    """Class decorator: make a role loadable from artifacts under ``cls.kind``."""
    kind = getattr(cls, "kind", None)
    if not kind:
        raise PipelineError(f"{cls.__name__} needs a class attribute `kind`")
    if kind in ROLE_TYPES and ROLE_TYPES[kind] is not cls:
        existing = ROLE_TYPES[kind]
        if (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise PipelineError(f"role kind {kind!r} already registered by {existing.__module__}.{existing.__qualname__}")
    ROLE_TYPES[kind] = cls
    return cls


class Role:
    """Base of selectors, gates and editors: parameters, fitted state, (de)serialisation.

    Subclasses set ``kind`` (a unique name), store constructor parameters with
    ``self.params = dict(...)`` (JSON-serialisable; ``cls(**params)`` must rebuild an unfitted
    role), and override ``extra_state`` / ``state_dict`` / ``load_state`` for fitted state.
    """

    kind: ClassVar[str] = ""
    params: dict

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)

    @property
    def fitted(self) -> bool:
        return True

    def extra_state(self) -> dict:
        """Fitted non-tensor state (JSON)."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Fitted tensors."""
        return {}

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``extra_state`` / ``state_dict`` returned."""

    def config(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params), "state": self.extra_state()}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Role":
        kind = config.get("kind")
        target = ROLE_TYPES.get(kind) if cls is Role or kind != cls.kind else cls
        if target is None:
            raise PipelineError(f"unknown role kind {kind!r}; known: {sorted(ROLE_TYPES)} "
                                "(a plugin that defines it may not be imported)")
        obj = target(**config.get("params", {}))
        obj.load_state(config.get("state", {}), tensors)
        return obj

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise PipelineError(f"{type(self).__name__} is not fitted: call Steerer.fit first")

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({ps})"


class Selector(Role):
    """Where to steer. ``candidate_sites`` says what to capture; ``fit`` returns a Selection."""

    def candidate_sites(self, model) -> list[Site]:
        """Sites to capture on the contrastive data (whole-layer head sites for heads)."""
        raise NotImplementedError

    def fit(self, model, acts: ContrastiveActs) -> Selection:
        raise NotImplementedError


@dataclass
class GateDecision:
    """Per-prompt gate output: a score (higher = more in need of steering) and a scale in [0, 1]."""

    scores: Float[torch.Tensor, "n"]
    scale: Float[torch.Tensor, "n"]

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).flatten()
        self.scale = torch.as_tensor(self.scale, dtype=torch.float32).flatten()
        if self.scores.shape != self.scale.shape:
            raise PipelineError(f"gate: {self.scores.shape[0]} scores but {self.scale.shape[0]} scales")
        if not torch.isfinite(self.scale).all() or (self.scale < 0).any() or (self.scale > 1).any():
            raise PipelineError("gate scales must be finite and in [0, 1]")

    @property
    def open(self) -> torch.Tensor:
        return self.scale > 0


class Gate(Role):
    """When to steer: a fitted rule that the hook layer evaluates on live activations.

    ``fit`` gets prompt-side activations (last prompt token) of target (``pos``) vs benign
    (``neg``) prompts at ``required_sites``; :meth:`hook_gate` returns the
    :class:`~steerlens.hooks.gates.HookGate` that the edits carry (``None``: always open).
    A prompt gate is decided at the last prompt token and held for the generation; a token
    gate is re-evaluated on every token (see :mod:`steerlens.hooks.gates`).
    """

    def required_sites(self, model) -> list[Site]:
        hg = self.hook_gate(model)
        return [] if hg is None else [hg.site]

    def fit(self, model, acts: ContrastiveActs) -> None:
        return None

    def hook_gate(self, model) -> Optional[HookGate]:
        raise NotImplementedError

    def decide(self, model, prompt_acts: dict[Site, torch.Tensor], n: int) -> GateDecision:
        """Scores and scales of ``n`` prompts from their captured last-token activations (the
        same numbers the hook gate computes inside the forward pass; used for reports)."""
        hg = self.hook_gate(model)
        if hg is None:
            return GateDecision(torch.ones(n), torch.ones(n))
        x = prompt_acts[hg.site]
        s = hg.checked_score(x.unsqueeze(1))[:, 0]
        return GateDecision(s, hg.scale_of(s).clamp(0, 1))

    @property
    def always_open(self) -> bool:
        return False


class Editor(Role):
    """How to steer: fitted on the selected modules' activations, returns hook-layer edits.

    ``edits`` returns :class:`~steerlens.Edit` objects whose ``delta`` may read the live
    activation; strength, gate and positions are applied by the hook layer, so an editor never
    multiplies by them itself. ``query_sites`` (optional) are read at the last prompt token of
    the fitting prompts into ``ContrastiveActs.query``, for editors fitted on prompt states
    (MoSE's router). ``read_sites`` (optional) are sites besides the selected ones whose fitting
    activations the editor reads (at the data's reading position, e.g. MoSE reading one layer
    before the one it edits); :meth:`Steerer.fit` captures them after the selection.
    """

    def query_sites(self, model, selection: Selection) -> list[Site]:
        return []

    def read_sites(self, model, selection: Selection) -> list[Site]:
        return []

    def fit(self, model, acts: ContrastiveActs, selection: Selection) -> None:
        raise NotImplementedError

    def edits(self, model, selection: Selection, alpha: float, gate: Optional[HookGate] = None) -> list[Edit]:
        """The edits at strength ``alpha``, each carrying ``gate`` (``None``: always open)."""
        raise NotImplementedError

    def check_model(self, model) -> None:
        """Raise :class:`PipelineError` if the fitted state does not fit ``model`` (widths)."""



# ----------------------------------------------------------------------------------------
# Short names and spec defaults (registered by the packages that define the roles)
# ----------------------------------------------------------------------------------------

ROLES = ("selector", "gate", "editor")

#: short role names: ``ROLE_ALIASES[role][name] = {"kind": ..., **default params}``.
ROLE_ALIASES: dict[str, dict[str, dict]] = {r: {} for r in ROLES}

#: ``SPEC_DEFAULTS[kind](editor) -> {param: value}``: parameters a spec sets (unless given) on a
#: role of ``kind`` from the editor it is paired with.
SPEC_DEFAULTS: dict[str, Callable[[Any], dict]] = {}


def register_role_alias(role: str, name: str, table: dict) -> None:
    """Let specs and ``--vary`` name a role by ``name`` (e.g. ``register_role_alias("gate",
    "scs-outside", {"kind": "scs", "form": "outside"})``)."""
    if role not in ROLES:
        raise PipelineError(f"role must be one of {ROLES}, got {role!r}")
    if "kind" not in table:
        raise PipelineError("an alias table needs a 'kind'")
    ROLE_ALIASES.setdefault(role, {})[name] = dict(table)


def register_spec_defaults(kind: str, defaults: Callable[[Any], dict]) -> None:
    """``defaults(editor) -> {param: value}`` fills (never overrides) parameters of a spec role of
    ``kind`` from the editor it is paired with (``editor`` may be ``None``)."""
    SPEC_DEFAULTS[kind] = defaults


__all__ = ["Role", "Selector", "Gate", "GateDecision", "Editor", "register_role", "ROLE_TYPES", "ROLES",
           "ROLE_ALIASES", "register_role_alias", "SPEC_DEFAULTS", "register_spec_defaults"]
