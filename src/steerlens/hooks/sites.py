"""Hook sites: where activations are read and edited.

A :class:`Site` names one TransformerLens hook point and, for attention heads, which heads:

- residual stream: ``blocks.{l}.hook_resid_pre``, ``hook_resid_mid``, ``hook_resid_post``
  (activation ``[batch, pos, d_model]``);
- attention heads: ``blocks.{l}.attn.hook_z`` with head indices
  (activation ``[batch, pos, n_heads, d_head]``, one vector per query head).

Sites are hashable and print as their canonical string, e.g. ``blocks.3.hook_resid_post`` or
``blocks.3.attn.hook_z[0,4]``; :func:`parse_site` reads that form back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

RESID_KINDS = ("resid_pre", "resid_mid", "resid_post")
HEAD_KIND = "z"


class SiteError(ValueError):
    """A site that does not exist on the model (bad layer, head, or hook name)."""


@dataclass(frozen=True, order=True)
class Site:
    """One hook point, optionally restricted to some attention heads.

    Attributes:
        layer: block index.
        kind: ``"resid_pre" | "resid_mid" | "resid_post"`` or ``"z"`` (attention head outputs).
        heads: for ``"z"``: the selected head indices (sorted, unique); ``None`` for residuals.
    """

    layer: int
    kind: str = "resid_post"
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in RESID_KINDS + (HEAD_KIND,):
            raise SiteError(f"unknown site kind {self.kind!r}; use one of {RESID_KINDS + (HEAD_KIND,)}")
        if self.kind == HEAD_KIND:
            if self.heads is None or len(self.heads) == 0:
                raise SiteError("a head site needs at least one head index")
            hs = tuple(sorted(set(int(h) for h in self.heads)))
            if len(hs) != len(self.heads) or hs != tuple(self.heads):
                object.__setattr__(self, "heads", hs)
        elif self.heads is not None:
            raise SiteError(f"residual site {self.kind} takes no head indices")

    @classmethod
    def resid(cls, layer: int, where: str = "post") -> "Site":
        where = where if where.startswith("resid_") else f"resid_{where}"
        return cls(int(layer), where)

    @classmethod
    def head(cls, layer: int, heads: int | Iterable[int]) -> "Site":
        hs = (heads,) if isinstance(heads, int) else tuple(heads)
        return cls(int(layer), HEAD_KIND, hs)

    @property
    def is_head(self) -> bool:
        return self.kind == HEAD_KIND

    @property
    def hook_name(self) -> str:
        if self.is_head:
            return f"blocks.{self.layer}.attn.hook_z"
        return f"blocks.{self.layer}.hook_{self.kind}"

    def __str__(self) -> str:
        if self.is_head:
            return f"{self.hook_name}[{','.join(map(str, self.heads or ()))}]"
        return self.hook_name

    def width(self, model) -> int:
        """Size of the last dimension read at this site."""
        return model.d_head if self.is_head else model.d_model

    def validate(self, model) -> "Site":
        """Raise :class:`SiteError` unless the site exists on ``model``."""
        if not 0 <= self.layer < model.n_layers:
            raise SiteError(f"layer {self.layer} out of range: the model has layers 0..{model.n_layers - 1}")
        if self.is_head:
            bad = [h for h in self.heads or () if not 0 <= h < model.n_heads]
            if bad:
                raise SiteError(
                    f"head(s) {bad} out of range at layer {self.layer}: the model has heads 0..{model.n_heads - 1}"
                )
        if self.hook_name not in model.bridge.hook_dict:
            raise SiteError(f"hook {self.hook_name!r} does not exist on this model")
        return self


_SITE_RE = re.compile(
    r"^blocks\.(?P<layer>-?\d+)\.(?:hook_(?P<resid>resid_pre|resid_mid|resid_post)|attn\.hook_z(?:\[(?P<heads>[\d,\s]*)\])?)$"
)

SiteLike = Union[Site, str]


def parse_site(spec: SiteLike, model=None) -> Site:
    """Read a site from its string form; with ``model``, also validate it (and expand a
    bare ``blocks.L.attn.hook_z`` to all heads)."""
    if isinstance(spec, Site):
        site = spec
    else:
        m = _SITE_RE.match(str(spec).strip())
        if m is None:
            raise SiteError(
                f"cannot read site {spec!r}: use 'blocks.L.hook_resid_pre|mid|post' or "
                "'blocks.L.attn.hook_z[h1,h2]' (head indices optional: all heads)"
            )
        layer = int(m.group("layer"))
        if m.group("resid"):
            site = Site(layer, m.group("resid"))
        else:
            heads_s = m.group("heads")
            if heads_s is None or not heads_s.strip():
                if model is None:
                    raise SiteError(f"{spec!r}: give head indices, or a model to expand to all heads")
                site = Site.head(layer, range(model.n_heads))
            else:
                site = Site.head(layer, [int(h) for h in heads_s.split(",") if h.strip()])
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
