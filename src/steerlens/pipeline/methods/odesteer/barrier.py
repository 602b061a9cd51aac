"""The ODESteer barrier: a logistic regression on random features of the normalised activation.

With ``z = x / ‖x‖`` and features ``φ`` (:mod:`.features`), the fitted logistic regression has
logit ``f(x) = w · φ(z) + b = log P(+|x) / P(−|x)``. By Bayes, the density ratio is

    h_b(x) = log p⁺(x) / p⁻(x) = f(x) + log((1 − π) / π),

``π`` the positive fraction of the fitting data (the *class-prior term*; 0 for balanced pairs).
``h_b > 0`` means the activation looks more like the positive (wanted) behaviour.

The vector field is the unit gradient ``v(x) = ∇f(x) / ‖∇f(x)‖`` taken through the
normalisation: ``∇_x f = (I − z zᵀ) ∇_z f / ‖x‖`` (so ``v`` is orthogonal to ``x``: the flow
turns the activation towards the positive class rather than growing it). ``∇_z f`` is the
feature map's closed-form gradient (``gradient="closed_form"``, default) or autograd through
the same features (``gradient="autograd"``; the tests check they agree, the benchmark times both).

Fitting: scikit-learn's ``LogisticRegression`` (L2, lbfgs) on ``φ(z)`` of the positive and
negative activations, as the published code does; ``C``, ``max_iter`` and ``tol`` are
parameters. :func:`heldout_metrics` fits on a seeded split (by pair for paired data) and reports
held-out accuracy and AUC.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from jaxtyping import Float

from ....numerics import roc_auc
from ...errors import PipelineError
from .features import FeatureMap

GRADIENTS = ("closed_form", "autograd")
_EPS = 1e-12


@dataclass
class Barrier:
    """``h_b(x) = w · φ(x / ‖x‖) + b + log((1 − π) / π)`` and its unit-gradient field.

    Attributes:
        features: the (set-up) feature map.
        w: ``[D]`` logistic-regression weights; ``b`` its intercept.
        pi: positive fraction of the fitting data (gives the class-prior term).
        gradient: ``"closed_form"`` or ``"autograd"`` (how :meth:`grad` differentiates φ).
    """

    features: FeatureMap
    w: torch.Tensor
    b: float
    pi: float
    gradient: str = "closed_form"
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENTS:
            raise PipelineError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}")
        if not 0 < self.pi < 1:
            raise PipelineError(f"positive fraction must be in (0, 1), got {self.pi}")
        self.w = torch.as_tensor(self.w, dtype=torch.float32).detach().flatten()
        if self.w.shape[0] != self.features.n_features:
            raise PipelineError(f"{self.w.shape[0]} weights for {self.features.n_features} features")
        if not torch.isfinite(self.w).all() or not math.isfinite(self.b):
            raise PipelineError("barrier weights contain NaN or inf")

    @property
    def d(self) -> int:
        assert self.features.d is not None
        return self.features.d

    @property
    def prior_term(self) -> float:
        """``log((1 − π) / π)``: added to the logit to get the density ratio."""
        return math.log((1 - self.pi) / self.pi)

    def _w(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        w = self._cache.get(key)
        if w is None:
            w = self._cache[key] = self.w.to(device=x.device, dtype=x.dtype)
        return w

    @staticmethod
    def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        return x / n, n

    def logit(self, x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n"]:
        """``f(x) = w · φ(x/‖x‖) + b`` (the logistic regression's logit)."""
        z, _ = self._unit(x)
        return self.features.value(z, self._w(x)) + self.b

    def value(self, x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n"]:
        """The barrier ``h_b(x) = f(x) + log((1 − π)/π)``."""
        return self.logit(x) + self.prior_term

    def grad(self, x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n d"]:
        """``∇_x f(x)`` through the normalisation."""
        if self.gradient == "autograd":
            return self._grad_autograd(x)
        z, n = self._unit(x)
        _, gz = self.features.value_and_grad(z, self._w(x))
        return (gz - (gz * z).sum(-1, keepdim=True) * z) / n

    def _grad_autograd(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            xx = x.detach().clone().requires_grad_(True)
            z, _ = self._unit(xx)
            f = self.features.transform(z) @ self.w.to(device=x.device, dtype=x.dtype)
            (g,) = torch.autograd.grad(f.sum(), xx)
        return g.detach()

    def field(self, x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n d"]:
        """``v(x) = ∇f(x) / ‖∇f(x)‖`` (zero where the gradient vanishes)."""
        g = self.grad(x)
        return g / g.norm(dim=-1, keepdim=True).clamp_min(_EPS)

    # -- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"features": self.features.config(), "b": self.b, "pi": self.pi}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {"w": self.w.clone()}
        out.update({f"features.{k}": v for k, v in self.features.state_dict().items()})
        return out

    @classmethod
    def from_state(cls, extra: dict, tensors: dict[str, torch.Tensor], gradient: str = "closed_form") -> "Barrier":
        if "w" not in tensors:
            raise PipelineError("barrier state has no 'w' tensor")
        feats = FeatureMap.from_state(extra["features"], {k[len("features."):]: v for k, v in tensors.items()
                                                          if k.startswith("features.")})
        return cls(feats, tensors["w"], float(extra["b"]), float(extra["pi"]), gradient)


def _design(features: FeatureMap, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    z = x.float() / x.float().norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return np.concatenate([features.transform(z[i:i + batch]).double().numpy() for i in range(0, len(z), batch)])


def fit_barrier(pos: Float[torch.Tensor, "n_pos d"], neg: Float[torch.Tensor, "n_neg d"], features: FeatureMap, *,
                C: float = 1.0, max_iter: int = 1000, tol: float = 1e-6, gradient: str = "closed_form") -> Barrier:
    """Fit the logistic regression on ``φ(x/‖x‖)`` (``features`` are set up for the width if needed)."""
    from sklearn.linear_model import LogisticRegression

    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise PipelineError(f"barrier needs [n, d] activations of equal width, got {tuple(pos.shape)} and {tuple(neg.shape)}")
    if len(pos) < 1 or len(neg) < 1:
        raise PipelineError(f"barrier needs examples of both classes, got {len(pos)} positive and {len(neg)} negative")
    if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
        raise PipelineError("barrier activations contain NaN or inf")
    if not features.fitted or features.d != pos.shape[1]:
        features.setup(pos.shape[1])
    x = _design(features, torch.cat([pos, neg]))
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    clf = LogisticRegression(C=float(C), max_iter=int(max_iter), tol=float(tol))
    clf.fit(x, y)
    return Barrier(features, torch.from_numpy(clf.coef_[0].copy()).float(), float(clf.intercept_[0]),
                   len(pos) / (len(pos) + len(neg)), gradient)


def auc_score(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """ROC AUC of positives vs negatives (ties count one half; :func:`steerlens.numerics.roc_auc`),
    NaN when a class is empty."""
    if np.size(scores_pos) == 0 or np.size(scores_neg) == 0:
        return float("nan")
    return roc_auc(scores_pos, scores_neg)


def evaluate_barrier(barrier: Barrier, pos: torch.Tensor, neg: torch.Tensor) -> dict[str, float]:
    """Accuracy (``f > 0``, the classifier's own decision) and AUC of the barrier on ``pos``/``neg``."""
    with torch.no_grad():
        fp, fn = barrier.logit(pos.float()).numpy(), barrier.logit(neg.float()).numpy()
    acc = float(((fp > 0).sum() + (fn <= 0).sum()) / (len(fp) + len(fn)))
    return {"accuracy": acc, "auc": auc_score(fp, fn), "mean_barrier_pos": float(fp.mean() + barrier.prior_term),
            "mean_barrier_neg": float(fn.mean() + barrier.prior_term), "n_pos": len(fp), "n_neg": len(fn)}


def heldout_metrics(pos: torch.Tensor, neg: torch.Tensor, make_features, *, paired: bool, test_frac: float = 0.2,
                    seed: int = 0, **fit_kw) -> dict[str, float]:
    """Fit on a seeded split of the data (by pair when ``paired``) and score the held-out part.

    ``make_features()`` returns a fresh feature map. Returns held-out ``accuracy`` and ``auc``,
    ``train_accuracy``, sizes and the fit time."""
    from ...selectors import class_split

    (trp, trn), (tep, ten) = class_split(len(pos), len(neg), paired, test_frac, seed)
    t0 = time.perf_counter()
    bar = fit_barrier(pos[trp], neg[trn], make_features(), **fit_kw)
    secs = time.perf_counter() - t0
    held = evaluate_barrier(bar, pos[tep], neg[ten])
    train = evaluate_barrier(bar, pos[trp], neg[trn])
    return {"accuracy": held["accuracy"], "auc": held["auc"], "train_accuracy": train["accuracy"],
            "n_train": len(trp) + len(trn), "n_test": len(tep) + len(ten), "fit_seconds": secs}


__all__ = ["Barrier", "fit_barrier", "evaluate_barrier", "heldout_metrics", "auc_score", "GRADIENTS"]
