"""The interventions of interpretability, through the one edit interface.

Every class here is an :class:`~steerlens.hooks.edits.Edit`: it says what it would change
(``delta(act, info)``) and the hook layer applies ``act + alpha · scale · gate · mask · delta``.
At ``alpha = 1`` each does exactly what its name says; ``alpha = 0`` (or a closed gate, or a row
with per-input ``scale`` 0) leaves the activation untouched bit for bit, and ``0 < alpha < 1``
moves part of the way (a partial ablation).

==========================  ==========================================  ===========================
class                       delta at ``alpha = 1``                      result
==========================  ==========================================  ===========================
:class:`Scale` (``s``)      ``(s − 1) · act``                           ``s · act``
:class:`ZeroAblation`       ``− act``                                   ``0``
:class:`MeanAblation`       ``mean − act``                              ``mean`` (a reference mean)
:class:`Patch`              ``cached − act``                            ``cached`` (another input's
                                                                        activation, or a fixed one)
:class:`DirectionalAblation` ``− (act · r̂) r̂``                          ``act`` without its ``r̂``
                                                                        component
==========================  ==========================================  ===========================

All of them work at every site kind (:mod:`steerlens.hooks.sites`): per head (``hook_z``,
``hook_q``, ``hook_k``/``hook_v`` per KV head), per MLP neuron (``mlp.hook_pre`` /
``mlp.hook_post`` with indices), on whole residual-width outputs (``hook_attn_out``,
``hook_mlp_out``, the residual stream). Attention patterns (``attn.hook_pattern``) take only
ablations: :class:`ZeroAblation`, or :class:`Patch` from another input's pattern.

**Positions.** ``positions`` is the hook layer's window (``"all"``, ``"from_prompt_last"``,
``"current_last"``). ``at`` restricts an intervention further to token offsets relative to the
last prompt token: ``at=[0]`` is the last prompt token, ``-1`` the token before it, ``+k`` the
k-th token after it (a response token when scoring, the k-th generated token when generating).
Left padding does not move these offsets, so batched runs equal one-at-a-time runs.

:func:`directional_ablation` builds the edits of Arditi et al. (2024): the direction ``r̂`` is
projected out of everything written to the residual stream (the embedding, i.e.
``blocks.0.hook_resid_pre``, and every layer's ``hook_attn_out`` and ``hook_mlp_out``), so the
stream never carries it — or, with ``layers=[...]``, out of the stream entering those layers only.
:func:`mean_activations` reads the reference mean of a mean-ablation.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch
from jaxtyping import Float

from .edits import Edit, EditError, TokenInfo
from .sites import Site, SiteLike, parse_site


def _offsets(act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
    """``[b, t]`` offset of each column of ``act`` from the last prompt token."""
    b, t = act.shape[0], act.shape[1]
    cols = torch.arange(t, device=act.device)
    if info.step == 0:
        if info.prompt_last is not None:
            return cols[None, :] - info.prompt_last.to(act.device)[:, None]
        return (cols - (t - 1))[None, :].expand(b, t)
    return (cols - (t - 1) + info.step)[None, :].expand(b, t)


def _bmask(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    return mask.view(*mask.shape, *([1] * (ndim - mask.ndim)))


def site_shape(site: Site, model) -> tuple[int, ...]:
    """Trailing shape of the site's part of the activation (what a fixed value must have)."""
    if site.is_pattern:
        raise EditError(f"{site}: an attention pattern has no fixed shape (patch it from another input)")
    if site.is_head:
        return (len(site.heads or ()), model.d_head)
    return (site.width(model),)


class Intervention(Edit):
    """Base of the interventions: the common edit settings plus token offsets ``at``.

    Subclasses implement :meth:`compute` (the full delta); :meth:`delta` zeroes it outside ``at``.
    """

    at: Optional[tuple[int, ...]] = None

    def _init_intervention(self, site, positions, alpha, scale, gate, name, at) -> None:
        self._init_common(site, positions, alpha, scale, gate, name)
        if at is not None:
            at = (int(at),) if isinstance(at, int) else tuple(sorted(set(int(a) for a in at)))
            if not at:
                raise EditError(f"{self.site}: `at` needs at least one token offset (or None for every token)")
        self.at = at

    def compute(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        raise NotImplementedError

    def delta(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        d = self.compute(act, info)
        if self.at is None:
            return d
        off = _offsets(act, info)
        keep = torch.zeros_like(off, dtype=torch.bool)
        for a in self.at:
            keep |= off == a
        return torch.where(_bmask(keep, d.ndim), d, torch.zeros((), dtype=d.dtype, device=d.device))

    def _describe(self) -> str:
        return "" if self.at is None else f", at={list(self.at)}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(site={self.site}, alpha={self.alpha}, positions={self.positions!r}"
                f"{self._describe()})")


class Scale(Intervention):
    """Multiply the activation by ``factor``: ``delta = (factor − 1) · act`` (``factor = 0`` is a
    zero-ablation, ``2`` doubles a head's output).

    Args:
        site: where (any site except attention patterns).
        factor: the multiplier reached at ``alpha = 1``.
    """

    def __init__(self, site: SiteLike, factor: float, alpha: float = 1.0, *, positions: str = "all",
                 at: Optional[Iterable[int]] = None, scale: Optional[torch.Tensor] = None, gate: Any = None,
                 name: Optional[str] = None) -> None:
        self._init_intervention(site, positions, alpha, scale, gate, name, at)
        f = float(factor)
        if f != f or f in (float("inf"), float("-inf")):
            raise EditError(f"{self.site}: factor must be finite, got {factor}")
        self.factor = f

    def compute(self, act, info):
        return (self.factor - 1.0) * act

    def _describe(self) -> str:
        return f", factor={self.factor:g}" + super()._describe()


class ZeroAblation(Intervention):
    """Set the activation to zero: ``delta = − act``. Works on attention patterns too (the
    head then attends to nothing: its output is zero)."""

    pattern_editable = True

    def __init__(self, site: SiteLike, alpha: float = 1.0, *, positions: str = "all",
                 at: Optional[Iterable[int]] = None, scale: Optional[torch.Tensor] = None, gate: Any = None,
                 name: Optional[str] = None) -> None:
        self._init_intervention(site, positions, alpha, scale, gate, name, at)

    def compute(self, act, info):
        return -act


class Patch(Intervention):
    """Set the activation to a cached one: ``delta = cached − act`` ("set" / "replace").

    Give exactly one of

    - ``value``: a fixed activation, shaped like the site's part of one token (``[d_model]``,
      ``[n_heads_selected, d_head]``, ``[n_neurons_selected]``), the same for every input, or with a
      leading ``[n_inputs]`` dimension (one per input) — set at every edited token;
    - ``sequences``: one tensor per input with one row per token, as
      ``steerlens.capture(model, other_inputs, site, position="all")`` returns them (real tokens
      only; attention patterns ``[seq, n_heads_selected, seq]``). They are right-aligned with each
      row's last column on the first forward pass (prompt pass, or the teacher-forced pass when
      scoring), so patch between inputs of equal token length (clean / corrupted prompts). Tokens
      the source does not cover, and later decode steps, are left alone.

    The classic activation-patching experiment: capture ``sequences`` on the clean prompts, run
    the corrupted prompts with ``Patch(site, sequences=clean)`` (or the reverse).
    """

    pattern_editable = True

    def __init__(self, site: SiteLike, value: Optional[torch.Tensor] = None, alpha: float = 1.0, *,
                 sequences: Optional[Sequence[torch.Tensor]] = None, positions: str = "all",
                 at: Optional[Iterable[int]] = None, scale: Optional[torch.Tensor] = None, gate: Any = None,
                 name: Optional[str] = None) -> None:
        self._init_intervention(site, positions, alpha, scale, gate, name, at)
        if (value is None) == (sequences is None):
            raise EditError(f"{self.site}: give exactly one of value= (a fixed activation) or sequences= "
                            "(per-input cached activations)")
        self.value: Optional[torch.Tensor] = None
        self.sequences: Optional[list[torch.Tensor]] = None
        if value is not None:
            if self.site.is_pattern:
                raise EditError(f"{self.site}: a pattern's length varies with the input; patch it from "
                                "sequences= (another input's pattern), not from a fixed value")
            v = torch.as_tensor(value).detach()
            if not torch.isfinite(v).all():
                raise EditError(f"{self.site}: patched value contains NaN or inf")
            self.value = v
        else:
            seqs = [torch.as_tensor(x).detach() for x in sequences]  # type: ignore[union-attr]
            if not seqs:
                raise EditError(f"{self.site}: sequences= is empty")
            for x in seqs:
                if x.ndim < 1 or not torch.isfinite(x).all():
                    raise EditError(f"{self.site}: each sequence must be a finite [seq, ...] tensor")
            self.sequences = seqs
        if self.scale is not None and self.n_inputs is not None and self.scale.shape[0] != self.n_inputs:
            raise EditError(f"{self.site}: {self.n_inputs} cached activations but {self.scale.shape[0]} scales")
        self._cache: dict = {}

    @property
    def _base_ndim(self) -> int:
        return 2 if self.site.is_head else 1

    @property
    def n_inputs(self) -> Optional[int]:
        if self.sequences is not None:
            return len(self.sequences)
        if self.value is not None and self.value.ndim > self._base_ndim:
            return int(self.value.shape[0])
        return super().n_inputs

    def take(self, rows: torch.Tensor) -> "Patch":
        if not self.per_input:
            return self
        rows = rows.to(torch.long).cpu()
        scale = None if self.scale is None else self.scale[rows]
        if self.sequences is not None:
            return self.replace(sequences=[self.sequences[int(r)] for r in rows], scale=scale, _cache={})
        v = self.value[rows] if self.value.ndim > self._base_ndim else self.value  # type: ignore[index,union-attr]
        return self.replace(value=v, scale=scale, _cache={})

    def validate(self, model) -> "Patch":
        super().validate(model)
        if self.value is not None:
            want = site_shape(self.site, model)
            got = tuple(self.value.shape[-len(want):]) if self.value.ndim >= len(want) else tuple(self.value.shape)
            if got != want or self.value.ndim not in (len(want), len(want) + 1):
                raise EditError(f"{self.site}: value of shape {tuple(self.value.shape)}; expected {list(want)} "
                                f"or [n_inputs, *{list(want)}]")
        else:
            for x in self.sequences or ():
                if self.site.is_pattern:
                    ok = x.ndim == 3 and x.shape[1] == len(self.site.heads or ()) and x.shape[0] == x.shape[2]
                    want = "[seq, n_heads_selected, seq]"
                else:
                    shape = site_shape(self.site, model)
                    ok = tuple(x.shape[1:]) == shape
                    want = f"[seq, {', '.join(map(str, shape))}]"
                if not ok:
                    raise EditError(f"{self.site}: cached sequence of shape {tuple(x.shape)}; expected {want}")
        return self

    def _value(self, act: torch.Tensor) -> torch.Tensor:
        key = (act.device, act.dtype)
        v = self._cache.get(key)
        if v is None:
            v = self.value.to(device=act.device, dtype=act.dtype)  # type: ignore[union-attr]
            v = v.unsqueeze(1) if v.ndim > self._base_ndim else v.unsqueeze(0).unsqueeze(0)
            self._cache = {key: v}
        if v.shape[0] != 1 and v.shape[0] != act.shape[0]:
            raise EditError(f"{self.site}: per-input patch has {v.shape[0]} values but the batch has "
                            f"{act.shape[0]} inputs; pass the edits to steerlens.generate/capture or call .take(rows)")
        return v

    def compute(self, act, info):
        if self.value is not None:
            return self._value(act) - act
        seqs = self.sequences or []
        if len(seqs) != act.shape[0]:
            raise EditError(f"{self.site}: {len(seqs)} cached sequences but the batch has {act.shape[0]} inputs; "
                            "pass the edits to steerlens.generate/capture or call .take(rows)")
        d = torch.zeros_like(act)
        if info.step != 0:
            return d  # decode steps: the cached input has no such token
        t = act.shape[1]
        for i, src in enumerate(seqs):
            src = src.to(device=act.device, dtype=act.dtype)
            n = min(t, src.shape[0])
            if self.site.is_pattern:  # act [b, q, h, k]; src [q, h, k]: align queries and keys on the right
                L = act.shape[-1]
                nk = min(L, src.shape[-1])
                tgt = torch.zeros_like(act[i, t - n:])
                tgt[..., L - nk:] = src[src.shape[0] - n:, :, src.shape[-1] - nk:]
            else:
                tgt = src[src.shape[0] - n:]
            d[i, t - n:] = tgt - act[i, t - n:]
        return d


class MeanAblation(Patch):
    """Set the activation to a reference mean: ``delta = mean − act``.

    ``mean`` is shaped like one token's part of the site (``[d_model]``, ``[n_heads_selected,
    d_head]``, ``[n_neurons_selected]``); :func:`mean_activations` computes it over reference
    inputs (the mean over their real tokens). Not for attention patterns (their length varies):
    zero-ablate those."""

    def __init__(self, site: SiteLike, mean: torch.Tensor, alpha: float = 1.0, *, positions: str = "all",
                 at: Optional[Iterable[int]] = None, scale: Optional[torch.Tensor] = None, gate: Any = None,
                 name: Optional[str] = None) -> None:
        super().__init__(site, mean, alpha, positions=positions, at=at, scale=scale, gate=gate, name=name)

    @property
    def mean(self) -> torch.Tensor:
        return self.value  # type: ignore[return-value]


#: "set" / "replace" is a patch with a fixed or cached value.
SetActivation = Patch


class DirectionalAblation(Intervention):
    """Project a direction out of the activation: ``delta = − (act · r̂) r̂`` with
    ``r̂ = direction / |direction|`` (Arditi et al., 2024).

    Args:
        direction: ``[width]`` (the site's last dimension: ``d_model`` on the residual stream and
            block outputs, ``d_head`` on a head site — one direction for every selected head — or
            ``[n_heads_selected, d_head]``, one per head).
    """

    def __init__(self, site: SiteLike, direction: Float[torch.Tensor, "... d"], alpha: float = 1.0, *,
                 positions: str = "all", at: Optional[Iterable[int]] = None, scale: Optional[torch.Tensor] = None,
                 gate: Any = None, name: Optional[str] = None) -> None:
        self._init_intervention(site, positions, alpha, scale, gate, name, at)
        r = torch.as_tensor(direction).detach().float()
        if r.ndim not in (1, 2) or not torch.isfinite(r).all():
            raise EditError(f"{self.site}: direction must be a finite [d] (or [n_heads_selected, d_head]) tensor")
        norm = r.norm(dim=-1, keepdim=True)
        if (norm == 0).any():
            raise EditError(f"{self.site}: direction has zero norm")
        self.direction = r / norm
        self._cache: dict = {}

    def validate(self, model) -> "DirectionalAblation":
        super().validate(model)
        width = self.site.width(model)
        if self.direction.shape[-1] != width:
            raise EditError(f"{self.site}: direction width {self.direction.shape[-1]} but the site has width {width}")
        if self.direction.ndim == 2 and (not self.site.is_head or self.direction.shape[0] != len(self.site.heads or ())):
            raise EditError(f"{self.site}: a [n, d] direction needs a head site with n heads")
        return self

    def compute(self, act, info):
        key = (act.device, act.dtype)
        r = self._cache.get(key)
        if r is None:
            r = self.direction.to(device=act.device, dtype=act.dtype)
            self._cache = {key: r}
        return -(act * r).sum(-1, keepdim=True) * r


def directional_ablation(model, direction: torch.Tensor, layers: Optional[Iterable[int]] = None, *,
                         alpha: float = 1.0, positions: str = "all", at: Optional[Iterable[int]] = None,
                         gate: Any = None, scale: Optional[torch.Tensor] = None) -> list[DirectionalAblation]:
    """Edits that remove ``direction`` (``[d_model]``) from the residual stream.

    ``layers=None`` (every layer, as in Arditi et al. 2024): project it out of the embedding
    (``blocks.0.hook_resid_pre``) and of every layer's ``hook_attn_out`` and ``hook_mlp_out`` — all
    that is written to the stream — so no layer ever reads it. ``layers=[l, ...]``: project it out
    of the stream entering those layers (``blocks.l.hook_resid_pre``) only; later layers may write
    it back.
    """
    from ..models import as_model

    m = as_model(model)
    if layers is None:
        sites = [Site.resid(0, "pre")]
        for layer in range(m.n_layers):
            sites += [Site(layer, "attn_out"), Site(layer, "mlp_out")]
    else:
        ls = sorted(set(int(x) for x in layers))
        if not ls:
            raise EditError("directional_ablation: layers is empty (None = every layer)")
        sites = [Site.resid(layer, "pre") for layer in ls]
    edits = [DirectionalAblation(s, direction, alpha, positions=positions, at=at, gate=gate, scale=scale)
             for s in sites]
    for e in edits:
        e.validate(m)
    return edits


@torch.no_grad()
def mean_activations(model, inputs, sites: SiteLike | Sequence[SiteLike], *, position: str = "mean",
                     batch_size: int = 16, progress: bool = False) -> dict[Site, torch.Tensor]:
    """The reference mean of a :class:`MeanAblation`: for each site, the mean over ``inputs`` of
    each input's activation at ``position`` (``"mean"``: the mean over its real tokens; ``"last"``:
    its last prompt token; ``"response_mean"`` for pairs). Keyed like :func:`steerlens.capture`."""
    from .activations import SiteDict, capture

    acts = capture(model, inputs, sites, position, batch_size=batch_size, progress=progress)  # type: ignore[arg-type]
    return SiteDict({s: t.float().mean(0) for s, t in acts.items()}, aliases=getattr(acts, "_aliases", {}))


INTERVENTIONS: dict[str, type[Intervention]] = {
    "scale": Scale, "zero": ZeroAblation, "mean": MeanAblation, "patch": Patch, "set": Patch,
    "directional": DirectionalAblation,
}

__all__ = ["Intervention", "Scale", "ZeroAblation", "MeanAblation", "Patch", "SetActivation", "DirectionalAblation",
           "directional_ablation", "mean_activations", "site_shape", "INTERVENTIONS"]
