"""The baseline methods, registered as ``caa``, ``repe`` and ``iti`` (math in methods.md).

- ``caa``: mean difference at one residual layer, added at every position.
- ``repe``: first principal component of paired differences at one residual layer (sign fixed).
- ``iti``: top-H heads by held-out logistic-probe accuracy on ``hook_z``, each shifted by
  ``alpha · σ · θ`` (mass-mean direction θ, σ the std of projections onto θ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ...selection import resid_module
from ...steerer import Steerer
from ...editors import ITIEditor, MeanDiffEditor, PCAEditor
from ...params import MethodParams, list_or_none
from ...registry import register_method
from ...roles import register_role_alias
from ...selectors import FixedSelector, ITISelector

#: Defaults for the default model (SmolLM2-135M-Instruct, 30 layers); see default-model.md.
DEFAULT_LAYER = 10


@dataclass(frozen=True)
class ResidParams(MethodParams):
    """The leading parameters of a method at one residual site ``blocks.{layer}.hook_resid_{where}``
    (a subclass may give ``layer`` another default; the field keeps its place)."""
    layer: int = DEFAULT_LAYER
    alpha: float = 1.0
    where: str = "post"
    positions: str = "all"


@dataclass(frozen=True)
class CAAParams(ResidParams):
    """:func:`make_caa`'s parameters."""
    batch_size: int = 16


@dataclass(frozen=True)
class RepEParams(ResidParams):
    """:func:`make_repe`'s parameters."""
    center: bool = False
    scale: str = "mean_proj"
    batch_size: int = 16


@dataclass(frozen=True)
class ITIParams(MethodParams):
    """:func:`make_iti`'s parameters (``layers`` recorded as a list)."""
    heads: int = 16
    alpha: float = 5.0
    test_frac: float = 0.2
    seed: int = 0
    C: float = 1.0
    layers: Optional[Sequence[int]] = None
    positions: str = "all"
    sigma_over: str = "all"
    tiebreak: str = "separation"
    batch_size: int = 16

    def __post_init__(self) -> None:
        self._set(layers=list_or_none(self.layers))


@register_method("caa", help="CAA / ActAdd: mean difference at one residual layer", family="resid",
                 contract={"params": {"layer": 1, "alpha": 4.0}, "gen_alpha": 20.0})
def make_caa(*, layer: int = DEFAULT_LAYER, alpha: float = 1.0, where: str = "post", positions: str = "all",
             batch_size: int = 16) -> Steerer:
    """CAA: ``v = mean(h⁺) − mean(h⁻)`` at ``blocks.{layer}.hook_resid_{where}``; ``h ← h + alpha·v``."""
    p = CAAParams.of(locals())
    return Steerer(FixedSelector([str(resid_module(p.layer, p.where))]), MeanDiffEditor(positions=p.positions),
                   alpha=p.alpha, method="caa", method_params=p.record(), batch_size=p.batch_size)


@register_method("repe", help="RepE-PCA: first PC of paired differences at one residual layer", family="resid",
                 contract={"params": {"layer": 1, "alpha": 4.0}, "gen_alpha": 20.0})
def make_repe(*, layer: int = DEFAULT_LAYER, alpha: float = 1.0, where: str = "post", positions: str = "all",
              center: bool = False, scale: str = "mean_proj", batch_size: int = 16) -> Steerer:
    """RepE-PCA at ``blocks.{layer}.hook_resid_{where}`` (see :class:`PCAEditor` for ``center``/``scale``)."""
    p = RepEParams.of(locals())
    return Steerer(FixedSelector([str(resid_module(p.layer, p.where))]),
                   PCAEditor(**p.pick("positions", "center", "scale")),
                   alpha=p.alpha, method="repe", method_params=p.record(), batch_size=p.batch_size)


@register_method("iti", help="ITI: top-H heads by probe accuracy, alpha·sigma·theta shifts", family="heads",
                 contract={"params": {"heads": 3, "alpha": 8.0, "seed": 0}, "gen_alpha": 1000.0})
def make_iti(*, heads: int = 16, alpha: float = 5.0, test_frac: float = 0.2, seed: int = 0, C: float = 1.0,
             layers: Optional[Sequence[int]] = None, positions: str = "all", sigma_over: str = "all",
             tiebreak: str = "separation", batch_size: int = 16) -> Steerer:
    """ITI with ``heads`` = H (see :class:`ITISelector` and :class:`ITIEditor` for the open choices)."""
    p = ITIParams.of(locals())
    return Steerer(ITISelector(**p.pick("heads", "test_frac", "seed", "C", "layers", "tiebreak")),
                   ITIEditor(**p.pick("positions", "sigma_over")),
                   alpha=p.alpha, method="iti", method_params=p.record(), batch_size=p.batch_size)


# short role names for specs and --vary: the baselines' editors and selector
for _name, _kind in (("caa", "mean_diff"), ("mean_diff", "mean_diff"), ("repe", "pca"), ("pca", "pca"),
                     ("iti", "iti")):
    register_role_alias("editor", _name, {"kind": _kind})
register_role_alias("selector", "iti", {"kind": "iti_selector"})

__all__ = ["make_caa", "make_repe", "make_iti", "DEFAULT_LAYER", "ResidParams", "CAAParams", "RepEParams", "ITIParams"]
