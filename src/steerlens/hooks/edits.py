"""Edit functions: what a steering hook does to the activation at a site.

An edit sees the activation restricted to its site: ``[batch, pos, d_model]`` at a residual
site, ``[batch, pos, n_selected_heads, d_head]`` at a head site. It edits every position of each
forward call (``positions="all"``), or only the last one (``positions="last"``: the last prompt
token on the prompt pass, then each new token when generating with the KV cache).

Per-input edits (one vector per input, a per-input gate scale) carry a leading input dimension;
:meth:`Edit.take` cuts them down to the inputs of one batch. ``capture`` and ``generate`` do that
for you, so a list of edits fitted for ``n`` prompts can be handed to them as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Optional, Sequence

import torch
from jaxtyping import Float

from .sites import Site, SiteLike, parse_site

Positions = Literal["all", "last"]


class EditError(ValueError):
    """An edit that does not fit its site, its batch, or contains NaN/inf."""


def _check_positions(p: str) -> None:
    if p not in ("all", "last"):
        raise EditError(f"positions must be 'all' or 'last', not {p!r}")


@dataclass
class Edit:
    """Base class: a site, the positions it edits, and ``apply``."""

    site: Site
    positions: Positions = "all"

    @property
    def per_input(self) -> bool:
        return False

    @property
    def is_identity(self) -> bool:
        return False

    def take(self, rows: torch.Tensor) -> "Edit":
        """The edit restricted to inputs ``rows`` (a 1-D index tensor)."""
        return self

    def apply(self, act: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, model) -> "Edit":
        self.site.validate(model)
        return self


@dataclass
class AddVector(Edit):
    """``act ← act + alpha · scale[i] · vector[i]``.

    Args:
        site: where to add.
        vector: ``[d]`` (residual) or ``[n_heads_selected, d_head]`` (heads) for one vector for
            all inputs; with a leading ``[n_inputs]`` dimension for one vector per input.
        alpha: strength; ``alpha = 0`` leaves the activation untouched (bit for bit).
        scale: optional ``[n_inputs]`` per-input multiplier (a gate: 0 = do not steer this input).
        positions: ``"all"`` or ``"last"``.
    """

    vector: torch.Tensor = field(default=None)  # type: ignore[assignment]
    alpha: float = 1.0
    scale: Optional[torch.Tensor] = None

    def __init__(
        self,
        site: SiteLike,
        vector: Float[torch.Tensor, "... d"],
        alpha: float = 1.0,
        *,
        scale: Optional[Float[torch.Tensor, "n"]] = None,
        positions: Positions = "all",
    ) -> None:
        site = parse_site(site)
        _check_positions(positions)
        vector = torch.as_tensor(vector).detach()
        base = 2 if site.is_head else 1
        if vector.ndim not in (base, base + 1):
            want = "[n_heads_selected, d_head]" if site.is_head else "[d_model]"
            raise EditError(f"{site}: vector of shape {tuple(vector.shape)}; expected {want} or [n_inputs, *{want}]")
        if site.is_head and vector.shape[-2] != len(site.heads or ()):
            raise EditError(
                f"{site}: vector has {vector.shape[-2]} head rows but the site selects {len(site.heads or ())} heads"
            )
        if not torch.isfinite(vector).all():
            raise EditError(f"{site}: steering vector contains NaN or inf")
        if not (alpha == alpha) or alpha in (float("inf"), float("-inf")):
            raise EditError(f"{site}: alpha must be finite, got {alpha}")
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=torch.float32).detach().flatten()
            if not torch.isfinite(scale).all():
                raise EditError(f"{site}: scale contains NaN or inf")
            if vector.ndim == base + 1 and vector.shape[0] != scale.shape[0]:
                raise EditError(f"{site}: {vector.shape[0]} vectors but {scale.shape[0]} scales")
        self.site, self.vector, self.alpha, self.scale, self.positions = site, vector, float(alpha), scale, positions

    @property
    def _base_ndim(self) -> int:
        return 2 if self.site.is_head else 1

    @property
    def per_input(self) -> bool:
        return self.vector.ndim > self._base_ndim or self.scale is not None

    @property
    def n_inputs(self) -> int | None:
        if self.vector.ndim > self._base_ndim:
            return int(self.vector.shape[0])
        return None if self.scale is None else int(self.scale.shape[0])

    @property
    def is_identity(self) -> bool:
        return self.alpha == 0.0

    def take(self, rows: torch.Tensor) -> "AddVector":
        if not self.per_input:
            return self
        rows = rows.to(torch.long).cpu()
        vec = self.vector[rows] if self.vector.ndim > self._base_ndim else self.vector
        scale = None if self.scale is None else self.scale[rows]
        return AddVector(self.site, vec, self.alpha, scale=scale, positions=self.positions)

    def validate(self, model) -> "AddVector":
        super().validate(model)
        width = self.site.width(model)
        if self.vector.shape[-1] != width:
            raise EditError(f"{self.site}: vector width {self.vector.shape[-1]} but the site has width {width}")
        return self

    def delta(self, batch: int, device, dtype) -> torch.Tensor:
        """The added tensor, broadcastable to ``[batch, pos, *site_shape]``."""
        v = self.vector.to(device=device, dtype=dtype) * self.alpha
        if v.ndim > self._base_ndim:
            if v.shape[0] != batch:
                raise EditError(
                    f"{self.site}: per-input edit has {v.shape[0]} vectors but the batch has {batch} inputs; "
                    "pass the edits to steerlens.generate/capture (they slice per batch) or call .take(rows)"
                )
            v = v.unsqueeze(1)  # [b, 1, ...]
        else:
            v = v.unsqueeze(0).unsqueeze(0)
        if self.scale is not None:
            s = self.scale.to(device=device, dtype=dtype)
            if s.shape[0] != batch:
                raise EditError(f"{self.site}: {s.shape[0]} per-input scales but the batch has {batch} inputs")
            v = v * s.view(batch, *([1] * (v.ndim - 1)))
        return v

    def apply(self, act: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return act
        return act + self.delta(act.shape[0], act.device, act.dtype)


EditFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


@dataclass
class FunctionEdit(Edit):
    """An arbitrary edit ``act ← fn(act, rows)``; ``rows`` are the batch's indices among the
    inputs handed to ``generate``/``capture`` (``None`` when applied directly).

    ``strength = 0`` skips ``fn`` entirely (identity). Used by editors whose update depends on
    the activation itself (ODESteer's flow along a barrier gradient).
    """

    fn: EditFn = field(default=None)  # type: ignore[assignment]
    strength: float = 1.0
    rows: Optional[torch.Tensor] = None

    def __init__(self, site: SiteLike, fn: EditFn, *, positions: Positions = "last", strength: float = 1.0,
                 rows: Optional[torch.Tensor] = None) -> None:
        _check_positions(positions)
        self.site, self.fn, self.positions, self.strength, self.rows = parse_site(site), fn, positions, float(strength), rows

    @property
    def is_identity(self) -> bool:
        return self.strength == 0.0

    def take(self, rows: torch.Tensor) -> "FunctionEdit":
        rows = rows.to(torch.long).cpu()
        new_rows = rows if self.rows is None else self.rows[rows]
        return replace(self, rows=new_rows)

    def apply(self, act: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return act
        out = self.fn(act, self.rows)
        if out.shape != act.shape:
            raise EditError(f"{self.site}: edit function returned shape {tuple(out.shape)} for {tuple(act.shape)}")
        return out


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
        n = getattr(e, "n_inputs", None)
        if n is not None and n != n_inputs:
            raise EditError(f"{e.site}: per-input edit built for {n} inputs, but {n_inputs} inputs were given")
