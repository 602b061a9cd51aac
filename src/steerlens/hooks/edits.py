"""Edits: what a steering hook adds to the activation at a site.

Every edit computes a **delta** from the activation it sees::

    delta(act, info) -> tensor shaped like act

``act`` is the part of the hook's activation that belongs to the edit's site and positions:
``[b, t, d_model]`` at a residual site (and ``hook_attn_out`` / ``hook_mlp_out``),
``[b, t, n_selected_heads, d_head]`` at a head site (``z``, ``q``, ``k``, ``v``),
``[b, t, n_selected_neurons]`` at an MLP neuron site, ``[b, t, n_selected_heads, k_pos]`` at an
attention pattern. Beyond addition, :mod:`steerlens.hooks.interventions` has scaling, patching,
zero-/mean-ablation and directional ablation, all through the same interface.
The hook layer (not the edit) applies the strength, the gate's scale and the position window::

    act ← act + alpha · scale[row] · gate[row (, token)] · mask[row, token] · delta(act, info)

so ``alpha = 0`` (or a closed gate) leaves the activation untouched bit for bit, and a new
edit only has to say what direction it pushes in. :class:`AddVector` is the constant case (the
delta ignores ``act``); :class:`FunctionEdit` wraps any function of the activation.

Positions (what a user sees under the KV cache):

- ``"all"``: every position of every forward call (prompt and each generated token);
- ``"from_prompt_last"``: the last prompt token and everything after it (on the prompt pass of
  generation that is the last column; then each new token);
- ``"current_last"`` (alias ``"last"``): the current last position of each forward call — the
  last prompt token, then each new token with the KV cache.

Under cached generation the last two edit the same tokens. Teacher-forced scoring (response
log-likelihoods, MC scoring) edits the tokens generation would have edited: with
``"current_last"`` that is every position from the last prompt token on, each edited from its
own activation, which is what step-by-step generation does. Outside steerlens's runners (a bare
forward pass inside :func:`~steerlens.steer`) the prompt boundary is unknown, and both edit
the last column only.

Per-input edits carry a leading input dimension (one vector, or one ``scale``, per input);
:meth:`Edit.take` cuts them down to the inputs of one batch. ``capture``/``generate`` do that
for you.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int

from .sites import Site, SiteLike, parse_site

Positions = Literal["all", "from_prompt_last", "current_last"]
#: Editing positions: which tokens an edit changes. Not the *reading* positions of a capture
#: (:data:`steerlens.hooks.activations.READ_POSITIONS`: where activations are read).
EDIT_POSITIONS: tuple[str, ...] = ("all", "from_prompt_last", "current_last")
POSITIONS = EDIT_POSITIONS  # the former name
_EDIT_POSITION_ALIASES = {"last": "current_last", "current": "current_last", "response": "from_prompt_last"}


class EditError(ValueError):
    """An edit that does not fit its site, its batch, or contains NaN/inf."""


def normalise_positions(p: str) -> str:
    """Canonical position mode (``"last"`` → ``"current_last"``)."""
    p = _EDIT_POSITION_ALIASES.get(str(p), str(p))
    if p not in EDIT_POSITIONS:
        raise EditError(f"positions must be one of {EDIT_POSITIONS} (or 'last'), not {p!r}")
    return p


@dataclass
class TokenInfo:
    """What an edit's ``delta`` knows about the activation it sees (one hook call).

    Attributes:
        rows: ``[b]`` index of each batch row among the inputs of the run.
        step: ``0`` on the prompt pass (or a teacher-forced pass), ``k`` on the k-th decode call.
        prompt_last: ``[b]`` column *in act* of each row's last prompt token, on the prompt pass;
            ``None`` on decode calls (every column is a new token) and outside steerlens's runners.
        mask: ``[b, t]`` the positions the hook layer will edit (``None`` = every column of
            ``act``). The delta may be computed everywhere; masked-out values are discarded.
        state: per-edit, per-batch scratch space (e.g. a vector computed from the prompt once and
            reused for every generated token). Reset for every batch.
        values: named values the edit reports for the trace (see :meth:`report`).
    """

    rows: Int[torch.Tensor, "b"]
    step: int = 0
    prompt_last: Optional[Int[torch.Tensor, "b"]] = None
    mask: Optional[Bool[torch.Tensor, "b t"]] = None
    state: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    tracing: bool = False

    @property
    def is_prompt(self) -> bool:
        return self.step == 0

    def report(self, name: str, value: torch.Tensor, per_token: bool = False) -> None:
        """Record a named value for the trace: ``[b]`` or ``[b, k]`` per row (e.g. ``k`` expert
        weights), or with ``per_token=True`` ``[b, t]`` per column of ``act``. Costs nothing
        when tracing is off."""
        if self.tracing:
            self.values[name] = (value.detach(), bool(per_token))


class Edit:
    """Base class of every edit: a site, positions, a strength, an optional gate and scale.

    Subclasses implement :meth:`delta`. They may override :meth:`take` (per-input state) and
    :meth:`validate` (shape checks against the model).

    Attributes:
        site: where the edit acts.
        positions: ``"all" | "from_prompt_last" | "current_last"`` (see the module docstring).
        alpha: strength, applied by the hook layer; ``0`` = identity (no hook is attached).
        scale: optional ``[n_inputs]`` fixed per-input multiplier in ``[0, 1]`` (a precomputed gate).
        gate: optional :class:`~steerlens.hooks.gates.HookGate`, evaluated on the live activations.
        name: label used in traces (default: the class name and site).
    """

    site: Site
    positions: str
    alpha: float
    scale: Optional[torch.Tensor]
    gate: Any
    name: Optional[str]
    #: whether the edit may act on an attention pattern (``hook_pattern``): ablations only.
    pattern_editable: bool = False

    def _init_common(self, site: SiteLike, positions: str, alpha: float, scale, gate, name) -> None:
        self.site = parse_site(site)
        self.positions = normalise_positions(positions)
        alpha = float(alpha)
        if alpha != alpha or alpha in (float("inf"), float("-inf")):
            raise EditError(f"{self.site}: alpha must be finite, got {alpha}")
        self.alpha = alpha
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=torch.float32).detach().flatten()
            if not torch.isfinite(scale).all():
                raise EditError(f"{self.site}: scale contains NaN or inf")
        self.scale = scale
        self.gate = gate
        self.name = name

    # -- what subclasses implement ------------------------------------------------------------
    def delta(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        """The push at ``act`` (same shape as ``act``), before strength, gate and mask."""
        raise NotImplementedError

    # -- per-input slicing ---------------------------------------------------------------------
    @property
    def n_inputs(self) -> Optional[int]:
        """Number of inputs a per-input edit was built for (``None``: the same for every input)."""
        return None if self.scale is None else int(self.scale.shape[0])

    @property
    def per_input(self) -> bool:
        return self.n_inputs is not None

    def take(self, rows: torch.Tensor) -> "Edit":
        """The edit restricted to inputs ``rows`` (a 1-D index tensor)."""
        if self.scale is None:
            return self
        return self.replace(scale=self.scale[rows.to(torch.long).cpu()])

    def replace(self, **changes) -> "Edit":
        """A shallow copy with some attributes changed (e.g. ``alpha``); the original is untouched."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for k, v in changes.items():
            if k == "positions":
                v = normalise_positions(v)
            setattr(new, k, v)
        return new

    def with_alpha(self, alpha: float) -> "Edit":
        return self.replace(alpha=float(alpha))

    # -- checks --------------------------------------------------------------------------------
    @property
    def is_identity(self) -> bool:
        return self.alpha == 0.0

    def validate(self, model) -> "Edit":
        self.site.validate(model)
        if self.site.is_pattern and not self.pattern_editable:
            raise EditError(f"{self.site}: attention patterns are edited only by ablation (ZeroAblation, or Patch "
                            f"from another input's pattern), not by {type(self).__name__}")
        if self.gate is not None:
            self.gate.validate(model)
        return self

    @property
    def label(self) -> str:
        return self.name or f"{type(self).__name__}@{self.site}"

    def apply(self, act: torch.Tensor, info: Optional[TokenInfo] = None) -> torch.Tensor:
        """``act + alpha · scale · delta`` on every position of ``act`` (no gate, no window):
        for using an edit by hand outside a hook."""
        if self.is_identity:
            return act
        info = info or TokenInfo(rows=torch.arange(act.shape[0]))
        d = self.delta(act, info)
        coef = torch.tensor(self.alpha, dtype=act.dtype, device=act.device)
        if self.scale is not None:
            coef = coef * self.scale.to(act.device, act.dtype)[info.rows.to(act.device)].view(-1, *([1] * (act.ndim - 1)))
        return act + coef * d

    def __repr__(self) -> str:
        return f"{type(self).__name__}(site={self.site}, alpha={self.alpha}, positions={self.positions!r}" + (
            f", gate={self.gate!r}" if self.gate is not None else "") + ")"


class AddVector(Edit):
    """``act ← act + alpha · scale[i] · gate · vector[i]`` — the constant delta.

    Args:
        site: where to add.
        vector: ``[d]`` (residual) or ``[n_heads_selected, d_head]`` (heads), the same for every
            input; with a leading ``[n_inputs]`` dimension for one vector per input.
        alpha: strength; ``alpha = 0`` leaves the activation untouched (bit for bit).
        scale: optional ``[n_inputs]`` per-input multiplier (0 = do not steer this input).
        gate: optional live gate (:class:`~steerlens.hooks.gates.HookGate`).
        positions: ``"all"`` (default), ``"from_prompt_last"`` or ``"current_last"``.
    """

    def __init__(
        self,
        site: SiteLike,
        vector: Float[torch.Tensor, "... d"],
        alpha: float = 1.0,
        *,
        scale: Optional[Float[torch.Tensor, "n"]] = None,
        positions: str = "all",
        gate: Any = None,
        name: Optional[str] = None,
    ) -> None:
        self._init_common(site, positions, alpha, scale, gate, name)
        site = self.site
        vector = torch.as_tensor(vector).detach()
        base = 2 if site.is_head else 1
        if vector.ndim not in (base, base + 1):
            want = ("[n_heads_selected, d_head]" if site.is_head else
                    "[n_neurons_selected] (or [d_mlp])" if site.is_neuron else "[d_model]")
            raise EditError(f"{site}: vector of shape {tuple(vector.shape)}; expected {want} or [n_inputs, *{want}]")
        if site.is_head and vector.shape[-2] != len(site.heads or ()):
            raise EditError(
                f"{site}: vector has {vector.shape[-2]} head rows but the site selects {len(site.heads or ())} heads"
            )
        if not torch.isfinite(vector).all():
            raise EditError(f"{site}: steering vector contains NaN or inf")
        if vector.ndim == base + 1 and self.scale is not None and vector.shape[0] != self.scale.shape[0]:
            raise EditError(f"{site}: {vector.shape[0]} vectors but {self.scale.shape[0]} scales")
        self.vector = vector
        self._cache: dict = {}

    @property
    def _base_ndim(self) -> int:
        return 2 if self.site.is_head else 1

    @property
    def n_inputs(self) -> Optional[int]:
        if self.vector.ndim > self._base_ndim:
            return int(self.vector.shape[0])
        return super().n_inputs

    def take(self, rows: torch.Tensor) -> "AddVector":
        if not self.per_input:
            return self
        rows = rows.to(torch.long).cpu()
        vec = self.vector[rows] if self.vector.ndim > self._base_ndim else self.vector
        scale = None if self.scale is None else self.scale[rows]
        return self.replace(vector=vec, scale=scale, _cache={})

    def validate(self, model) -> "AddVector":
        super().validate(model)
        width = self.site.width(model)
        if self.vector.shape[-1] != width:
            raise EditError(f"{self.site}: vector width {self.vector.shape[-1]} but the site has width {width}")
        return self

    def _vec(self, device, dtype) -> torch.Tensor:
        key = (device, dtype)
        v = self._cache.get(key)
        if v is None:
            v = self.vector.to(device=device, dtype=dtype)
            v = v.unsqueeze(1) if v.ndim > self._base_ndim else v.unsqueeze(0).unsqueeze(0)
            self._cache = {key: v}
        return v

    def delta(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        v = self._vec(act.device, act.dtype)  # [1 or b, 1, ...]
        if v.shape[0] != 1 and v.shape[0] != act.shape[0]:
            raise EditError(
                f"{self.site}: per-input edit has {v.shape[0]} vectors but the batch has {act.shape[0]} inputs; "
                "pass the edits to steerlens.generate/capture (they slice per batch) or call .take(rows)"
            )
        return v


EditFn = Callable[[torch.Tensor, TokenInfo], torch.Tensor]


class FunctionEdit(Edit):
    """Any delta that is a function of the live activation: ``delta = fn(act, info)``.

    ``fn`` receives the site's activation (``[b, t, ...]``) and the :class:`TokenInfo` and returns
    a tensor of the same shape (or one that broadcasts to it). Strength, gate and positions are
    applied by the hook layer as for every other edit.
    """

    def __init__(self, site: SiteLike, fn: EditFn, alpha: float = 1.0, *, positions: str = "all",
                 scale: Optional[torch.Tensor] = None, gate: Any = None, name: Optional[str] = None) -> None:
        self._init_common(site, positions, alpha, scale, gate, name)
        if not callable(fn):
            raise EditError(f"{self.site}: fn must be callable")
        self.fn = fn

    def delta(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        return self.fn(act, info)


def validate_edits(model, edits: Sequence[Edit] | Edit | None) -> list[Edit]:
    if edits is None:
        return []
    if isinstance(edits, Edit):
        edits = [edits]
    out = []
    for e in edits:
        if not isinstance(e, Edit):
            raise EditError(f"expected steerlens edits, got {type(e).__name__}")
        out.append(e.validate(model))
    return out


def take_edits(edits: Sequence[Edit], rows: torch.Tensor) -> list[Edit]:
    return [e.take(rows) for e in edits]


def check_edit_inputs(edits: Sequence[Edit], n_inputs: int) -> None:
    """Per-input edits must carry exactly one entry per input."""
    for e in edits:
        n = e.n_inputs
        if n is not None and n != n_inputs:
            raise EditError(f"{e.site}: per-input edit built for {n} inputs, but {n_inputs} inputs were given")


__all__ = ["Edit", "AddVector", "FunctionEdit", "TokenInfo", "EditError", "Positions", "EDIT_POSITIONS", "POSITIONS",
           "normalise_positions", "validate_edits", "take_edits", "check_edit_inputs"]
