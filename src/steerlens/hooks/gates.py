"""Gates: when to steer, decided from live activations inside the forward pass.

A :class:`HookGate` reads the activation at its site and gives every row a score (higher = more
in need of steering) and a scale in ``[0, 1]`` that the hook layer multiplies into the edits
that carry the gate. Two kinds:

- ``mode="prompt"``: scored once, at the last prompt token on the prompt pass, and held for the
  whole generation (FineSteer's SCS gate). In teacher-forced scoring it is read at the same
  token, so generation and scoring steer the same rows.
- ``mode="token"``: scored on every token's activation, on the prompt pass and on each new token
  (a conditional-steering gate). Per-row state (``update``) is reset for every batch.

A gate reads the activation that arrives at its hook point, before any edit at that same hook.
When a prompt gate sits downstream of an edit it controls (a gate at layer 14 for an edit at
layer 10), the runners read it in a short pre-pass over the prompt that stops at the gate's
layer; a token gate must sit at or upstream of its edits.

Subclasses implement :meth:`HookGate.score`; :class:`FunctionGate` wraps a function.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from jaxtyping import Float

from .sites import Site, SiteLike, parse_site

GATE_MODES = ("prompt", "token")


class GateError(ValueError):
    """A gate that does not fit its site or returned malformed scores."""


def threshold_scale(scores: torch.Tensor, threshold: float, temperature: Optional[float] = None) -> torch.Tensor:
    """The one rule from gate score to scale: hard ``1[score > τ]`` (``temperature=None``), or soft
    ``sigmoid((score − τ) / temperature)``. Hook gates and the pipeline's calibrated gates both use it."""
    if temperature is None:
        return (scores > threshold).to(scores.dtype)
    return torch.sigmoid((scores - threshold) / temperature)


class HookGate:
    """Base class: a site, a mode, and a rule from score to scale.

    Args:
        site: where the gate reads (a residual site, or a head site).
        mode: ``"prompt"`` (decided at the last prompt token, held) or ``"token"`` (every token).
        threshold: τ; hard gate ``scale = 1[score > τ]``.
        temperature: if set, soft gate ``scale = sigmoid((score − τ) / temperature)``.
        name: label in traces and results (default: the class name).
    """

    def __init__(self, site: SiteLike, mode: str = "prompt", threshold: float = 0.0,
                 temperature: Optional[float] = None, name: Optional[str] = None) -> None:
        if mode not in GATE_MODES:
            raise GateError(f"gate mode must be one of {GATE_MODES}, got {mode!r}")
        if temperature is not None and not float(temperature) > 0:
            raise GateError(f"gate temperature must be > 0, got {temperature}")
        if not torch.isfinite(torch.tensor(float(threshold))):
            raise GateError(f"gate threshold must be finite, got {threshold}")
        self.site: Site = parse_site(site)
        self.mode = mode
        self.threshold = float(threshold)
        self.temperature = None if temperature is None else float(temperature)
        self.name = name or type(self).__name__

    def score(self, act: torch.Tensor) -> Float[torch.Tensor, "b t"]:
        """Scores ``[b, t]`` from the site's activation ``[b, t, ...]``."""
        raise NotImplementedError

    def scale_of(self, scores: torch.Tensor) -> torch.Tensor:
        """Scale in ``[0, 1]`` from scores (hard or soft, :func:`threshold_scale`)."""
        return threshold_scale(scores, self.threshold, self.temperature)

    def update(self, scores: Float[torch.Tensor, "b t"], state: dict) -> Float[torch.Tensor, "b t"]:
        """Token gates: the scale of each new column given the row's state (reset per batch).
        The default has no memory; override for latching or smoothing gates."""
        return self.scale_of(scores)

    def checked_score(self, act: torch.Tensor) -> torch.Tensor:
        s = self.score(act)
        if s.shape != act.shape[:2]:
            raise GateError(f"{self.name}: score returned shape {tuple(s.shape)}; expected {tuple(act.shape[:2])}")
        if not torch.isfinite(s).all():
            raise GateError(f"{self.name}: gate score is NaN or inf at {self.site}")
        return s

    def validate(self, model) -> "HookGate":
        self.site.validate(model)
        return self

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(site={self.site}, mode={self.mode!r}, threshold={self.threshold:g}"
                + (f", temperature={self.temperature:g}" if self.temperature is not None else "") + ")")


class FunctionGate(HookGate):
    """A gate whose score is ``fn(act)`` (``[b, t, ...] -> [b, t]``)."""

    def __init__(self, site: SiteLike, fn: Callable[[torch.Tensor], torch.Tensor], mode: str = "prompt",
                 threshold: float = 0.0, temperature: Optional[float] = None, name: Optional[str] = None) -> None:
        super().__init__(site, mode, threshold, temperature, name)
        self.fn = fn

    def score(self, act: torch.Tensor) -> torch.Tensor:
        return self.fn(act)


class GateProbe:
    """Prompt gates to read during a batched run without letting them control anything: pass it
    as ``probe=`` to :func:`~steerlens.hooks.generate`, :func:`~steerlens.hooks.response_logprobs`
    or :func:`~steerlens.hooks.next_token_logprobs`; afterwards ``score`` and ``scale`` are
    ``[n_gates, n_inputs]`` (float32; NaN for inputs the run left out). Each gate is read at the
    last prompt token, in the same batches as the run's own gates would be read. ``prepass``
    (one flag per gate): read that gate in generation's short prompt pre-pass, where a run reads
    a prompt gate that sits downstream of one of its edits (the pre-pass forward and generation's
    cached prompt pass can differ in the last bits)."""

    def __init__(self, gates, prepass=None) -> None:
        self.gates: list[HookGate] = list(gates)
        self.prepass: list[bool] = [False] * len(self.gates) if prepass is None else [bool(x) for x in prepass]
        if len(self.prepass) != len(self.gates):
            raise GateError(f"{len(self.prepass)} pre-pass flags for {len(self.gates)} gates")
        for g in self.gates:
            if not isinstance(g, HookGate) or g.mode != "prompt":
                raise GateError(f"only prompt gates can be probed, got {g!r}")
        self.score: Optional[torch.Tensor] = None
        self.scale: Optional[torch.Tensor] = None

    def start(self, n: int) -> None:
        self.score = torch.full((len(self.gates), n), float("nan"))
        self.scale = torch.full((len(self.gates), n), float("nan"))

    def fill(self, rows: list[int], readings: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        assert self.score is not None and self.scale is not None
        idx = torch.as_tensor(rows, dtype=torch.long)
        for k, (s, c) in enumerate(readings):
            self.score[k, idx] = s.float().cpu()
            self.scale[k, idx] = c.float().cpu()


__all__ = ["HookGate", "FunctionGate", "GateError", "GateProbe", "GATE_MODES", "threshold_scale"]
