"""The interpretability interventions as pipeline methods (specs, CLI, artifacts, contract suite).

Each intervention of :mod:`steerlens.hooks.interventions` is a registered method, so it is built
with ``make_steerer``, fitted and saved like a steering method, run from the command line
(``steerlens fit --method ablate --task safety --param 'sites=["blocks.3.attn.hook_z[1,4]"]'
--param 'mode="mean"' --out runs/ablate``, then ``steerlens generate --steering runs/ablate`` or
``steerlens eval --steering runs/ablate``) and checked by the contract suite:

============  ================================================================================
method        what it does (strength ``alpha = 1`` is the full intervention)
============  ================================================================================
``ablate``    zero- or mean-ablation of the given sites (heads, neurons, block outputs,
              residual layers; zero-ablation also on attention patterns). The mean is read on
              the fitting data (both classes; ``mean_of="neg"`` / ``"pos"`` to choose).
``scale``     multiply the given sites by ``factor``.
``set``       set the given sites to the positive class's mean activation (``source="pos"``)
              or the negative's (a patch with a cached value).
``dir-ablate`` directional ablation (Arditi et al., 2024) of ``r = mean(h⁺) − mean(h⁻)`` read at
              ``blocks.{layer}.hook_resid_{where}``: at every layer (``layers=None``) or at the
              input of chosen layers.
============  ================================================================================

Token offsets (``at``: ``[0]`` = the last prompt token, ``-1`` the one before, ``+k`` the k-th
token after) and the position window (``positions``) work for all of them. Patching from other
inputs' cached sequences needs those inputs, so it is a Python-level tool
(:class:`~steerlens.hooks.interventions.Patch` with ``sequences=``) and the head effect maps of
:mod:`steerlens.interp` — ``steerlens patch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ....hooks import Edit, HookGate, Site
from ....hooks.interventions import MeanAblation, Patch, Scale, ZeroAblation, directional_ablation, site_shape
from ....hooks.sites import parse_site
from ....models import as_model
from ...contrastive import ContrastiveActs
from ...errors import PipelineError
from ...roles import Editor, Selector, register_role
from ...selection import Selection
from ...steerer import Steerer
from ...params import MethodParams, list_or_none
from ...registry import register_method

OPS = ("zero", "mean", "scale", "set", "directional")


def _site_strings(sites) -> list[str]:
    if sites is None:
        raise PipelineError("give the sites to intervene on, e.g. sites=['blocks.3.attn.hook_z[1,4]']")
    if isinstance(sites, (str, Site)):
        sites = [sites]
    out = [str(parse_site(s)) if isinstance(s, Site) else str(s) for s in sites]
    if not out:
        raise PipelineError("sites is empty")
    return out


def _split_modules(site: Site) -> list[Site]:
    """A site as pipeline modules: one per head / neuron (indexed sites), else the site itself."""
    if site.heads is None:
        return [site]
    return [Site(site.layer, site.kind, (h,)) for h in site.heads]


@register_role
class SiteSelector(Selector):
    """A fixed list of sites of any kind (heads, KV heads, neurons, block outputs, patterns).

    Bare head names (``blocks.3.attn.hook_z``) mean every head of the layer. ``read=False``: the
    editor needs no statistics, so only the embedding is read during fitting (a cheap pass).
    """

    kind = "sites"

    def __init__(self, sites: Sequence[str], read: bool = True) -> None:
        super().__init__(sites=_site_strings(sites), read=bool(read))

    def sites(self, model) -> list[Site]:
        m = as_model(model)
        out = [parse_site(s, m) for s in self.params["sites"]]
        if len(set(out)) != len(out):
            raise PipelineError(f"duplicate sites: {self.params['sites']}")
        return out

    def candidate_sites(self, model) -> list[Site]:
        readable = [s for s in self.sites(model) if not s.is_pattern] if self.params["read"] else []
        return readable or [Site.resid(0, "pre")]

    def fit(self, model, acts: ContrastiveActs) -> Selection:
        mods = [mod for s in self.sites(model) for mod in _split_modules(s)]
        return Selection(mods, torch.ones(len(mods)), {}, "fixed", "fixed")


@register_role
class InterventionEditor(Editor):
    """Turns the selected sites into one intervention each (see the module docstring).

    Parameters:
        op: ``"zero" | "mean" | "scale" | "set" | "directional"``.
        factor: the multiplier of ``op="scale"``.
        mean_of: rows whose mean ``op="mean"`` sets (``"all"`` = both classes, ``"pos"``, ``"neg"``).
        source: rows whose mean ``op="set"`` sets (``"pos"`` default, or ``"neg"``).
        layers: ``op="directional"``: ablate at every layer (``None``) or at these layers' input.
        positions, at: the position window and token offsets (see :mod:`steerlens.hooks.interventions`).
    """

    kind = "intervention"

    def __init__(self, op: str = "zero", factor: float = 0.0, mean_of: str = "all", source: str = "pos",
                 layers: Optional[Sequence[int]] = None, positions: str = "all",
                 at: Optional[Sequence[int]] = None) -> None:
        if op not in OPS:
            raise PipelineError(f"op must be one of {OPS}, got {op!r}")
        if mean_of not in ("all", "pos", "neg") or source not in ("pos", "neg", "all"):
            raise PipelineError("mean_of / source must be 'all', 'pos' or 'neg'")
        from ....hooks.edits import EditError, normalise_positions

        try:
            positions = normalise_positions(positions)
        except EditError as e:
            raise PipelineError(str(e)) from None
        super().__init__(op=op, factor=float(factor), mean_of=mean_of, source=source,
                         layers=None if layers is None else [int(x) for x in layers], positions=positions,
                         at=None if at is None else [int(a) for a in ([at] if isinstance(at, int) else at)])
        self.modules: list[str] = []
        self.values: list[Optional[torch.Tensor]] = []

    @property
    def fitted(self) -> bool:
        return bool(self.modules)

    def fit(self, model, acts: ContrastiveActs, selection: Selection) -> None:
        op = self.params["op"]
        sites = selection.sites()
        values: list[Optional[torch.Tensor]] = []
        for s in sites:
            if op in ("zero", "scale"):
                values.append(None)
                continue
            if s.is_pattern:
                raise PipelineError(f"{s}: attention patterns can only be zero-ablated in a pipeline "
                                    "(op='zero'); patch them from cached inputs with hooks.Patch(sequences=...)")
            if s not in acts.pos:
                raise PipelineError(f"{s} was not captured")
            pos, neg = acts.pos[s].float(), acts.neg[s].float()
            if op == "directional":
                if s.is_head or s.is_neuron:
                    raise PipelineError(f"{s}: the direction of op='directional' is read on a residual-width site")
                r = pos.mean(0) - neg.mean(0)
                if r.norm() == 0:
                    raise PipelineError(f"{s}: the mean difference is zero (identical classes)")
                values.append(r)
            else:
                which = self.params["mean_of"] if op == "mean" else self.params["source"]
                x = {"all": torch.cat([pos, neg]), "pos": pos, "neg": neg}[which]
                values.append(x.mean(0))
            if values[-1] is not None and not torch.isfinite(values[-1]).all():
                raise PipelineError(f"{s}: fitted value contains NaN or inf")
        if op == "directional" and len(sites) != 1:
            raise PipelineError("op='directional' reads its direction at exactly one site")
        self.modules, self.values = [str(s) for s in sites], values

    def edits(self, model, selection: Selection, alpha: float, gate: Optional[HookGate] = None) -> list[Edit]:
        self._require_fitted()
        p = self.params
        kw = dict(positions=p["positions"], at=p["at"], gate=gate)
        out: list[Edit] = []
        if p["op"] == "directional":
            return list(directional_ablation(model, self.values[0], p["layers"], alpha=alpha,  # type: ignore[arg-type]
                                             positions=p["positions"], at=p["at"], gate=gate))
        for s, v in zip(self.modules, self.values):
            site = parse_site(s)
            if p["op"] == "zero":
                out.append(ZeroAblation(site, alpha, **kw))
            elif p["op"] == "scale":
                out.append(Scale(site, p["factor"], alpha, **kw))
            elif p["op"] == "mean":
                out.append(MeanAblation(site, v, alpha, **kw))  # type: ignore[arg-type]
            else:
                out.append(Patch(site, v, alpha, **kw))
        return out

    def check_model(self, model) -> None:
        m = as_model(model)
        for s, v in zip(self.modules, self.values):
            site = parse_site(s).validate(m)
            if v is None:
                continue
            want = (m.d_model,) if self.params["op"] == "directional" else site_shape(site, m)
            if tuple(v.shape) != want:
                raise PipelineError(f"{s}: stored value of shape {tuple(v.shape)} but the model's site has {want}")

    def extra_state(self) -> dict:
        return {"modules": list(self.modules), "has_value": [v is not None for v in self.values]}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"value.{i}": v for i, v in enumerate(self.values) if v is not None}

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.modules = list(extra.get("modules", []))
        has = extra.get("has_value", [False] * len(self.modules))
        missing = [f"value.{i}" for i, h in enumerate(has) if h and f"value.{i}" not in tensors]
        if missing:
            raise PipelineError(f"intervention: tensors {missing} missing from the artifact")
        self.values = [tensors[f"value.{i}"].float() if h else None for i, h in enumerate(has)]


class _SitesParams(MethodParams):
    """Parameters with ``sites``, recorded as site strings (:func:`_site_strings`)."""

    def __post_init__(self) -> None:
        self._set(sites=_site_strings(self.sites))


@dataclass(frozen=True)
class AblateParams(_SitesParams):
    """:func:`make_ablate`'s parameters."""
    sites: Optional[Sequence[str]] = None
    mode: str = "mean"
    mean_of: str = "all"
    alpha: float = 1.0
    positions: str = "all"
    at: Optional[Sequence[int]] = None
    batch_size: int = 16


@dataclass(frozen=True)
class ScaleParams(_SitesParams):
    """:func:`make_scale`'s parameters."""
    sites: Optional[Sequence[str]] = None
    factor: float = 0.0
    alpha: float = 1.0
    positions: str = "all"
    at: Optional[Sequence[int]] = None
    batch_size: int = 16


@dataclass(frozen=True)
class SetParams(_SitesParams):
    """:func:`make_set`'s parameters."""
    sites: Optional[Sequence[str]] = None
    source: str = "pos"
    alpha: float = 1.0
    positions: str = "all"
    at: Optional[Sequence[int]] = None
    batch_size: int = 16


@dataclass(frozen=True)
class DirAblateParams(MethodParams):
    """:func:`make_dir_ablate`'s parameters (``layers`` recorded as a list)."""
    layer: int = 10
    where: str = "post"
    layers: Optional[Sequence[int]] = None
    alpha: float = 1.0
    positions: str = "all"
    at: Optional[Sequence[int]] = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        self._set(layers=list_or_none(self.layers))


def _steerer(method: str, sites, op: str, p: MethodParams, *editor: str) -> Steerer:
    """The steerer of intervention ``op`` on ``sites``; ``editor``: the fields of ``p`` the
    :class:`InterventionEditor` takes besides ``op``."""
    read = op not in ("zero", "scale")
    return Steerer(SiteSelector(sites, read=read), InterventionEditor(op=op, **p.pick(*editor, "positions", "at")),
                   alpha=p.alpha, method=method, method_params=p.record(), batch_size=p.batch_size)


@register_method("ablate", help="zero- or mean-ablation of heads, KV heads, neurons, block outputs (patterns: zero)",
                 family="heads",
                 contract={"params": {"sites": ["blocks.1.attn.hook_z[0,2]"], "mode": "mean"}, "gen_alpha": 30.0})
def make_ablate(*, sites: Optional[Sequence[str]] = None, mode: str = "mean", mean_of: str = "all",
                alpha: float = 1.0, positions: str = "all", at: Optional[Sequence[int]] = None,
                batch_size: int = 16) -> Steerer:
    """Ablate ``sites`` (``mode="zero"`` or ``"mean"``; the mean over the fitting data)."""
    if mode not in ("zero", "mean"):
        raise PipelineError(f"mode must be 'zero' or 'mean', got {mode!r}")
    p = AblateParams.of(locals())
    return _steerer("ablate", p.sites, p.mode, p, "mean_of")


@register_method("scale", help="multiply heads / neurons / block outputs by a factor", family="heads",
                 contract={"params": {"sites": ["blocks.1.hook_attn_out"], "factor": 3.0}, "gen_alpha": 3.0})
def make_scale(*, sites: Optional[Sequence[str]] = None, factor: float = 0.0, alpha: float = 1.0,
               positions: str = "all", at: Optional[Sequence[int]] = None, batch_size: int = 16) -> Steerer:
    """Scale ``sites`` by ``factor`` (``act ← act + alpha·(factor − 1)·act``)."""
    p = ScaleParams.of(locals())
    return _steerer("scale", p.sites, "scale", p, "factor")


@register_method("set", help="set sites to the positive (or negative) class's mean activation (a patch)",
                 family="heads",
                 contract={"params": {"sites": ["blocks.1.mlp.hook_post[3,7,100]", "blocks.0.hook_mlp_out"]},
                           "gen_alpha": 30.0})
def make_set(*, sites: Optional[Sequence[str]] = None, source: str = "pos", alpha: float = 1.0,
             positions: str = "all", at: Optional[Sequence[int]] = None, batch_size: int = 16) -> Steerer:
    """Patch ``sites`` with the mean activation of the ``source`` class of the fitting data."""
    p = SetParams.of(locals())
    return _steerer("set", p.sites, "set", p, "source")


@register_method("dir-ablate", help="directional ablation of the class mean difference (Arditi et al. 2024)",
                 family="resid", contract={"params": {"layer": 1}, "gen_alpha": 3.0})
def make_dir_ablate(*, layer: int = 10, where: str = "post", layers: Optional[Sequence[int]] = None,
                    alpha: float = 1.0, positions: str = "all", at: Optional[Sequence[int]] = None,
                    batch_size: int = 16) -> Steerer:
    """Project ``r = mean(h⁺) − mean(h⁻)`` (read at ``blocks.{layer}.hook_resid_{where}``) out of the
    residual stream at every layer (``layers=None``) or at the input of ``layers``."""
    p = DirAblateParams.of(locals())
    return _steerer("dir-ablate", [str(Site.resid(p.layer, p.where))], "directional", p, "layers")


__all__ = ["SiteSelector", "InterventionEditor", "make_ablate", "make_scale", "make_set", "make_dir_ablate", "OPS",
           "AblateParams", "ScaleParams", "SetParams", "DirAblateParams"]
