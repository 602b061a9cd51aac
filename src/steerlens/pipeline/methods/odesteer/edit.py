"""The ODESteer edit: replace the activation by the solution of ``ẋ = v(x)`` at time ``T``.

Strength = integration time. The edit's ``alpha`` *is* ``T`` and its delta is the mean velocity
over ``[0, T]``::

    delta(x) = (x_T − x) / T,     x_T = ODESolve(v, x, T, N steps)

so the hook layer's ``act + alpha · gate · scale · delta`` is ``x + gate · scale · (x_T − x)``:

- open gate (scale 1): the activation is replaced by the ODE solution ``x_T``, as published;
- a soft gate in ``(0, 1)`` moves the activation part of the way from ``x`` to ``x_T``;
- ``alpha = T = 0`` changes nothing (the hook layer does not even attach the edit);
- ``N = 1`` Euler gives ``x + T · v(x)``: one ActAdd-like step of length ``T`` along the unit
  barrier gradient at ``x`` (and ``delta → v(x)`` as ``T → 0``);
- negative ``T`` integrates backwards (towards the negative class).

Positions: ``"current_last"`` by default — on the prompt pass the last prompt token, then each new
token under the KV cache; in teacher-forced scoring every position from the last prompt token on,
each from its own activation (the hook layer's position contract). Only the positions the hook
layer will edit are integrated (``info.mask``).

Trace: with tracing on, ``barrier_before`` = ``h_b(x)`` and ``barrier_after`` = ``h_b(x_T)`` per
token (the ODE end point, i.e. the applied activation when the gate is fully open).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from einops import rearrange

from ....hooks import Edit, EditError, TokenInfo
from ....hooks.sites import SiteLike
from .barrier import Barrier
from .solvers import DEFAULT_BACKEND, SolverError, check_solver, integrate


class ODEEdit(Edit):
    """Steer ``site`` (a residual site) along the barrier's unit-gradient flow for time ``alpha``.

    Args:
        site: a residual-stream site (``blocks.L.hook_resid_post``).
        barrier: the fitted :class:`~.barrier.Barrier`.
        alpha: the integration time ``T`` (the strength; 0 = identity).
        steps: ``N``, fixed steps over ``[0, T]``.
        solver: ``"euler"`` (default), ``"midpoint"`` or ``"rk4"``.
        backend: ``"loop"`` or ``"torchdiffeq"`` (same steps; see :mod:`.solvers`).
        positions, scale, gate, name: as for every :class:`~steerlens.hooks.Edit`.
    """

    def __init__(self, site: SiteLike, barrier: Barrier, alpha: float = 1.0, *, steps: int = 10,
                 solver: str = "euler", backend: str = DEFAULT_BACKEND, positions: str = "current_last",
                 scale: Optional[torch.Tensor] = None, gate: Any = None, name: Optional[str] = None) -> None:
        self._init_common(site, positions, alpha, scale, gate, name)
        if self.site.is_head:
            raise EditError(f"{self.site}: ODESteer edits a residual-stream site, not attention heads")
        try:
            check_solver(solver, steps, backend)
        except SolverError as e:
            raise EditError(str(e)) from None
        if not isinstance(barrier, Barrier):
            raise EditError(f"{self.site}: expected a fitted Barrier, got {type(barrier).__name__}")
        self.barrier = barrier
        self.steps, self.solver, self.backend = int(steps), solver, backend

    @property
    def T(self) -> float:
        """The integration time (= ``alpha``)."""
        return self.alpha

    def validate(self, model) -> "ODEEdit":
        super().validate(model)
        width = self.site.width(model)
        if self.barrier.d != width:
            raise EditError(f"{self.site}: barrier fitted on width {self.barrier.d} but the site has width {width}")
        return self

    def solve(self, x: torch.Tensor) -> torch.Tensor:
        """``x_T`` for rows ``x`` (``[n, d]``)."""
        return integrate(self.barrier.field, x, self.alpha, self.steps, self.solver, self.backend)

    def mean_velocity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``((x_T − x) / T, x_T)``; at ``T = 0`` the limit ``(v(x), x)``."""
        if self.alpha == 0.0:
            return self.barrier.field(x), x
        xt = self.solve(x)
        return (xt - x) / self.alpha, xt

    def delta(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        b, t, d = act.shape
        sel = info.mask
        x = (act[sel] if sel is not None else rearrange(act, "b t d -> (b t) d")).float()
        out = torch.zeros_like(act)
        if x.shape[0] == 0:
            return out
        vel, xt = self.mean_velocity(x)
        if sel is not None:
            out[sel] = vel.to(act.dtype)
        else:
            out = rearrange(vel.to(act.dtype), "(b t) d -> b t d", b=b)
        if info.tracing:
            for key, pts in (("barrier_before", x), ("barrier_after", xt)):
                vals = torch.full((b, t), float("nan"), dtype=torch.float32, device=act.device)
                h = self.barrier.value(pts).float()
                if sel is not None:
                    vals[sel] = h
                else:
                    vals = rearrange(h, "(b t) -> b t", b=b)
                info.report(key, vals, per_token=True)
        return out

    def __repr__(self) -> str:
        return (f"ODEEdit(site={self.site}, T={self.alpha}, steps={self.steps}, solver={self.solver!r}, "
                f"positions={self.positions!r}" + (f", gate={self.gate!r}" if self.gate is not None else "") + ")")


__all__ = ["ODEEdit"]
