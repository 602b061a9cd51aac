"""FineSteer stage 1 — SCS, subspace-guided conditional steering: *when* to steer.

A gate decides from the prompt (the activation ``h`` of the last prompt token at
``blocks.{layer}.hook_resid_{where}``) whether an input needs steering, and holds that decision
for the whole generation (a :class:`~steerlens.hooks.HookGate` in ``mode="prompt"``). Any
steerer can carry it (``make_steerer("caa", gate="scs", gate_params={...})``).

:class:`SCSGate` (kind ``"scs"``), fitted on target (harmful) vs benign prompt activations:

- centre ``μ`` = mean of the benign fitting activations; ``x = h − μ``;
- benign basis ``U_B`` ∈ R^{d×k_B}: the top ``rank_benign`` principal directions of the centred
  benign activations;
- target basis ``U_T`` ∈ R^{d×k_T}: the top ``rank_target`` principal directions of the target
  activations, centred on ``μ`` (``target_center="benign"``, default: the target subspace then
  holds the shift from the benign mean to the targets) or on their own mean (``"target"``,
  plain PCA of the targets) — an **open** choice of methods.md;
- score forms (``form``):

  * ``"contrast"``: ``s(h) = ‖U_Tᵀx‖² − ‖U_Bᵀx‖²`` (target-vs-benign projection energy);
  * ``"outside"``: ``s(h) = ‖x − U_B U_Bᵀx‖²`` (energy outside the benign subspace; uses no
    target data except through the threshold's calibration, which uses none either);

  energies are divided by ``e0`` = the mean ``‖x‖²`` of the benign fitting activations, so scores
  are of order 1 at every layer (AUC and decisions do not depend on this constant);
- ``normalize=True`` L2-normalises ``h`` first (direction only).

It is a :class:`~steerlens.pipeline.gates.CalibratedGate`: the threshold ``τ`` is calibrated on
held-out benign prompts for a target false-positive rate (the conformal rule of
:func:`~steerlens.pipeline.gates.conformal_threshold`), hard or soft (the hook layer's one rule).
The reference gate, a logistic probe on the same activation (:class:`~steerlens.pipeline.gates.ProbeGate`,
kind ``"probe"``), is calibrated the same way; both are re-exported here.

Everything fitted (bases, centre, probe weights, threshold, calibration and fit statistics) is
in ``state_dict`` / ``extra_state``, so the gate round-trips through artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float

from ....numerics import pca
from ...errors import PipelineError
from ...params import MethodParams
from ...gates import CalibratedGate, ProbeGate, conformal_threshold, roc_auc  # noqa: F401  (re-exported)
from ...registry import register_method
from ...roles import register_role
from ...steerer import Steerer

SCORE_FORMS = ("contrast", "outside")
TARGET_CENTERS = ("benign", "target")


# ----------------------------------------------------------------------------------------
# the math, as plain functions (tested against a direct computation)
# ----------------------------------------------------------------------------------------

def principal_basis(x: Float[torch.Tensor, "n d"], rank: int,
                    center: Optional[Float[torch.Tensor, "d"]] = None) -> tuple[Float[torch.Tensor, "d k"], torch.Tensor]:
    """Top-``rank`` principal directions of ``x − center`` (``center`` default: the mean of ``x``)
    as orthonormal columns, and the fraction of the (centred) energy each explains.

    Computed in float64; each column's sign is fixed so that its largest-magnitude entry is
    positive (deterministic, so refits on the same data give the same tensors). ``rank`` is capped
    at ``min(n, d)``."""
    if x.ndim != 2 or x.shape[0] < 1:
        raise PipelineError(f"principal_basis needs [n, d] activations with n >= 1, got {tuple(x.shape)}")
    if rank < 1:
        raise PipelineError(f"subspace rank must be >= 1, got {rank}")
    r = pca(x, rank, True if center is None else center)
    frac = r.explained_variance_ratio[:r.components.shape[0]]
    return r.components.T.float().contiguous(), frac.float()


def projection_energy(x: Float[torch.Tensor, "... d"], basis: Float[torch.Tensor, "d k"]) -> Float[torch.Tensor, "..."]:
    """``‖Uᵀx‖²`` for orthonormal columns ``U`` (the energy of ``x`` inside span(U))."""
    return (x @ basis).pow(2).sum(-1)


def outside_energy(x: Float[torch.Tensor, "... d"], basis: Float[torch.Tensor, "d k"]) -> Float[torch.Tensor, "..."]:
    """``‖x − UUᵀx‖²`` (the energy of ``x`` outside span(U)), computed from the residual itself
    (not as a difference of two large energies)."""
    r = x - (x @ basis) @ basis.T
    return r.pow(2).sum(-1)


# ----------------------------------------------------------------------------------------
# the gate roles
# ----------------------------------------------------------------------------------------

@register_role
class SCSGate(CalibratedGate):
    """The SCS subspace gate (see the module docstring).

    Args:
        layer, where: the gate site ``blocks.{layer}.hook_resid_{where}``.
        form: ``"contrast"`` (target-vs-benign projection energy) or ``"outside"`` (energy outside
            the benign subspace).
        rank_benign, rank_target: subspace ranks (chosen on val; capped at the number of fitting
            rows). ``rank_target`` is unused by ``"outside"``.
        target_center: ``"benign"`` (default) or ``"target"``: what the target PCA is centred on.
        normalize: L2-normalise activations first.
        fpr, temperature, calib_frac, seed: calibration and the hard/soft rule.
        invert: open on the prompts the gate would leave alone (``score < τ``), e.g. to keep a
            second steerer off the prompts this gate hands to the safety steerer.
    """

    kind = "scs"

    def __init__(self, layer: int = 14, *, form: str = "contrast", rank_benign: int = 16, rank_target: int = 4,
                 target_center: str = "benign", where: str = "post", fpr: float = 0.05,
                 temperature: Optional[float] = None, calib_frac: float = 0.25, seed: int = 0,
                 normalize: bool = False, invert: bool = False) -> None:
        if form not in SCORE_FORMS:
            raise PipelineError(f"unknown SCS score form {form!r}; use one of {SCORE_FORMS}")
        if target_center not in TARGET_CENTERS:
            raise PipelineError(f"target_center must be one of {TARGET_CENTERS}, got {target_center!r}")
        if int(rank_benign) < 1 or int(rank_target) < 1:
            raise PipelineError(f"subspace ranks must be >= 1, got rank_benign={rank_benign}, rank_target={rank_target}")
        super().__init__(layer, where=where, fpr=fpr, temperature=temperature, calib_frac=calib_frac, seed=seed,
                         normalize=normalize, invert=invert, form=form, rank_benign=int(rank_benign),
                         rank_target=int(rank_target), target_center=target_center)
        self.mu: Optional[torch.Tensor] = None
        self.u_benign: Optional[torch.Tensor] = None
        self.u_target: Optional[torch.Tensor] = None
        self.e0: float = 1.0

    @property
    def fitted(self) -> bool:
        return self.mu is not None and self.threshold is not None

    def _fit_scorer(self, pos: torch.Tensor, neg: torch.Tensor) -> None:
        p, b = self._prep(pos), self._prep(neg)
        mu = b.double().mean(0)
        ub, fb = principal_basis(b, self.params["rank_benign"], mu)
        tc = mu if self.params["target_center"] == "benign" else None
        ut, ft = principal_basis(p, self.params["rank_target"], tc)
        self.mu, self.u_benign, self.u_target = mu.float(), ub, ut
        self.e0 = float((b - self.mu).pow(2).sum(-1).mean().clamp_min(1e-12))
        self.fit_stats = {"rank_benign": int(ub.shape[1]), "rank_target": int(ut.shape[1]),
                          "benign_explained": float(fb.sum()), "target_explained": float(ft.sum()), "e0": self.e0}

    def score(self, h: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        self._require_scorer()
        x = self._prep(h)
        dev = x.device
        mu, ub = self.mu.to(dev), self.u_benign.to(dev)  # type: ignore[union-attr]
        x = x - mu
        if self.params["form"] == "contrast":
            s = projection_energy(x, self.u_target.to(dev)) - projection_energy(x, ub)  # type: ignore[union-attr]
        else:
            s = outside_energy(x, ub)
        return s / self.e0

    def _require_scorer(self) -> None:
        if self.mu is None:
            raise PipelineError("SCSGate is not fitted: call Steerer.fit (or fit_tensors) first")

    def _width(self) -> Optional[int]:
        return None if self.mu is None else int(self.mu.shape[0])

    def extra_state(self) -> dict:
        return {**super().extra_state(), "e0": self.e0}

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.mu is None:
            return {}
        return {"mu": self.mu, "u_benign": self.u_benign, "u_target": self.u_target}  # type: ignore[dict-item]

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state(extra, tensors)
        self._need(tensors, ("mu", "u_benign", "u_target"))
        self.mu, self.u_benign, self.u_target = (tensors["mu"].float(), tensors["u_benign"].float(),
                                                 tensors["u_target"].float())
        self.e0 = float(extra.get("e0", 1.0))


# ----------------------------------------------------------------------------------------
# a registered gated method (any other method is gated the same way with make_steerer(gate=...))
# ----------------------------------------------------------------------------------------

#: the :class:`SCSGate` keyword arguments a method takes as its own (besides the gate's layer)
SCS_GATE_PARAMS = ("form", "rank_benign", "rank_target", "target_center", "normalize", "fpr", "temperature",
                   "calib_frac", "seed")


@dataclass(frozen=True)
class SCSGatedParams(MethodParams):
    """The parameters of a method gated by SCS (FineSteer's own; ``gate_layer`` recorded resolved:
    ``layer`` when ``None``)."""
    layer: int = 14
    alpha: float = 1.0
    gate_layer: Optional[int] = None
    form: str = "contrast"
    rank_benign: int = 16
    rank_target: int = 4
    target_center: str = "benign"
    normalize: bool = False
    fpr: float = 0.05
    temperature: Optional[float] = None
    calib_frac: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gate_layer is None:
            self._set(gate_layer=self.layer)

    def gate(self) -> "SCSGate":
        """The (unfitted) SCS gate these parameters describe."""
        return SCSGate(self.gate_layer, **self.pick(*SCS_GATE_PARAMS))


@dataclass(frozen=True)
class CAASCSParams(SCSGatedParams):
    """:func:`make_caa_scs`'s parameters."""
    where: str = "post"
    positions: str = "all"
    batch_size: int = 16


@register_method("caa-scs", help="CAA at one residual layer, gated per prompt by the SCS subspace gate "
                                 "(FineSteer stage 1); fit with gate_data = harmful vs harmless prompts",
                 family="resid",
                 contract={"params": {"layer": 1, "alpha": 4.0, "gate_layer": 0, "rank_benign": 2, "rank_target": 2,
                                      "fpr": 0.3},
                           "gen_alpha": 20.0})
def make_caa_scs(*, layer: int = 14, alpha: float = 1.0, gate_layer: Optional[int] = None, form: str = "contrast",
                 rank_benign: int = 16, rank_target: int = 4, target_center: str = "benign", normalize: bool = False,
                 fpr: float = 0.05, temperature: Optional[float] = None, calib_frac: float = 0.25, seed: int = 0,
                 where: str = "post", positions: str = "all", batch_size: int = 16) -> Steerer:
    """``make_steerer("caa", layer=..., gate="scs", gate_params=...)`` under one name: CAA at
    ``layer``, SCS gate at ``gate_layer`` (default: the same layer)."""
    from ..baselines import make_caa

    p = CAASCSParams.of(locals())
    st = make_caa(**p.pick("layer", "alpha", "where", "positions", "batch_size")).with_gate(p.gate())
    st.method, st.method_params = "caa-scs", p.record()
    return st


__all__ = ["make_caa_scs", "CAASCSParams", "SCSGatedParams", "SCS_GATE_PARAMS", "SCSGate", "ProbeGate", "CalibratedGate", "SCORE_FORMS", "principal_basis", "projection_energy",
           "outside_energy", "conformal_threshold", "roc_auc"]
