"""Fixed-step integration of the autonomous ODE ``ẋ = v(x)`` over ``[0, T]`` in ``N`` steps.

Solvers (``dt = T / N``, rows of ``x`` integrated together as one batch):

- ``"euler"``: ``x ← x + dt · v(x)`` (ODESteer's default, ``N = 10``). With ``N = 1`` this is one
  activation-addition step of length ``T`` along the local field.
- ``"midpoint"``: ``x ← x + dt · v(x + dt/2 · v(x))``.
- ``"rk4"``: the fourth-order Runge–Kutta "3/8 rule" (torchdiffeq's ``"rk4"``):
  ``k1 = v(x)``, ``k2 = v(x + dt k1/3)``, ``k3 = v(x + dt (k2 − k1/3))``,
  ``k4 = v(x + dt (k1 − k2 + k3))``, ``x ← x + dt (k1 + 3 k2 + 3 k3 + k4) / 8``.

Backends: ``"torchdiffeq"`` (its fixed-grid solvers on the grid ``linspace(0, T, N + 1)``) and
``"loop"`` (the same update rules written out, one Python loop over the steps). They compute the
same sequence of states; the loop skips torchdiffeq's per-call input checks, grid construction
and per-step interpolation bookkeeping. ``benchmarks/bench_odesteer.py`` times both; the default
(:data:`DEFAULT_BACKEND`) is the faster one there (see that benchmark's JSON and the README).
Negative ``T`` integrates backwards (towards the negative class).
"""

from __future__ import annotations

from typing import Callable

import torch

SOLVERS = ("euler", "midpoint", "rk4")
BACKENDS = ("loop", "torchdiffeq")
#: The backend used unless one is asked for (chosen by ``benchmarks/bench_odesteer.py``).
DEFAULT_BACKEND = "loop"

Field = Callable[[torch.Tensor], torch.Tensor]


class SolverError(ValueError):
    """Unknown solver or backend, or a bad number of steps."""


def check_solver(solver: str, steps: int, backend: str) -> None:
    if solver not in SOLVERS:
        raise SolverError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if backend not in BACKENDS:
        raise SolverError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if int(steps) != steps or int(steps) < 1:
        raise SolverError(f"steps (N) must be a positive integer, got {steps}")


def _step_loop(v: Field, x: torch.Tensor, dt: float, solver: str) -> torch.Tensor:
    if solver == "euler":
        return x + dt * v(x)
    if solver == "midpoint":
        return x + dt * v(x + (0.5 * dt) * v(x))
    k1 = v(x)
    k2 = v(x + dt * k1 * (1 / 3))
    k3 = v(x + dt * (k2 - k1 * (1 / 3)))
    k4 = v(x + dt * (k1 - k2 + k3))
    return x + (k1 + 3 * (k2 + k3) + k4) * (dt * 0.125)


def integrate(v: Field, x0: torch.Tensor, T: float, steps: int = 10, solver: str = "euler",
              backend: str = DEFAULT_BACKEND) -> torch.Tensor:
    """``x(T)`` for ``ẋ = v(x)``, ``x(0) = x0`` (``[n, d]``), ``steps`` fixed steps of ``solver``."""
    check_solver(solver, steps, backend)
    T = float(T)
    if T == 0.0:
        return x0
    if backend == "loop":
        dt = T / int(steps)
        x = x0
        for _ in range(int(steps)):
            x = _step_loop(v, x, dt, solver)
        return x
    try:
        from torchdiffeq import odeint
    except ModuleNotFoundError:  # pragma: no cover - depends on the environment
        raise SolverError("backend 'torchdiffeq' needs the torchdiffeq package (pip install torchdiffeq); "
                          "backend='loop' computes the same steps without it") from None
    n = int(steps)

    def grid(func, y0, t):
        g = torch.linspace(float(t[0]), float(t[-1]), n + 1, dtype=t.dtype, device=t.device)
        g[0], g[-1] = t[0], t[-1]
        return g

    t = torch.tensor([0.0, T], dtype=x0.dtype, device=x0.device)
    return odeint(lambda _t, y: v(y), x0, t, method=solver, options={"grid_constructor": grid})[-1]


__all__ = ["integrate", "SOLVERS", "BACKENDS", "DEFAULT_BACKEND", "SolverError", "check_solver"]
