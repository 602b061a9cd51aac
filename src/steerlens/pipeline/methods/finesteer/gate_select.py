"""Choosing the SCS gate's layer and ranks on validation data, layer by layer.

One :func:`steerlens.capture` pass reads the last prompt token at every candidate layer for the
fitting prompts and every validation prompt; then, for every layer and every setting of the grid
(score form × ranks; the probe's ``C``), a gate is fitted on the fitting activations (exactly as
:meth:`CalibratedGate.fit_tensors` fits it for steering) and scored on the validation pairs by
ROC-AUC. The criterion is the mean AUC over the chosen validation pairs (e.g. harmful vs Alpaca
*and* XSTest unsafe vs XSTest safe: the first alone saturates near 1 at almost every layer).
For each form the best (layer, setting) wins; :func:`plot_auc_by_layer` draws AUC against the
layer, one line per form (its best setting at each layer).

::

    sel = select_gate(model, gate_data("safety"), {"harmful_vs_alpaca": (harm_val, alpaca_val),
                                                 "xstest_unsafe_vs_safe": (xs_unsafe_val, xs_safe_val)})
    sel.plot("runs/gate_auc.png");  gate = sel.make_gate("scs-contrast")   # unfitted, chosen params
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from ....fileio import atomic_savefig
from ....hooks.activations import capture
from ....models import as_model
from ...contrastive import check_data
from ...errors import PipelineError
from ...registry import make_gate
from ...gates import CalibratedGate, roc_auc

#: ``{form label: [gate params (with "kind"), ...]}``: the settings tried at every layer.
Grid = Mapping[str, Sequence[dict]]


def default_grid(ranks_benign: Sequence[int] = (4, 16, 64), ranks_target: Sequence[int] = (1, 4, 16),
                 probe_C: Sequence[float] = (0.01, 0.1, 1.0), normalize: Sequence[bool] = (False,),
                 probe: bool = True) -> dict[str, list[dict]]:
    """The SCS forms ``scs-contrast`` (ranks_benign × ranks_target) and ``scs-outside``
    (ranks_benign), and the reference ``probe`` (C), each for every ``normalize`` value."""
    g: dict[str, list[dict]] = {
        "scs-contrast": [{"kind": "scs", "form": "contrast", "rank_benign": int(b), "rank_target": int(t),
                          "normalize": bool(nz)} for nz in normalize for b in ranks_benign for t in ranks_target],
        "scs-outside": [{"kind": "scs", "form": "outside", "rank_benign": int(b), "normalize": bool(nz)}
                        for nz in normalize for b in ranks_benign],
    }
    if probe:
        g["probe"] = [{"kind": "probe", "C": float(c), "normalize": bool(nz)} for nz in normalize for c in probe_C]
    return g


def build_gate(params: Mapping[str, Any], layer: int, **overrides: Any) -> CalibratedGate:
    """An unfitted gate from a grid entry (``{"kind": ..., ...}``) at ``layer``."""
    p = {k: v for k, v in params.items() if k != "kind"}
    p.update(overrides)
    p["layer"] = int(layer)
    g = make_gate(params["kind"], **p)
    if not isinstance(g, CalibratedGate):
        raise PipelineError(f"gate kind {params['kind']!r} is not a calibrated activation gate")
    return g


@dataclass
class GateSelection:
    """Result of :func:`evaluate_grid` / :func:`select_gate`.

    Attributes:
        rows: one per (form, layer, setting): ``{"form", "layer", "params", "auc": {pair: AUC},
            "criterion"}``.
        criterion_pairs: the validation pairs whose mean AUC is the criterion.
        best: per form, the row with the highest criterion (ties: the lower layer, then the
            earlier setting).
    """

    rows: list[dict]
    criterion_pairs: list[str]
    best: dict[str, dict] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def per_layer(self, form: str) -> dict[int, dict]:
        """The best row of ``form`` at each layer."""
        out: dict[int, dict] = {}
        for r in self.rows:
            if r["form"] == form and (r["layer"] not in out or r["criterion"] > out[r["layer"]]["criterion"]):
                out[r["layer"]] = r
        return dict(sorted(out.items()))

    def make_gate(self, form: str, **overrides: Any) -> CalibratedGate:
        """An unfitted gate with ``form``'s chosen layer and setting (``overrides``: e.g. ``fpr``)."""
        if form not in self.best:
            raise PipelineError(f"no selection for form {form!r}; have {sorted(self.best)}")
        r = self.best[form]
        return build_gate(r["params"], r["layer"], **overrides)

    def to_json(self) -> dict:
        return {"criterion_pairs": self.criterion_pairs, "best": self.best, "rows": self.rows, "info": self.info}

    def plot(self, path: str | os.PathLike, pairs: Optional[Sequence[str]] = None) -> str | os.PathLike:
        return plot_auc_by_layer(self, path, pairs)


def evaluate_grid(fit_pos: Mapping[int, torch.Tensor], fit_neg: Mapping[int, torch.Tensor],
                  val: Mapping[str, tuple[Mapping[int, torch.Tensor], Mapping[int, torch.Tensor]]], *,
                  grid: Optional[Grid] = None, layers: Optional[Sequence[int]] = None,
                  criterion_pairs: Optional[Sequence[str]] = None, gate_overrides: Optional[dict] = None,
                  progress: bool = False) -> GateSelection:
    """Fit every grid setting at every layer on ``fit_pos`` / ``fit_neg`` (``{layer: [n, d]}``)
    and score it by ROC-AUC on each validation pair ``val[name] = ({layer: pos}, {layer: neg})``."""
    from tqdm.auto import tqdm

    grid = default_grid() if grid is None else grid
    layers = sorted(fit_pos) if layers is None else [int(x) for x in layers]
    pairs = list(val) if criterion_pairs is None else list(criterion_pairs)
    if not val:
        raise PipelineError("gate selection needs at least one validation pair")
    bad = [p for p in pairs if p not in val]
    if bad:
        raise PipelineError(f"criterion pairs {bad} are not among the validation pairs {list(val)}")
    missing = [l for l in layers if l not in fit_pos or l not in fit_neg
               or any(l not in vp or l not in vn for vp, vn in val.values())]
    if missing:
        raise PipelineError(f"activations missing for layers {missing}")
    rows: list[dict] = []
    total = len(layers) * sum(len(v) for v in grid.values())
    bar = tqdm(total=total, desc="gate grid", disable=not progress, leave=False)
    for layer in layers:
        for form, settings in grid.items():
            for params in settings:
                gate = build_gate(params, layer, **(gate_overrides or {})).fit_tensors(fit_pos[layer], fit_neg[layer])
                auc = {name: roc_auc(gate.score(vp[layer].float()), gate.score(vn[layer].float()))
                       for name, (vp, vn) in val.items()}
                rows.append({"form": form, "layer": int(layer), "params": dict(params), "auc": auc,
                             "criterion": sum(auc[p] for p in pairs) / len(pairs)})
                bar.update(1)
    bar.close()
    sel = GateSelection(rows, pairs)
    for i, r in enumerate(rows):
        b = sel.best.get(r["form"])
        if b is None or r["criterion"] > b["criterion"]:
            sel.best[r["form"]] = r
    sel.info = {"layers": layers, "grid": {k: list(v) for k, v in grid.items()},
                "n_fit": {"pos": int(next(iter(fit_pos.values())).shape[0]), "neg": int(next(iter(fit_neg.values())).shape[0])},
                "n_val": {k: [int(next(iter(vp.values())).shape[0]), int(next(iter(vn.values())).shape[0])]
                          for k, (vp, vn) in val.items()}}
    return sel


def select_gate(model, gate_data: Any, val_pairs: Mapping[str, tuple[Sequence[str], Sequence[str]]], *,
                layers: Optional[Sequence[int]] = None, where: str = "post", grid: Optional[Grid] = None,
                criterion_pairs: Optional[Sequence[str]] = None, batch_size: int = 16,
                progress: bool = False) -> GateSelection:
    """Read the last prompt token at every candidate layer for the gate's fitting prompts and the
    validation prompts in **one** capture pass, then :func:`evaluate_grid`.

    Args:
        gate_data: prompt-side target (pos) vs benign (neg) fitting data (see
            :func:`steerlens.pipeline.sweep.gate_data`).
        val_pairs: ``{name: (target prompts, benign prompts)}`` from the validation split.
        layers: candidate layers (default: all).
    """
    pos, neg, position = check_data(gate_data)
    if position != "last":
        raise PipelineError("gate selection reads prompt-side data (position 'last')")
    m = as_model(model)
    layers = list(range(m.n_layers)) if layers is None else [int(x) for x in layers]
    from ....hooks.sites import Site

    sites = [Site.resid(l, where) for l in layers]
    for s in sites:
        s.validate(m)
    prompts: dict[str, int] = {}
    for p in list(pos) + list(neg) + [q for a, b in val_pairs.values() for q in list(a) + list(b)]:
        prompts.setdefault(p, len(prompts))
    acts = capture(m, list(prompts), sites, "last", batch_size=batch_size, progress=progress)

    def take(ps: Sequence[str]) -> dict[int, torch.Tensor]:
        idx = torch.tensor([prompts[p] for p in ps], dtype=torch.long)
        return {s.layer: acts[s][idx].float() for s in sites}  # type: ignore[index]

    val = {k: (take(a), take(b)) for k, (a, b) in val_pairs.items()}
    sel = evaluate_grid(take(pos), take(neg), val, grid=grid, layers=layers, criterion_pairs=criterion_pairs,
                        progress=progress)
    sel.info["where"] = where
    return sel


def plot_auc_by_layer(sel: GateSelection, path: str | os.PathLike, pairs: Optional[Sequence[str]] = None,
                      title: Optional[str] = None) -> str | os.PathLike:
    """One panel per validation pair (and one for the criterion): ROC-AUC against the layer, one
    line per score form (its best setting at each layer by the criterion); the chosen layer of
    each form is marked with a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(pairs) if pairs is not None else list(sel.rows[0]["auc"]) if sel.rows else []
    panels = names + ["criterion"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    forms = list(dict.fromkeys(r["form"] for r in sel.rows))
    for ax, pn in zip(axes.flat, panels):
        for i, form in enumerate(forms):
            pl = sel.per_layer(form)
            xs = list(pl)
            ys = [pl[l]["criterion"] if pn == "criterion" else pl[l]["auc"][pn] for l in xs]
            ax.plot(xs, ys, "-o", ms=3, color=f"C{i}", label=form)
            b = sel.best.get(form)
            if b is not None:
                by = b["criterion"] if pn == "criterion" else b["auc"][pn]
                ax.plot([b["layer"]], [by], "*", ms=12, color=f"C{i}", markeredgecolor="k")
        ax.set_xlabel("gate layer (hook_resid_post)")
        ax.set_ylabel("ROC-AUC (val)")
        ax.set_title(pn if pn != "criterion" else f"criterion: mean of {', '.join(sel.criterion_pairs)}", fontsize=8)
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["GateSelection", "default_grid", "build_gate", "evaluate_grid", "select_gate", "plot_auc_by_layer"]
