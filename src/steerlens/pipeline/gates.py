"""The gate roles every method can use: *when* to steer.

- :class:`AlwaysOpen` (kind ``"always_open"``): every prompt at full strength (the default);
- :class:`CalibratedGate`: the base of calibrated prompt gates — a score at one residual site,
  a threshold ``τ`` set on held-out benign prompts for a target false-positive rate, and a
  hard or soft rule;
- :class:`ProbeGate` (kind ``"probe"``): a logistic probe on the gate activation (the reference
  gate); FineSteer's subspace gate (``"scs"``, :mod:`steerlens.pipeline.methods.finesteer.scs`)
  is another :class:`CalibratedGate`.

Calibration (:func:`conformal_threshold`): the benign fitting activations are split
(``calib_frac``, seeded) into a part that fits the gate and a held-out part on which ``τ`` is
the ``k``-th largest held-out benign score with ``k = ⌊fpr·(n+1)⌋`` (at least 1), so the hard gate
``1[s > τ]`` flags at most ``k − 1`` of the ``n`` calibration prompts, and a new benign prompt
exchangeable with them with probability at most ``k/(n+1) ≤ fpr`` (the conformal bound; it needs
``n + 1 ≥ 1/fpr`` calibration prompts, else ``calibration["guarantee"]`` is false).
:meth:`CalibratedGate.calibrate` re-sets ``τ`` from any other held-out benign scores.

The rule from score to scale is the hook layer's one rule
(:func:`steerlens.hooks.gates.threshold_scale`): hard (``temperature=None``) ``1[s > τ]``, soft
``sigmoid((s − τ) / T)`` with ``T = temperature × std`` of the held-out benign scores (a
temperature relative to the benign spread, so one value means the same at every layer and for
every gate; the absolute ``T`` is recorded).

A new gate is one :class:`~steerlens.pipeline.roles.Gate` subclass with ``@register_role`` in a
method package (see :mod:`steerlens.pipeline.methods`), or here when every method may use it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from jaxtyping import Float

from ..hooks import FunctionGate, HookGate, Site
from ..hooks.gates import threshold_scale
from ..numerics import roc_auc as _roc_auc
from .contrastive import ContrastiveActs, split_indices
from .errors import PipelineError
from .roles import Gate, register_role, register_role_alias

@register_role
class AlwaysOpen(Gate):
    """The default gate: every prompt is steered at full strength (score 1, scale 1)."""

    kind = "always_open"

    @property
    def always_open(self) -> bool:
        return True

    def hook_gate(self, model) -> None:
        return None


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


class CalibratedGate(Gate):
    """Base of the calibrated prompt gates (:class:`ProbeGate`, FineSteer's SCS gate): a score at one residual site, a threshold calibrated on
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
        return threshold_scale(s, tau, self.temperature_abs)

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


register_role_alias("gate", "none", {"kind": "always_open"})
register_role_alias("gate", "always", {"kind": "always_open"})

__all__ = ["AlwaysOpen", "CalibratedGate", "ProbeGate", "conformal_threshold", "roc_auc"]
