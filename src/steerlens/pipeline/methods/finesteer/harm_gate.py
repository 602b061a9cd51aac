"""A gate meant to recognise harm rather than the phrasing of its fitting sets.

:class:`HarmDirectionGate` (kind ``"harm_dir"``) scores a prompt by its projection on one
*harmfulness direction* of the residual stream at the last prompt token, the direction the model
itself uses to tell harmful from harmless requests (cf. the refusal direction of Arditi et al.):

``w = (Σ_s)⁻¹ (μ_target − μ_benign)``, ``Σ_s = (1 − s)·Σ_within + s·(tr Σ_within / d)·I``,
``score(h) = (h − (μ_target + μ_benign)/2) · w / ‖w‖``

with ``Σ_within`` the pooled within-class covariance and ``s`` = ``shrinkage`` in ``[0, 1]``
(``1``: the plain difference of means; ``0``: Fisher's LDA). A difference of class means has one
free direction, so it cannot fit the idiosyncrasies of a fitting source the way a
576-dimensional probe can; shrinkage trades the two.

``balance_sources`` is a property of the *fitting data*, not of this class: the gate-data builders
(:func:`steerlens.pipeline.finesteer.gate_data_broad.broad_gate_data`) put every harmful source
in with equal weight, benign look-alikes (OR-Bench-Hard, XSTest safe; fit splits) as hard
negatives, and prompts wrapped in the fit families of jailbreak templates on both sides.

Calibration (threshold at a target false-positive rate on held-out benign prompts, hard or soft
rule) is :class:`~steerlens.pipeline.finesteer.scs.CalibratedGate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float

from ...errors import PipelineError
from ...gates import CalibratedGate
from ...params import MethodParams
from ...registry import register_method
from ...roles import register_role


@register_role
class HarmDirectionGate(CalibratedGate):
    """Projection on a (shrunk) Fisher direction between target and benign prompt states.

    Args:
        layer, where: the gate site ``blocks.{layer}.hook_resid_{where}``.
        shrinkage: ``s`` in ``[0, 1]`` (see the module docstring).
        normalize: L2-normalise activations first.
        fpr, temperature, calib_frac, seed, invert: as for every calibrated gate.
    """

    kind = "harm_dir"

    def __init__(self, layer: int = 14, *, shrinkage: float = 0.5, where: str = "post", fpr: float = 0.05,
                 temperature: Optional[float] = None, calib_frac: float = 0.25, seed: int = 0,
                 normalize: bool = False, invert: bool = False) -> None:
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise PipelineError(f"shrinkage must be in [0, 1], got {shrinkage}")
        super().__init__(layer, where=where, fpr=fpr, temperature=temperature, calib_frac=calib_frac, seed=seed,
                         normalize=normalize, invert=invert, shrinkage=float(shrinkage))
        self.mid: Optional[torch.Tensor] = None
        self.w: Optional[torch.Tensor] = None

    @property
    def fitted(self) -> bool:
        return self.w is not None and self.threshold is not None

    def _fit_scorer(self, pos: torch.Tensor, neg: torch.Tensor) -> None:
        p, b = self._prep(pos).double(), self._prep(neg).double()
        mp, mb = p.mean(0), b.mean(0)
        diff = mp - mb
        if not float(diff.norm()) > 0:
            raise PipelineError("harm_dir gate: target and benign fitting activations have the same mean")
        s = self.params["shrinkage"]
        d = p.shape[1]
        if s < 1.0:
            xc = torch.cat([p - mp, b - mb])
            cov = xc.T @ xc / max(1, xc.shape[0] - 2)
            ridge = float(torch.diagonal(cov).mean().clamp_min(1e-12))
            sig = (1 - s) * cov + s * ridge * torch.eye(d, dtype=cov.dtype)
            w = torch.linalg.solve(sig, diff)
        else:
            w = diff.clone()
        w = w / w.norm()
        self.mid, self.w = ((mp + mb) / 2).float(), w.float()
        self.fit_stats = {"mean_gap": float(diff @ w), "shrinkage": s}

    def score(self, h: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        if self.w is None:
            raise PipelineError("HarmDirectionGate is not fitted: call Steerer.fit (or fit_tensors) first")
        x = self._prep(h)
        return (x - self.mid.to(x.device)) @ self.w.to(x.device)  # type: ignore[union-attr]

    def _width(self) -> Optional[int]:
        return None if self.w is None else int(self.w.shape[0])

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.w is None:
            return {}
        return {"mid": self.mid, "w": self.w}  # type: ignore[dict-item]

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state(extra, tensors)
        self._need(tensors, ("mid", "w"))
        self.mid, self.w = tensors["mid"].float(), tensors["w"].float()


@dataclass(frozen=True)
class CAAHarmDirParams(MethodParams):
    """:func:`make_caa_harmdir`'s parameters (``gate_layer`` recorded resolved: ``layer`` when ``None``)."""
    layer: int = 14
    alpha: float = 1.0
    gate_layer: Optional[int] = None
    shrinkage: float = 0.5
    normalize: bool = False
    fpr: float = 0.05
    temperature: Optional[float] = None
    calib_frac: float = 0.25
    seed: int = 0
    where: str = "post"
    positions: str = "all"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.gate_layer is None:
            self._set(gate_layer=self.layer)


@register_method("caa-harmdir", help="CAA at one residual layer, gated per prompt by the harmfulness-direction "
                                     "gate (harm_dir); fit with gate_data = harmful vs benign prompts",
                 family="resid",
                 contract={"params": {"layer": 1, "alpha": 4.0, "gate_layer": 0, "fpr": 0.3}, "gen_alpha": 20.0})
def make_caa_harmdir(*, layer: int = 14, alpha: float = 1.0, gate_layer: Optional[int] = None, shrinkage: float = 0.5,
                     normalize: bool = False, fpr: float = 0.05, temperature: Optional[float] = None,
                     calib_frac: float = 0.25, seed: int = 0, where: str = "post", positions: str = "all",
                     batch_size: int = 16):
    """CAA at ``layer`` gated by :class:`HarmDirectionGate` at ``gate_layer`` (default: ``layer``);
    registered so the contract suite runs the gate like every method."""
    from ..baselines import make_caa

    p = CAAHarmDirParams.of(locals())
    gate = HarmDirectionGate(p.gate_layer, **p.pick("shrinkage", "normalize", "fpr", "temperature", "calib_frac",
                                                     "seed"))
    st = make_caa(**p.pick("layer", "alpha", "where", "positions", "batch_size")).with_gate(gate)
    st.method, st.method_params = "caa-harmdir", p.record()
    return st


__all__ = ["HarmDirectionGate", "make_caa_harmdir", "CAAHarmDirParams"]
