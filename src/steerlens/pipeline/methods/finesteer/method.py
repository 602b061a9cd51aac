"""The composed FineSteer method: the SCS subspace gate (stage 1) decides per prompt whether to
steer; MoSE (stage 2) computes the query-specific vector when it does.

Fit with both data sets: ``make_steerer("finesteer").fit(model, fit_data("safety"),
gate_data=gate_data("safety"))`` (response-side pairs for MoSE, harmful vs harmless prompts for
the gate); ``steerlens fit --method finesteer --task safety`` does the same.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import PipelineError

from ...registry import register_method
from .mose import DEFAULT_LAYER, MOSE_PRESETS, make_mose
from .scs import SCS_GATE_PARAMS, SCSGatedParams

#: the gate kinds FineSteer's stage 1 can be (``gate_kind``)
GATE_KINDS = ("scs", "probe", "harm_dir")
#: what the main job fits FineSteer on (``fit.n`` of specs/main.toml); ``steerlens fit`` uses it
#: when ``--n`` is not given
DEFAULT_FIT_N = 96


@dataclass(frozen=True)
class FineSteerParams(SCSGatedParams):
    """FineSteer's own parameters (MoSE's come after them in the record). The defaults are the
    validated settings of the main job (specs/main.toml): the ``harm_dir`` gate at layer 16
    (shrinkage 0.5, 5% FPR; fitted on the ``safety-harm-all`` gate data, the method's default gate
    task for ``safety``: the gate ``steerlens gate-eval`` chooses, issue 24), alpha 1 (val), and
    REAL choosing MoSE's layer among
    ``select_layers`` (one VQ-AE per layer, ``select_repeats`` runs; listed in order of preference:
    another layer displaces the first only with an AUC more than ``select_margin`` higher, see
    :class:`~steerlens.pipeline.methods.real.selector.REALSelector`); ``select_layers=None`` keeps
    MoSE at ``layer``. ``gate_kind``: ``"scs"`` (with ``form`` / ranks), ``"probe"`` (``C``) or
    ``"harm_dir"`` (``shrinkage``), all at ``gate_layer`` and calibrated alike (``fpr``)."""
    gate_layer: Optional[int] = 16
    rank_benign: int = 4
    rank_target: int = 4
    gate_kind: str = "harm_dir"
    C: float = 0.1
    shrinkage: float = 0.5
    select_layers: Optional[tuple] = (12, 8, 10, 14, 16)
    select_repeats: int = 3
    select_margin: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate_kind not in GATE_KINDS:
            raise PipelineError(f"finesteer: gate_kind must be one of {GATE_KINDS}, got {self.gate_kind!r}")
        if self.select_layers is not None:
            if not len(self.select_layers):
                raise PipelineError("finesteer: select_layers must name at least one layer (or be None)")
            self._set(select_layers=[int(x) for x in self.select_layers])

    def gate(self):
        """The (unfitted) stage-1 gate these parameters describe."""
        from ...registry import make_gate

        common = self.pick("normalize", "fpr", "temperature", "calib_frac", "seed")
        if self.gate_kind == "scs":
            return super().gate()
        if self.gate_kind == "probe":
            return make_gate("probe", layer=self.gate_layer, C=self.C, **common)
        return make_gate("harm_dir", layer=self.gate_layer, shrinkage=self.shrinkage, **common)

    def gate_record(self) -> dict:
        """The recorded gate parameters (the SCS ones for ``scs``, as before; the kind's own otherwise)."""
        own = {"scs": [k for k in SCS_GATE_PARAMS if k != "seed"], "probe": ["C"], "harm_dir": ["shrinkage"]}
        keys = own[self.gate_kind] if self.gate_kind == "scs" else [
            *own[self.gate_kind], "normalize", "fpr", "temperature", "calib_frac"]
        return {"gate_kind": self.gate_kind, **self.pick("gate_layer", *keys),
                **self.pick("select_layers", "select_repeats", "select_margin")}


#: FineSteer's presets: MoSE's (``paper``: the authors' code; ``paper_eq``: the paper's equations),
#: at the fixed layer the preset gives (no REAL layer choice). The gate keeps its default settings
#: (not MoSE's layer): the authors released no gate (docs/fidelity.md, "SCS").
FINESTEER_PRESETS = {name: {**table, "select_layers": None} for name, table in MOSE_PRESETS.items()}


@register_method("finesteer", help="FineSteer: a prompt gate (harm_dir by default; scs, probe) in front of MoSE "
                                   "(stage 2) at the layer REAL picks; fit with response-side pairs and gate_data",
                 family="resid",
                 contract={"params": {"layer": 1, "alpha": 4.0, "gate_layer": 0, "rank_benign": 2, "rank_target": 2,
                                      "fpr": 0.3, "max_epochs": 40, "warmup_steps": 5, "select_layers": None},
                           "gen_alpha": 20.0},
                 fit_defaults={"n": DEFAULT_FIT_N, "gate_task": {"safety": "safety-harm-all"}},
                 presets=FINESTEER_PRESETS)
def make_finesteer(*, layer: int = DEFAULT_LAYER, alpha: float = 1.0, gate_layer: Optional[int] = 16,
                   form: str = "contrast", rank_benign: int = 4, rank_target: int = 4, target_center: str = "benign",
                   normalize: bool = False, fpr: float = 0.05, temperature: Optional[float] = None,
                   calib_frac: float = 0.25, seed: int = 0, gate_kind: str = "harm_dir", C: float = 0.1,
                   shrinkage: float = 0.5, select_layers: Optional[tuple] = (12, 8, 10, 14, 16),
                   select_repeats: int = 3, select_margin: float = 0.05, **mose: Any):
    """MoSE (``mose`` keywords: see :func:`make_mose`) at the residual layer REAL picks among
    ``select_layers`` (``None``: at ``layer``), gated per prompt by a ``gate_kind`` gate at
    ``gate_layer`` (default: ``layer``). Defaults: the main job's validated settings
    (:class:`FineSteerParams`)."""
    bad = sorted(set(mose) - set(_MOSE_PARAMS))
    if bad:
        raise PipelineError(f"finesteer: unknown parameter(s) {bad}; accepted: {sorted(_params())}")
    p = FineSteerParams.of(locals())
    base = make_mose(**p.pick("layer", "alpha", "seed"), **mose)
    st = base.with_gate(p.gate())
    if p.select_layers is not None:
        from ..real.selector import REALSelector

        st.selector = REALSelector(heads=1, target="resid", layers=p.select_layers, repeats=p.select_repeats,
                                   margin=p.select_margin, seed=p.seed)
    st.method = "finesteer"
    st.method_params = {**base.method_params, **p.gate_record()}
    return st


_MOSE_PARAMS = {k: p for k, p in inspect.signature(make_mose).parameters.items()
                if k not in ("layer", "alpha", "seed")}


def _params() -> dict:
    own = {k: p for k, p in inspect.signature(make_finesteer).parameters.items() if p.kind != p.VAR_KEYWORD}
    return {**own, **_MOSE_PARAMS}


# the accepted keywords, as ``steerlens methods`` and make_steerer's check read them
make_finesteer.__signature__ = inspect.Signature(list(_params().values()))


__all__ = ["make_finesteer", "FineSteerParams", "GATE_KINDS", "DEFAULT_FIT_N", "FINESTEER_PRESETS"]
