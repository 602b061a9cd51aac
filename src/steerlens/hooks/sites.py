"""Hook sites: where activations are read and edited.

A :class:`Site` names one TransformerLens hook point and, for attention heads and MLP neurons,
which heads or neurons (shapes as the bridge gives them on the default model, SmolLM2-135M: 9
query heads, 3 KV heads, ``d_head`` 64, ``d_mlp`` 1536):

===========================================  ===========  ===================================  =========
hook name                                    kind         activation                           index
===========================================  ===========  ===================================  =========
``blocks.L.hook_resid_pre|mid|post``         resid_*      ``[b, pos, d_model]``                none
``blocks.L.hook_attn_out``                   attn_out     ``[b, pos, d_model]``                none
``blocks.L.hook_mlp_out``                    mlp_out      ``[b, pos, d_model]``                none
``blocks.L.attn.hook_z``                     z            ``[b, pos, n_heads, d_head]``        query head
``blocks.L.attn.hook_q``                     q            ``[b, pos, n_heads, d_head]``        query head
``blocks.L.attn.hook_k`` / ``hook_v``        k / v        ``[b, pos, n_kv_heads, d_head]``     KV head
``blocks.L.attn.hook_pattern``               pattern      ``[b, n_heads, q_pos, k_pos]``       query head
``blocks.L.mlp.hook_pre`` / ``hook_post``    mlp_pre/post ``[b, pos, d_mlp]``                  neuron
===========================================  ===========  ===================================  =========

- Head sites need head indices (``blocks.3.attn.hook_q[0,4]``; with a model, a bare name means
  every head). ``hook_q`` is read before the rotary embedding.
- **Grouped-query attention**: ``hook_k`` and ``hook_v`` carry one vector per *KV head*. KV head
  ``j`` is shared by the query heads ``j·g … (j+1)·g − 1`` with ``g = n_heads / n_kv_heads``
  (the Hugging Face ``repeat_kv`` layout; checked on the bridge: on SmolLM2, KV head 0 serves
  query heads 0–2, 1 serves 3–5, 2 serves 6–8). Editing KV head ``j`` therefore changes what all
  ``g`` query heads of its group read; :func:`kv_head_of` and :func:`query_heads_of` convert.
- MLP neuron sites take an optional neuron index (``blocks.3.mlp.hook_post[17,905]``; none = the
  whole layer). ``hook_pre`` is the gate projection before the activation function, ``hook_post``
  the input of the down projection (activation(gate) · up) on gated MLPs.
- ``hook_pattern`` (attention probabilities after the softmax) is read as ``[b, pos, heads,
  k_pos]`` (query position second, like every other site; the hook layer transposes) and can
  be edited only by ablation (:class:`~steerlens.hooks.interventions.ZeroAblation`, or
  :class:`~steerlens.hooks.interventions.Patch` from another input's pattern).
- On the TransformerLens bridge ``hook_resid_mid`` feeds the MLP branch only: an edit there
  reaches the MLP input but not the residual stream that skips it (measured on both models);
  edit ``hook_attn_out`` to change what the attention block writes.

Any other hook name is refused with a :class:`SiteError` listing these.

Sites are hashable and print as their canonical string, e.g. ``blocks.3.hook_resid_post`` or
``blocks.3.attn.hook_z[0,4]``; :func:`parse_site` reads that form back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

RESID_KINDS = ("resid_pre", "resid_mid", "resid_post")
HEAD_KIND = "z"
#: Residual-width block outputs (``[b, pos, d_model]``, no index).
OUTPUT_KINDS = ("attn_out", "mlp_out")
#: Per-head sites (index = query head; for ``k``/``v`` = KV head).
HEAD_KINDS = ("z", "q", "k", "v", "pattern")
KV_KINDS = ("k", "v")
#: Per-neuron MLP sites (optional neuron index).
NEURON_KINDS = ("mlp_pre", "mlp_post")
PATTERN_KIND = "pattern"
ALL_KINDS = RESID_KINDS + OUTPUT_KINDS + HEAD_KINDS + NEURON_KINDS

#: kind -> hook name suffix after ``blocks.L.``
HOOK_SUFFIX = {
    "resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
    "z": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v", "pattern": "attn.hook_pattern",
    "mlp_pre": "mlp.hook_pre", "mlp_post": "mlp.hook_post",
}
_KIND_OF_SUFFIX = {v: k for k, v in HOOK_SUFFIX.items()}
SUPPORTED_HOOKS = tuple(f"blocks.L.{v}" for v in HOOK_SUFFIX.values())


def n_kv_heads(model) -> int:
    """Number of key/value heads (``n_heads`` without grouped-query attention)."""
    cfg = model.cfg
    n = getattr(cfg, "n_key_value_heads", None)
    if n is None:
        hf = getattr(getattr(model, "hf_model", None), "config", None)
        n = getattr(hf, "num_key_value_heads", None)
    return int(n or model.n_heads)


def d_mlp(model) -> int:
    """Width of the MLP hidden layer (neurons per layer)."""
    return int(model.cfg.d_mlp)


def kv_head_of(model, query_head: int) -> int:
    """The KV head that query head ``query_head`` reads (grouped-query attention)."""
    return int(query_head) // (model.n_heads // n_kv_heads(model))


def query_heads_of(model, kv_head: int) -> list[int]:
    """The query heads that share KV head ``kv_head``."""
    g = model.n_heads // n_kv_heads(model)
    return list(range(int(kv_head) * g, (int(kv_head) + 1) * g))


class SiteError(ValueError):
    """A site that does not exist on the model (bad layer, head, or hook name)."""


@dataclass(frozen=True, order=True)
class Site:
    """One hook point, optionally restricted to some attention heads or MLP neurons.

    Attributes:
        layer: block index.
        kind: one of :data:`ALL_KINDS` (see the module docstring): ``"resid_pre" | "resid_mid" |
            "resid_post" | "attn_out" | "mlp_out"``, head kinds ``"z" | "q" | "k" | "v" |
            "pattern"``, neuron kinds ``"mlp_pre" | "mlp_post"``.
        heads: the selected head (or, for neuron kinds, neuron) indices, sorted and unique;
            ``None`` for unindexed sites (and for a whole MLP layer). :attr:`index` is an alias.
    """

    layer: int
    kind: str = "resid_post"
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ALL_KINDS:
            raise SiteError(f"unknown site kind {self.kind!r}; use one of {ALL_KINDS}")
        if self.kind in HEAD_KINDS and (self.heads is None or len(self.heads) == 0):
            raise SiteError("a head site needs at least one head index")
        if self.kind in NEURON_KINDS and self.heads is not None and len(self.heads) == 0:
            raise SiteError("a neuron site needs at least one neuron index (or none for the whole layer)")
        if self.kind in HEAD_KINDS + NEURON_KINDS:
            if self.heads is not None:
                hs = tuple(sorted(set(int(h) for h in self.heads)))
                if len(hs) != len(self.heads) or hs != tuple(self.heads):
                    object.__setattr__(self, "heads", hs)
        elif self.heads is not None:
            raise SiteError(f"site {self.kind} takes no head or neuron indices")

    @classmethod
    def resid(cls, layer: int, where: str = "post") -> "Site":
        where = where if where.startswith("resid_") else f"resid_{where}"
        return cls(int(layer), where)

    @classmethod
    def head(cls, layer: int, heads: int | Iterable[int]) -> "Site":
        hs = (heads,) if isinstance(heads, int) else tuple(heads)
        return cls(int(layer), HEAD_KIND, hs)

    @classmethod
    def neurons(cls, layer: int, neurons: int | Iterable[int] | None = None, where: str = "post") -> "Site":
        """An MLP neuron site (``where="pre" | "post"``); ``neurons=None`` = the whole layer."""
        ns = None if neurons is None else ((neurons,) if isinstance(neurons, int) else tuple(neurons))
        return cls(int(layer), where if where.startswith("mlp_") else f"mlp_{where}", ns)

    @property
    def is_head(self) -> bool:
        """A per-head site (``z``, ``q``, ``k``, ``v``, ``pattern``)."""
        return self.kind in HEAD_KINDS

    @property
    def is_neuron(self) -> bool:
        return self.kind in NEURON_KINDS

    @property
    def is_pattern(self) -> bool:
        return self.kind == PATTERN_KIND

    @property
    def index(self) -> tuple[int, ...] | None:
        """The selected heads or neurons (``None``: unindexed / whole layer)."""
        return self.heads

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.{HOOK_SUFFIX[self.kind]}"

    def __str__(self) -> str:
        if self.heads is not None:
            return f"{self.hook_name}[{','.join(map(str, self.heads))}]"
        return self.hook_name

    def width(self, model) -> int:
        """Size of the last dimension of the site's part of the activation (``d_head`` for heads,
        the number of selected neurons — or ``d_mlp`` — for neuron sites, else ``d_model``).
        Attention patterns have no fixed width (it is the key length)."""
        if self.is_pattern:
            raise SiteError(f"{self}: an attention pattern has no fixed width (its last axis is the key position)")
        if self.is_head:
            return model.d_head
        if self.is_neuron:
            return len(self.heads) if self.heads is not None else d_mlp(model)
        return model.d_model

    def index_limit(self, model) -> int:
        """How many heads / neurons the hook has (KV heads for ``k``/``v``)."""
        if self.kind in KV_KINDS:
            return n_kv_heads(model)
        if self.is_head:
            return model.n_heads
        if self.is_neuron:
            return d_mlp(model)
        return 0

    def validate(self, model) -> "Site":
        """Raise :class:`SiteError` unless the site exists on ``model``."""
        if not 0 <= self.layer < model.n_layers:
            raise SiteError(f"layer {self.layer} out of range: the model has layers 0..{model.n_layers - 1}")
        if self.heads is not None:
            n = self.index_limit(model)
            bad = [h for h in self.heads if not 0 <= h < n]
            if bad:
                what = ("KV head" if self.kind in KV_KINDS else "head") if self.is_head else "neuron"
                extra = (f" ({model.n_heads} query heads share {n} KV heads; see steerlens.hooks.sites)"
                         if self.kind in KV_KINDS and n != model.n_heads else "")
                raise SiteError(f"{what}(s) {bad} out of range at layer {self.layer}: the model has "
                                f"{what}s 0..{n - 1}{extra}")
        if self.hook_name not in model.hook_dict:
            raise SiteError(f"hook {self.hook_name!r} does not exist on this model")
        return self


_SITE_RE = re.compile(r"^blocks\.(?P<layer>-?\d+)\.(?P<name>[\w.]+?)(?:\[(?P<heads>[\d,\s]*)\])?$")


def _unsupported(spec) -> SiteError:
    return SiteError(
        f"cannot read site {spec!r}: supported hooks are " + ", ".join(SUPPORTED_HOOKS)
        + " (L = layer; head sites take optional head indices, e.g. 'blocks.3.attn.hook_z[0,5]' — none = all "
        "heads, given a model; KV heads for hook_k/hook_v; MLP sites take optional neuron indices, e.g. "
        "'blocks.3.mlp.hook_post[17,905]')")

SiteLike = Union[Site, str]


def parse_site(spec: SiteLike, model=None) -> Site:
    """Read a site from its string form; with ``model``, also validate it (and expand a
    bare ``blocks.L.attn.hook_z`` to all heads)."""
    if isinstance(spec, Site):
        site = spec
    else:
        m = _SITE_RE.match(str(spec).strip())
        kind = _KIND_OF_SUFFIX.get(m.group("name")) if m is not None else None
        if kind is None:
            raise _unsupported(spec)
        layer = int(m.group("layer"))
        heads_s = m.group("heads")
        idx = None if heads_s is None or not heads_s.strip() else [int(h) for h in heads_s.split(",") if h.strip()]
        if kind in HEAD_KINDS and idx is None:
            if model is None:
                raise SiteError(f"{spec!r}: give head indices, or a model to expand to all heads")
            idx = list(range(n_kv_heads(model) if kind in KV_KINDS else model.n_heads))
        if idx is not None and kind not in HEAD_KINDS + NEURON_KINDS:
            raise SiteError(f"{spec!r}: {HOOK_SUFFIX[kind]} takes no head or neuron indices")
        site = Site(layer, kind, None if idx is None else tuple(idx))
    if model is not None:
        site.validate(model)
    return site


def parse_sites(specs: SiteLike | Sequence[SiteLike], model=None) -> list[Site]:
    if isinstance(specs, (str, Site)):
        specs = [specs]
    sites = [parse_site(s, model) for s in specs]
    if not sites:
        raise SiteError("no sites given")
    if len(set(sites)) != len(sites):
        raise SiteError(f"duplicate sites: {[str(s) for s in sites]}")
    return sites


def all_head_sites(model, layers: Iterable[int] | None = None) -> list[Site]:
    """One site per layer covering every head (what REAL and ITI read)."""
    layers = range(model.n_layers) if layers is None else layers
    return [Site.head(layer, range(model.n_heads)) for layer in layers]
