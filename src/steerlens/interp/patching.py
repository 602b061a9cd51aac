"""Head effect maps: what ablating each attention head does to a behaviour metric.

For every head ``(l, h)`` the effect is ``Δ = metric(ablated) − metric(clean)`` per example, the
head's output (``blocks.l.attn.hook_z[h]``) ablated at every token:

- ``mode="mean"`` (default): set to its mean over the metric's items (the mean over each item's
  real tokens, averaged over the items); ``mode="zero"``: set to zero.

Two ways to get it:

- :func:`exact_patching`: one forward pass per head with a
  :class:`~steerlens.hooks.interventions.MeanAblation` (or zero-ablation) edit — exact, costs
  ``n_heads`` passes;
- :func:`attribution_patching` (the fast path; Nanda 2023, Syed et al. 2023): the first-order
  estimate ``Δ ≈ Σ_t (ā − a_t) · ∂metric/∂a_t`` for *all* heads from one forward and one backward
  pass. The runners of steerlens run under ``torch.no_grad``; this one enables gradients for
  the activations only (model parameters are frozen for the pass and restored after).

Both return an :class:`EffectMap` (per-example effects ``[n, layers, heads]``, with bootstrap
intervals per head). :func:`ablate_heads` ablates a set of heads together (REAL's top-H, ITI's,
random sets) and returns the per-example metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hooks import Site
from ..hooks.batching import Batch, collate, tokenize_items
from ..hooks.edits import Edit, validate_edits
from ..hooks.generation import _logits_at
from ..hooks.interventions import MeanAblation, ZeroAblation
from ..hooks.runtime import attach, batch_run
from ..models import as_model
from .metrics import BehaviourMetric

MODES = ("mean", "zero")


# ------------------------------------------------------------------------------------------------
# scoring a metric, batched by example
# ------------------------------------------------------------------------------------------------

def _example_batches(m, metric: BehaviourMetric, batch_size: int,
                     chat: Optional[bool] = None) -> Iterator[tuple[list[int], list[int], Batch]]:
    """Left-padded batches of about ``batch_size`` items that never split an example's items:
    ``(examples, item indices, batch)`` with ``batch.rows`` = the item indices."""
    toks = tokenize_items(m, metric.items, chat=metric.meta.get("chat") if chat is None else chat)
    longest = [max(len(toks[j][0]) for j in range(a, b)) for a, b in metric.spans]
    order = sorted(range(len(metric)), key=lambda i: -longest[i])
    group: list[int] = []
    rows = 0
    for i in order + [None]:  # type: ignore[list-item]
        k = 0 if i is None else metric.spans[i][1] - metric.spans[i][0]
        if group and (i is None or rows + k > batch_size):
            items = [j for e in group for j in range(*metric.spans[e])]
            yield group, items, collate([toks[j] for j in items], items, m.pad_token_id).to(m.device)
            group, rows = [], 0
        if i is not None:
            group.append(i)
            rows += k


def _item_logliks(m, batch: Batch) -> torch.Tensor:
    """``[b]`` sum of the response tokens' log-probabilities of each row (differentiable)."""
    mask = batch.response_mask[:, 1:]
    tgt = batch.input_ids[:, 1:][mask]
    logits = _logits_at(m, batch, mask)
    lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    row_of = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
    return torch.zeros(mask.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, row_of, lp)


def _example_values(metric: BehaviourMetric, examples: list[int], ll: torch.Tensor) -> torch.Tensor:
    out, k = [], 0
    for e in examples:  # items of an example are consecutive rows of the batch, in order
        a, b = metric.spans[e]
        out.append(metric.value(e, ll[k:k + b - a]))
        k += b - a
    return torch.stack(out)


@torch.no_grad()
def metric_values(model, metric: BehaviourMetric, edits: Optional[Sequence[Edit]] = None, *,
                  batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """``[n_examples]`` metric values under ``edits`` (global edits; per-input ones would index items)."""
    m = as_model(model)
    edit_list = validate_edits(m, edits)
    out = torch.full((len(metric),), float("nan"))
    bar = tqdm(total=len(metric), desc=metric.name, unit="example", disable=not progress, leave=False)
    for examples, _, batch in _example_batches(m, metric, batch_size):
        with batch_run(m, edit_list, batch):
            ll = _item_logliks(m, batch)
        out[examples] = _example_values(metric, examples, ll).float().cpu()
        bar.update(len(examples))
    bar.close()
    if not torch.isfinite(out).all():
        raise ValueError(f"{metric.name}: non-finite values (the edits may have broken the model)")
    return out


@torch.no_grad()
def head_means(model, metric: BehaviourMetric, layers: Optional[Sequence[int]] = None, *,
               batch_size: int = 32) -> torch.Tensor:
    """``[layers, heads, d_head]`` reference mean of every head's output over the metric's items
    (the mean over each item's real tokens, averaged over items)."""
    from ..hooks.interventions import mean_activations

    m = as_model(model)
    layers = list(range(m.n_layers)) if layers is None else list(layers)
    sites = [Site.head(l, range(m.n_heads)) for l in layers]
    means = mean_activations(m, metric.items, sites, position="mean", batch_size=batch_size)
    return torch.stack([means[s] for s in sites])


def _ablation(site: Site, mode: str, mean: Optional[torch.Tensor]) -> Edit:
    if mode == "zero":
        return ZeroAblation(site)
    if mean is None:
        raise ValueError("mean-ablation needs the reference means (head_means)")
    return MeanAblation(site, mean)


def ablation_edits(model, heads: Sequence[tuple[int, int]], mode: str = "mean",
                   means: Optional[torch.Tensor] = None, layers: Optional[Sequence[int]] = None) -> list[Edit]:
    """One edit per layer ablating ``heads`` (``(layer, head)`` pairs) together; ``means``
    ``[layers, heads, d_head]`` as :func:`head_means` returns it (rows = ``layers``, default all)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    m = as_model(model)
    row = {l: i for i, l in enumerate(range(m.n_layers) if layers is None else layers)}
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(int(l), []).append(int(h))
    out = []
    for l, hs in sorted(by_layer.items()):
        site = Site.head(l, hs)
        mean = None if means is None else means[row[l]][list(site.heads)]  # type: ignore[index]
        out.append(_ablation(site, mode, mean))
    return out


def ablate_heads(model, metric: BehaviourMetric, heads: Sequence[tuple[int, int]], *, mode: str = "mean",
                 means: Optional[torch.Tensor] = None, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """``[n_examples]`` metric values with ``heads`` ablated together (at every token)."""
    return metric_values(model, metric, ablation_edits(model, heads, mode, means), batch_size=batch_size,
                         progress=progress)


# ------------------------------------------------------------------------------------------------
# effect maps
# ------------------------------------------------------------------------------------------------

@dataclass
class EffectMap:
    """Per-example effects of ablating each head: ``effects[i, l, h] = metric_i(ablated) − metric_i``.

    Attributes:
        effects: ``[n_examples, n_layers, n_heads]`` (NaN for heads that were not measured).
        base: ``[n_examples]`` the clean metric.
        method: ``"attribution"`` or ``"exact"``; mode: ``"mean"`` or ``"zero"``.
        metric: the metric's name; ids: the examples' ids.
        seconds: wall time of the computation.
    """

    effects: torch.Tensor
    base: torch.Tensor
    method: str
    mode: str
    metric: str
    ids: list[str]
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.effects.shape[0])

    def mean(self) -> torch.Tensor:
        """``[layers, heads]`` mean effect over the examples."""
        return self.effects.mean(0)

    def ci(self, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Percentile bootstrap interval of every head's mean effect (examples resampled jointly)."""
        x = self.effects.double().numpy()
        n = x.shape[0]
        if n < 2:
            m = self.mean()
            return m.clone(), m.clone()
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        boots = np.stack([x[i].mean(0) for i in idx])
        lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
        return torch.from_numpy(lo).float(), torch.from_numpy(hi).float()

    def subset(self, idx: Sequence[int]) -> "EffectMap":
        idx = list(idx)
        return EffectMap(self.effects[idx], self.base[idx], self.method, self.mode, self.metric,
                         [self.ids[i] for i in idx], self.seconds, dict(self.info))

    def heads(self) -> list[tuple[int, int]]:
        """The measured heads (not NaN), layer-major."""
        ok = ~torch.isnan(self.effects).any(0)
        return [(int(l), int(h)) for l, h in ok.nonzero().tolist()]

    def to_json(self, level: float = 0.95) -> dict:
        mean = self.mean()
        lo, hi = self.ci(level)
        rows = [{"module": str(Site.head(l, [h])), "layer": l, "head": h, "effect": float(mean[l, h]),
                 "ci_low": float(lo[l, h]), "ci_high": float(hi[l, h])} for l, h in self.heads()]
        rows.sort(key=lambda r: -abs(r["effect"]))
        return {"metric": self.metric, "method": self.method, "mode": self.mode, "n": self.n, "ci_level": level,
                "base_mean": float(self.base.mean()), "seconds": self.seconds, "info": self.info,
                "effect": "metric(head ablated) - metric(clean), mean over examples",
                "grid": [[None if v != v else float(v) for v in row] for row in mean.tolist()],
                "heads": rows, "ids": list(self.ids)}


def attribution_patching(model, metric: BehaviourMetric, *, mode: str = "mean", means: Optional[torch.Tensor] = None,
                         batch_size: int = 32, progress: bool = False) -> tuple[EffectMap, torch.Tensor]:
    """Linear estimate of every head's ablation effect from one forward + backward pass per batch.

    ``effect_i(l, h) ≈ Σ_t (ā_{l,h} − a_{t,l,h}) · ∂metric_i/∂a_{t,l,h}`` (``ā = 0`` for
    ``mode="zero"``), summed over every token of example ``i``'s items. ``means`` (``[layers,
    heads, d_head]``) defaults to the mean computed in the same pass (what :func:`head_means`
    returns). Returns the map and the means (for exact checks with the same reference)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    m = as_model(model)
    t0 = time.perf_counter()
    L, H, d = m.n_layers, m.n_heads, m.d_head
    n_items = len(metric.items)
    G = torch.zeros(n_items, L, H, d)
    S = torch.zeros(n_items, L, H)
    A = torch.zeros(n_items, L, H, d)
    base = torch.full((len(metric),), float("nan"))
    params = list(m.hf_model.parameters())
    flags = [p.requires_grad for p in params]
    bar = tqdm(total=len(metric), desc=f"attribution ({metric.name})", unit="example", disable=not progress,
               leave=False)
    try:
        for p in params:
            p.requires_grad_(False)
        for examples, items, batch in _example_batches(m, metric, batch_size):
            zs: dict[int, torch.Tensor] = {}

            def keep(layer: int):
                def fn(act: torch.Tensor, hook=None) -> torch.Tensor:
                    if not act.requires_grad:
                        act = act.detach().requires_grad_(True)
                    zs[layer] = act
                    return act
                return fn

            with torch.enable_grad():
                with attach(m, [(f"blocks.{l}.attn.hook_z", keep(l)) for l in range(L)]):
                    ll = _item_logliks(m, batch)
                vals = _example_values(metric, examples, ll)
                grads = torch.autograd.grad(vals.sum(), [zs[l] for l in range(L)])
            mk = batch.attention_mask.to(torch.float32)[:, :, None, None]
            cnt = mk.sum(1)
            rows = torch.tensor(items)
            for l in range(L):
                a, g = zs[l].detach().float(), grads[l].float()
                G[rows, l] = (g * mk).sum(1).cpu()
                S[rows, l] = (a * g * mk).sum((1, 3)).cpu()
                A[rows, l] = ((a * mk).sum(1) / cnt).cpu()
            base[examples] = vals.detach().float().cpu()
            bar.update(len(examples))
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        bar.close()
    if means is None:
        means = A.mean(0)
    eff_items = (G * means[None]).sum(-1) - S if mode == "mean" else -S
    effects = torch.stack([eff_items[a:b].sum(0) for a, b in metric.spans])
    em = EffectMap(effects, base, "attribution", mode, metric.name, list(metric.ids), time.perf_counter() - t0,
                   {"n_items": n_items, "batch_size": batch_size})
    return em, means


def exact_patching(model, metric: BehaviourMetric, heads: Optional[Sequence[tuple[int, int]]] = None, *,
                   mode: str = "mean", means: Optional[torch.Tensor] = None, base: Optional[torch.Tensor] = None,
                   batch_size: int = 32, progress: bool = False) -> EffectMap:
    """The exact effect of ablating each of ``heads`` (default: every head) alone: one forward pass
    per head. ``means``: ``[layers, heads, d_head]`` (default: :func:`head_means` of the metric's items)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    m = as_model(model)
    t0 = time.perf_counter()
    heads = [(l, h) for l in range(m.n_layers) for h in range(m.n_heads)] if heads is None else list(heads)
    if mode == "mean" and means is None:
        means = head_means(m, metric, batch_size=batch_size)
    if base is None:
        base = metric_values(m, metric, batch_size=batch_size)
    eff = torch.full((len(metric), m.n_layers, m.n_heads), float("nan"))
    for l, h in tqdm(heads, desc="exact patching", unit="head", disable=not progress, leave=False):
        e = _ablation(Site.head(l, [h]), mode, None if means is None else means[l][[h]])
        eff[:, l, h] = metric_values(m, metric, [e], batch_size=batch_size) - base
    return EffectMap(eff, base.clone(), "exact", mode, metric.name, list(metric.ids), time.perf_counter() - t0,
                     {"n_items": len(metric.items), "n_heads": len(heads), "batch_size": batch_size})


__all__ = ["EffectMap", "attribution_patching", "exact_patching", "metric_values", "head_means", "ablate_heads",
           "ablation_edits", "MODES"]
