"""Editors that add one fixed vector per selected module: CAA, RepE-PCA and ITI.

All three fit a vector ``v_m`` for every selected module ``m`` and steer with
``act_m ← act_m + alpha · w_m · v_m`` (``w_m`` the selection's weight; times the gate's per-input
scale when gated). Heads of one layer are merged into one ``AddVector`` on ``hook_z``.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float

from ..hooks import AddVector, Edit, EditError, HookGate, Site
from ..hooks.edits import normalise_positions
from ..hooks.sites import parse_site
from ..numerics import pca
from .contrastive import ContrastiveActs
from .errors import PipelineError
from .roles import Editor, register_role
from .selection import Selection


class VectorEditor(Editor):
    """Base: a fitted vector per selected module, added with the selection's weights.

    Subclasses implement :meth:`module_vector`. Parameter ``positions``: ``"all"`` (default: every
    prompt and generated token, as in CAA / ITI), ``"from_prompt_last"`` or ``"current_last"``
    (see :mod:`steerlens.hooks.edits`).
    """

    def __init__(self, positions: str = "all", **params) -> None:
        try:
            positions = normalise_positions(positions)
        except EditError as e:
            raise PipelineError(str(e)) from None
        super().__init__(positions=positions, **params)
        self.modules: list[Site] = []
        self.vectors: list[torch.Tensor] = []
        self.stats: dict[str, list[float]] = {}

    @property
    def fitted(self) -> bool:
        return bool(self.vectors)

    def module_vector(self, pos: Float[torch.Tensor, "n_pos d"], neg: Float[torch.Tensor, "n_neg d"],
                      paired: bool) -> tuple[Float[torch.Tensor, "d"], dict[str, float]]:
        raise NotImplementedError

    #: whether :meth:`module_vector` also takes the σ-bank activations (``bank=``)
    uses_bank = False

    def fit(self, model, acts: ContrastiveActs, selection: Selection) -> None:
        vecs, stats = [], {}
        for mod in selection.modules:
            pos, neg = acts.module(mod)
            if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
                raise PipelineError(f"{mod}: activations contain NaN or inf")
            extra = {"bank": acts.bank_module(mod)} if self.uses_bank else {}
            v, st = self.module_vector(pos, neg, acts.paired, **extra)
            if not torch.isfinite(v).all():
                raise PipelineError(f"{mod}: fitted vector contains NaN or inf")
            vecs.append(v.float().contiguous())
            for k, x in st.items():
                stats.setdefault(k, []).append(float(x))
        self.modules, self.vectors, self.stats = list(selection.modules), vecs, stats

    def vector_for(self, module: Site) -> torch.Tensor:
        try:
            return self.vectors[self.modules.index(module)]
        except ValueError:
            raise PipelineError(f"{module} was not fitted by this editor (fitted: {[str(m) for m in self.modules]})") from None

    def edits(self, model, selection: Selection, alpha: float, gate: Optional[HookGate] = None) -> list[Edit]:
        self._require_fitted()
        out: list[Edit] = []
        for site, idx in selection.grouped():
            rows = [selection.weights[i] * self.vector_for(selection.modules[i]) for i in idx]
            vec = torch.stack(rows) if site.is_head else rows[0]
            out.append(AddVector(site, vec, alpha, gate=gate, positions=self.params["positions"]))
        return out

    def check_model(self, model) -> None:
        for mod, v in zip(self.modules, self.vectors):
            w = mod.width(model)
            if v.shape[-1] != w:
                raise PipelineError(f"{mod}: stored vector has width {v.shape[-1]} but the model's site has width {w}")

    # -- state ---------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"modules": [str(m) for m in self.modules], "stats": self.stats}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"vector.{i}": v for i, v in enumerate(self.vectors)}

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        mods = [parse_site(m) for m in extra.get("modules", [])]
        missing = [f"vector.{i}" for i in range(len(mods)) if f"vector.{i}" not in tensors]
        if missing:
            raise PipelineError(f"{type(self).__name__}: tensors {missing} missing from the artifact")
        self.modules = mods
        self.vectors = [tensors[f"vector.{i}"].float() for i in range(len(mods))]
        self.stats = {k: list(v) for k, v in extra.get("stats", {}).items()}


@register_role
class MeanDiffEditor(VectorEditor):
    """CAA / ActAdd: ``v = mean(h⁺) − mean(h⁻)`` (unnormalised, so ``alpha = 1`` adds the mean shift)."""

    kind = "mean_diff"

    def module_vector(self, pos, neg, paired):
        v = pos.mean(0) - neg.mean(0)
        return v, {"norm": float(v.norm())}


def paired_differences(pos: torch.Tensor, neg: torch.Tensor, paired: bool) -> torch.Tensor:
    """``h⁺ᵢ − h⁻ᵢ``. Unpaired data is paired by index over the first ``min(n_pos, n_neg)`` rows."""
    n = min(pos.shape[0], neg.shape[0])
    if paired and pos.shape[0] != neg.shape[0]:
        raise PipelineError(f"paired data with {pos.shape[0]} positive but {neg.shape[0]} negative rows")
    return pos[:n] - neg[:n]


@register_role
class PCAEditor(VectorEditor):
    """RepE-PCA: the first principal component ``u`` of the paired differences ``h⁺ᵢ − h⁻ᵢ``,
    sign fixed so the mean projection of the differences onto ``u`` is positive.

    Open choices (parameters):
        center: subtract the mean difference before the PCA (``False`` by default: with
            consistently ordered pairs, centring removes the very shift we want; RepE's random
            pair flipping + centring amounts to the uncentred component).
        scale: ``"mean_proj"`` (default) ``v = u · mean((h⁺ᵢ − h⁻ᵢ)·u)``, so ``alpha`` means the
            same as for CAA along ``u``; or ``"unit"`` ``v = u``.
    """

    kind = "pca"

    def __init__(self, positions: str = "all", center: bool = False, scale: str = "mean_proj") -> None:
        if scale not in ("mean_proj", "unit"):
            raise PipelineError(f"scale must be 'mean_proj' or 'unit', got {scale!r}")
        super().__init__(positions=positions, center=bool(center), scale=scale)

    def module_vector(self, pos, neg, paired):
        d = paired_differences(pos, neg, paired).double()
        if d.shape[0] < 2:
            raise PipelineError("RepE-PCA needs at least 2 paired differences")
        r = pca(d, 1, center=self.params["center"])
        u = r.components[0]
        proj = d @ u
        if proj.mean() < 0:
            u, proj = -u, -proj
        var = r.explained_variance_ratio
        v = u * proj.mean() if self.params["scale"] == "mean_proj" else u
        return v.float(), {"explained_variance": float(var[0]), "mean_proj": float(proj.mean())}


#: where ITI's σ is measured (:class:`ITIEditor` ``sigma_over``)
SIGMA_OVER = ("all", "pos", "neg", "bank")


@register_role
class ITIEditor(VectorEditor):
    """ITI: ``v_m = σ_m θ_m`` with ``θ_m = unit(mean z⁺ − mean z⁻)`` (mass-mean shift) and ``σ_m``
    the standard deviation of the projections of all fitting activations (both classes) onto
    ``θ_m``; steering adds ``alpha · w_m · σ_m · θ_m`` (``w_m = 1`` for ITI, REAL's weights otherwise).

    Open choice: ``sigma_over`` = ``"all"`` (default; positive and negative examples together, as
    in ITI), ``"pos"`` / ``"neg"``, or ``"bank"``: over the activations of the fitting data's
    unlabelled σ texts (``data.bank``; the REAL authors take σ from another reading of the same
    answers, ``"Q: q A: a Q: <another question>"``, built by
    :func:`steerlens.evals.data.truthfulness_mc_rows_from`).
    """

    kind = "iti"

    def __init__(self, positions: str = "all", sigma_over: str = "all") -> None:
        if sigma_over not in SIGMA_OVER:
            raise PipelineError(f"sigma_over must be one of {SIGMA_OVER}, got {sigma_over!r}")
        super().__init__(positions=positions, sigma_over=sigma_over)

    @property
    def uses_bank(self) -> bool:  # type: ignore[override]
        return self.params["sigma_over"] == "bank"

    def module_vector(self, pos, neg, paired, bank=None):
        diff = pos.mean(0) - neg.mean(0)
        norm = diff.norm()
        if norm == 0:
            raise PipelineError("ITI: the mass-mean shift is zero (identical classes)")
        theta = diff / norm
        if self.uses_bank:
            if bank is None or bank.shape[0] < 2:
                raise PipelineError("ITI sigma_over='bank' needs at least 2 bank activations per module")
            x = bank
        else:
            x = {"all": torch.cat([pos, neg]), "pos": pos, "neg": neg}[self.params["sigma_over"]]
        sigma = (x @ theta).std()
        return sigma * theta, {"sigma": float(sigma), "shift_norm": float(norm)}

    def thetas(self) -> list[torch.Tensor]:
        return [v / v.norm() for v in self.vectors]

    def sigmas(self) -> list[float]:
        return list(self.stats.get("sigma", []))


__all__ = ["VectorEditor", "MeanDiffEditor", "PCAEditor", "ITIEditor", "paired_differences"]
