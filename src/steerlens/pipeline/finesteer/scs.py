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

:class:`ProbeGate` (kind ``"probe"``) is the reference: a logistic probe on the same activation
(standardised with the fitting mean / std; class-balanced; L2 strength ``C``), score = its logit.

Both share the calibration (:class:`CalibratedGate`): the benign fitting activations are split
(``calib_frac``, seeded) into a part that fits the gate and a held-out part on which the
threshold ``τ`` is set for a target false-positive rate ``fpr`` (default 5%). ``τ`` is the
``k``-th largest held-out benign score with ``k = ⌊fpr·(n+1)⌋`` (at least 1), so the hard gate
``1[s > τ]`` flags at most ``k − 1`` of the ``n`` calibration prompts, and a new benign prompt
exchangeable with them with probability at most ``k/(n+1) ≤ fpr`` (the conformal bound; it needs
``n + 1 ≥ 1/fpr`` calibration prompts, else ``calibration["guarantee"]`` is false).
:meth:`CalibratedGate.calibrate` re-sets ``τ`` from any other held-out benign scores.

Hard gate (``temperature=None``): scale ``1[s > τ]``. Soft gate: scale
``sigmoid((s − τ) / T)`` with ``T = temperature × std`` of the held-out benign scores (a
temperature relative to the benign spread, so one value means the same at every layer and for
every form; the absolute ``T`` is recorded).

Everything fitted (bases, centre, probe weights, threshold, calibration and fit statistics) is
in ``state_dict`` / ``extra_state``, so the gate round-trips through artifacts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float

from ...hooks import FunctionGate, HookGate, Site
from ...numerics import pca, roc_auc as _roc_auc
from ..base import ContrastiveActs, Gate, PipelineError, Steerer, register_role, split_indices
from ..params import MethodParams
from ..registry import register_method

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


def conformal_threshold(benign_scores: torch.Tensor, fpr: float) -> tuple[float, dict]:
    """``τ`` for a hard gate ``1[s > τ]`` at target false-positive rate ``fpr`` on benign scores:
    the ``k``-th largest score, ``k = max(1, ⌊fpr·(n+1)⌋)`` (see the module docstring). Returns
    ``(τ, info)`` with the calibration FPR reached and whether ``n`` is large enough for the bound."""
    s = torch.as_tensor(benign_scores, dtype=torch.float64).flatten()
    if s.numel() < 1:
        raise PipelineError("threshold calibration needs at least one held-out benign score")
    if not torch.isfinite(s).all():
        raise PipelineError("benign calibration scores contain NaN or inf")
    if not 0.0 < float(fpr) < 1.0:
        raise PipelineError(f"target false-positive rate must be in (0, 1), got {fpr}")
    n = s.numel()
    k_raw = int(math.floor(float(fpr) * (n + 1) + 1e-9))
    k = max(1, min(n, k_raw))
    tau = float(torch.sort(s, descending=True).values[k - 1])
    reached = float((s > tau).double().mean())
    return tau, {"n": n, "fpr_target": float(fpr), "k": k, "fpr_reached": reached,
                 "guarantee": k_raw >= 1, "bound": k / (n + 1),
                 "benign_mean": float(s.mean()), "benign_std": float(s.std()) if n > 1 else 0.0,
                 "benign_max": float(s.max())}


def roc_auc(pos_scores, neg_scores) -> float:
    """ROC-AUC of scores (positives should score higher): P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)
    (:func:`steerlens.numerics.roc_auc`, raising :class:`PipelineError` when a class is empty)."""
    try:
        return _roc_auc(pos_scores, neg_scores)
    except ValueError as e:
        raise PipelineError(str(e)) from None


# ----------------------------------------------------------------------------------------
# the gate roles
# ----------------------------------------------------------------------------------------

class CalibratedGate(Gate):
    """Base of the prompt gates here: a score at one residual site, a threshold calibrated on
    held-out benign prompts, a hard or soft rule (see the module docstring).

    Subclasses implement :meth:`_fit_scorer` (on target and benign-fit activations),
    :meth:`score` (``[..., d] -> [...]``) and the tensor state of their scorer.
    """

    def __init__(self, layer: int = 14, *, where: str = "post", fpr: float = 0.05,
                 temperature: Optional[float] = None, calib_frac: float = 0.25, seed: int = 0,
                 normalize: bool = False, invert: bool = False, **params) -> None:
        if not 0.0 < float(fpr) < 1.0:
            raise PipelineError(f"fpr must be in (0, 1), got {fpr}")
        if temperature is not None and not float(temperature) > 0:
            raise PipelineError(f"temperature must be > 0 (or None for a hard gate), got {temperature}")
        if not 0.0 <= float(calib_frac) < 1.0:
            raise PipelineError(f"calib_frac must be in [0, 1), got {calib_frac}")
        super().__init__(layer=int(layer), where=str(where), fpr=float(fpr),
                         temperature=None if temperature is None else float(temperature),
                         calib_frac=float(calib_frac), seed=int(seed), normalize=bool(normalize), **params)
        if invert:  # recorded only when set, so artifacts of plain gates keep their parameters
            self.params["invert"] = True
        try:
            Site.resid(self.params["layer"], self.params["where"])
        except ValueError as e:
            raise PipelineError(f"bad gate site: {e}") from None
        self.threshold: Optional[float] = None
        self.temperature_abs: Optional[float] = None
        self.calibration: dict = {}
        self.fit_stats: dict = {}

    # -- where it reads ----------------------------------------------------------------------
    @property
    def site(self) -> Site:
        return Site.resid(self.params["layer"], self.params["where"])

    @property
    def fitted(self) -> bool:
        return self.threshold is not None

    def required_sites(self, model) -> list[Site]:
        return [self.site]

    # -- scoring -----------------------------------------------------------------------------
    def _prep(self, h: torch.Tensor) -> torch.Tensor:
        x = h.float()
        if self.params["normalize"]:
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return x

    def score(self, h: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        """The gate score of activations ``h`` (any leading shape); higher = more target-like."""
        raise NotImplementedError

    def _fit_scorer(self, pos: torch.Tensor, neg: torch.Tensor) -> None:
        raise NotImplementedError

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, model, acts: ContrastiveActs) -> None:
        pos, neg = acts.module(self.site)
        self.fit_tensors(pos, neg)

    def fit_tensors(self, pos: Float[torch.Tensor, "n_pos d"], neg: Float[torch.Tensor, "n_neg d"]) -> "CalibratedGate":
        """Fit on target (``pos``) and benign (``neg``) activations read at :attr:`site`; a seeded
        ``calib_frac`` of the benign rows is held out to calibrate the threshold."""
        pos, neg = pos.float(), neg.float()
        if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
            raise PipelineError(f"gate fit needs [n, d] activations of equal width, got {tuple(pos.shape)} and {tuple(neg.shape)}")
        if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
            raise PipelineError(f"{self.site}: gate activations contain NaN or inf")
        if pos.shape[0] < 1 or neg.shape[0] < 2:
            raise PipelineError(f"the gate needs at least 1 target and 2 benign prompts, got {pos.shape[0]} and {neg.shape[0]}")
        cf = self.params["calib_frac"]
        if cf > 0:
            fit_idx, cal_idx = split_indices(neg.shape[0], cf, self.params["seed"])
            neg_fit, neg_cal = neg[fit_idx], neg[cal_idx]
        else:
            neg_fit = neg_cal = neg
        self._fit_scorer(pos, neg_fit)
        s_pos, s_fit = self.score(pos), self.score(neg_fit)
        self.fit_stats.update({"n_pos": int(pos.shape[0]), "n_neg_fit": int(neg_fit.shape[0]),
                               "n_neg_calib": int(neg_cal.shape[0]), "calib_in_sample": cf == 0,
                               "fit_auc": roc_auc(s_pos, s_fit)})
        self.calibrate(self.score(neg_cal))
        self.fit_stats["fit_tpr"] = float((s_pos > self.threshold).float().mean())
        return self

    def calibrate(self, benign_scores: torch.Tensor, fpr: Optional[float] = None) -> "CalibratedGate":
        """Set ``τ`` (and the soft gate's absolute temperature) from held-out benign scores."""
        tau, info = conformal_threshold(benign_scores, self.params["fpr"] if fpr is None else fpr)
        self.threshold, self.calibration = tau, info
        t = self.params["temperature"]
        self.temperature_abs = None if t is None else float(t) * max(info["benign_std"], 1e-6)
        return self

    # -- applying ----------------------------------------------------------------------------
    @property
    def inverted(self) -> bool:
        """An inverted gate opens where the plain one stays closed (``score < τ``): e.g. a
        truthfulness steerer that stands aside on the prompts a safety gate claims. Strict on both
        sides: a score exactly at τ opens neither."""
        return bool(self.params.get("invert", False))

    def scale_of(self, scores: torch.Tensor) -> torch.Tensor:
        """Scale in [0, 1] from scores: the hard or soft rule with the calibrated τ (mirrored when
        :attr:`inverted`)."""
        self._require_fitted()
        s, tau = (-scores, -self.threshold) if self.inverted else (scores, self.threshold)  # type: ignore[operator]
        if self.temperature_abs is None:
            return (s > tau).to(scores.dtype)
        return torch.sigmoid((s - tau) / self.temperature_abs)

    def hook_gate(self, model) -> HookGate:
        self._require_fitted()
        self.check_model(model)
        if self.inverted:  # the hook gate sees the negated score against −τ (traces show that score)
            return FunctionGate(self.site, lambda h: -self.score(h), mode="prompt", threshold=-float(self.threshold),  # type: ignore[arg-type]
                                temperature=self.temperature_abs, name=f"not-{self.kind}")
        return FunctionGate(self.site, self.score, mode="prompt", threshold=float(self.threshold),  # type: ignore[arg-type]
                            temperature=self.temperature_abs, name=self.kind)

    def check_model(self, model) -> None:
        w = self._width()
        if w is not None and w != self.site.width(model):
            raise PipelineError(f"{self.kind} gate fitted on width {w} but {self.site} has width {self.site.width(model)}")

    def _width(self) -> Optional[int]:
        return None

    # -- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"threshold": self.threshold, "temperature_abs": self.temperature_abs,
                "calibration": dict(self.calibration), "fit_stats": dict(self.fit_stats)}

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        if extra.get("threshold") is None:
            raise PipelineError(f"{self.kind} gate state has no threshold (was it fitted before saving?)")
        self.threshold = float(extra["threshold"])
        t = extra.get("temperature_abs")
        self.temperature_abs = None if t is None else float(t)
        self.calibration = dict(extra.get("calibration", {}))
        self.fit_stats = dict(extra.get("fit_stats", {}))

    def _need(self, tensors: dict, names) -> None:
        missing = [k for k in names if k not in tensors]
        if missing:
            raise PipelineError(f"{self.kind} gate: tensors {missing} missing from the artifact")


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


@register_role
class ProbeGate(CalibratedGate):
    """Reference gate: a logistic probe on the gate activation (standardised with the fitting mean
    and std, class-balanced, L2 strength ``C``, scikit-learn lbfgs); score = the probe's logit.
    Calibrated like :class:`SCSGate`."""

    kind = "probe"

    def __init__(self, layer: int = 14, *, C: float = 0.1, where: str = "post", fpr: float = 0.05,
                 temperature: Optional[float] = None, calib_frac: float = 0.25, seed: int = 0,
                 normalize: bool = False, invert: bool = False) -> None:
        if not float(C) > 0:
            raise PipelineError(f"probe C must be > 0, got {C}")
        super().__init__(layer, where=where, fpr=fpr, temperature=temperature, calib_frac=calib_frac, seed=seed,
                         normalize=normalize, invert=invert, C=float(C))
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None
        self.w: Optional[torch.Tensor] = None
        self.b: Optional[torch.Tensor] = None

    @property
    def fitted(self) -> bool:
        return self.w is not None and self.threshold is not None

    def _fit_scorer(self, pos: torch.Tensor, neg: torch.Tensor) -> None:
        from sklearn.linear_model import LogisticRegression

        x = torch.cat([self._prep(pos), self._prep(neg)]).double()
        y = torch.cat([torch.ones(pos.shape[0]), torch.zeros(neg.shape[0])]).numpy()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = ((x - mean) / std).numpy()
        clf = LogisticRegression(C=self.params["C"], class_weight="balanced", max_iter=5000, tol=1e-6)
        clf.fit(z, y)
        self.mean, self.std = mean.float(), std.float()
        self.w = torch.as_tensor(clf.coef_[0], dtype=torch.float32)
        self.b = torch.as_tensor(clf.intercept_, dtype=torch.float32)
        self.fit_stats = {"n_iter": int(clf.n_iter_[0])}

    def score(self, h: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        if self.w is None:
            raise PipelineError("ProbeGate is not fitted: call Steerer.fit (or fit_tensors) first")
        x = self._prep(h)
        dev = x.device
        z = (x - self.mean.to(dev)) / self.std.to(dev)  # type: ignore[union-attr]
        return z @ self.w.to(dev) + self.b.to(dev)  # type: ignore[union-attr]

    def _width(self) -> Optional[int]:
        return None if self.w is None else int(self.w.shape[0])

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.w is None:
            return {}
        return {"mean": self.mean, "std": self.std, "w": self.w, "b": self.b}  # type: ignore[dict-item]

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state(extra, tensors)
        self._need(tensors, ("mean", "std", "w", "b"))
        self.mean, self.std, self.w, self.b = (tensors[k].float() for k in ("mean", "std", "w", "b"))


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
