"""The composed FineSteer method: the SCS subspace gate (stage 1) decides per prompt whether to
steer; MoSE (stage 2) computes the query-specific vector when it does.

Fit with both data sets: ``make_steerer("finesteer").fit(model, fit_data("safety"),
gate_data=gate_data("safety"))`` (response-side pairs for MoSE, harmful vs harmless prompts for
the gate); ``steerlens fit --method finesteer --task safety`` does the same.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

from ...errors import PipelineError

from ...registry import register_method
from .mose import DEFAULT_LAYER, make_mose
from .scs import SCS_GATE_PARAMS, SCSGatedParams


@register_method("finesteer", help="FineSteer: SCS subspace gate per prompt (stage 1) in front of MoSE "
                                   "(stage 2); fit with response-side pairs and gate_data",
                 family="resid",
                 contract={"params": {"layer": 1, "alpha": 4.0, "gate_layer": 0, "rank_benign": 2, "rank_target": 2,
                                      "fpr": 0.3, "max_epochs": 40, "warmup_steps": 5},
                           "gen_alpha": 20.0})
def make_finesteer(*, layer: int = DEFAULT_LAYER, alpha: float = 1.0, gate_layer: Optional[int] = None,
                   form: str = "contrast", rank_benign: int = 16, rank_target: int = 4, target_center: str = "benign",
                   normalize: bool = False, fpr: float = 0.05, temperature: Optional[float] = None,
                   calib_frac: float = 0.25, seed: int = 0, **mose: Any):
    """MoSE at ``blocks.{layer}.hook_resid_post`` (``mose`` keywords: see :func:`make_mose`) gated
    by SCS at ``gate_layer`` (default: the same layer)."""
    bad = sorted(set(mose) - set(_MOSE_PARAMS))
    if bad:
        raise PipelineError(f"finesteer: unknown parameter(s) {bad}; accepted: {sorted(_params())}")
    p = SCSGatedParams.of(locals())
    gate = p.gate()
    base = make_mose(**p.pick("layer", "alpha", "seed"), **mose)
    st = base.with_gate(gate)
    st.method = "finesteer"
    st.method_params = {**base.method_params, **p.pick("gate_layer", *(k for k in SCS_GATE_PARAMS if k != "seed"))}
    return st


_MOSE_PARAMS = {k: p for k, p in inspect.signature(make_mose).parameters.items()
                if k not in ("layer", "alpha", "seed")}


def _params() -> dict:
    own = {k: p for k, p in inspect.signature(make_finesteer).parameters.items() if p.kind != p.VAR_KEYWORD}
    return {**own, **_MOSE_PARAMS}


# the accepted keywords, as ``steerlens methods`` and make_steerer's check read them
make_finesteer.__signature__ = inspect.Signature(list(_params().values()))


__all__ = ["make_finesteer"]
