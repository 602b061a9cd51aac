"""Where to steer: the modules a selector ranks and the :class:`Selection` it returns.

A *module* is the atomic unit of a selection: one residual layer (an unindexed site such as
``blocks.10.hook_resid_post``) or one attention head's ``hook_z`` output (a site with one head).
Head modules of one layer are merged into one site when edits are built (:func:`group_modules`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from jaxtyping import Float

from ..hooks import Site
from ..hooks.sites import parse_site
from ..models import as_model
from .errors import PipelineError

# ----------------------------------------------------------------------------------------
# Modules: the atomic units a selector ranks
# ----------------------------------------------------------------------------------------

def head_module(layer: int, head: int) -> Site:
    """The site of one attention head's output (``blocks.L.attn.hook_z[h]``)."""
    return Site.head(layer, [head])


def resid_module(layer: int, where: str = "post") -> Site:
    """The site of one residual-stream layer (``blocks.L.hook_resid_post`` by default)."""
    return Site.resid(layer, where)


def all_head_modules(model, layers: Optional[Sequence[int]] = None) -> list[Site]:
    """Every single-head module, layer-major (``L0H0, L0H1, ...``)."""
    m = as_model(model)
    layers = range(m.n_layers) if layers is None else layers
    return [head_module(l, h) for l in layers for h in range(m.n_heads)]


def check_module(site: Site) -> Site:
    if site.heads is not None and len(site.heads) != 1:
        what = "heads" if site.is_head else "neurons"
        raise PipelineError(f"a module is one head (or neuron) or one unindexed site such as a residual layer; "
                            f"{site} selects {len(site.heads)} {what}")
    return site


def capture_site_for(module: Site, n_heads: int) -> Site:
    """The site captured to read ``module``: a whole layer's heads for a ``hook_z`` head module
    (other modules, e.g. one KV head or one neuron, are read as they are)."""
    return Site.head(module.layer, range(n_heads)) if module.kind == "z" else module


def group_modules(modules: Sequence[Site]) -> list[tuple[Site, list[int]]]:
    """Merge single-head (or single-neuron) modules of the same layer and hook into one site.

    Returns ``[(site, indices into modules)]`` in layer order; a head site's heads are in the
    same order as its indices (sorted head index), unindexed modules stay one site each.
    """
    groups: dict[tuple[int, str], list[int]] = {}
    for i, mod in enumerate(modules):
        groups.setdefault((mod.layer, mod.kind), []).append(i)
    out: list[tuple[Site, list[int]]] = []
    for (layer, kind), idx in sorted(groups.items()):
        if all(modules[i].heads is not None for i in idx):
            idx = sorted(idx, key=lambda i: modules[i].heads[0])  # type: ignore[index]
            heads = [modules[i].heads[0] for i in idx]  # type: ignore[index]
            if len(set(heads)) != len(heads):
                raise PipelineError(f"head selected twice at layer {layer}: {heads}")
            out.append((Site(layer, kind, tuple(heads)), idx))
        else:
            if len(idx) != 1:
                raise PipelineError(f"residual module {modules[idx[0]]} selected twice")
            out.append((modules[idx[0]], idx))
    return out


# ----------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------

@dataclass
class Selection:
    """Where to steer: chosen modules and their weights, plus every candidate's score.

    Attributes:
        modules: the chosen modules, each one residual layer or one head (``Site`` with one head).
        weights: ``[n_modules]`` per-module weight (ITI: 1; REAL: AUC / max AUC).
        scores: ``{str(module): score}`` for every candidate that was scored (diagnostics;
            may be empty for a fixed selection).
        score_name: what the scores are (e.g. ``"heldout_probe_accuracy"``, ``"auc"``).
        weighting: how weights follow from scores: ``"ones"`` (ITI), ``"relative"`` (score / max
            selected score, REAL) or ``"fixed"`` (given); :meth:`top` re-applies it.
    """

    modules: list[Site]
    weights: Float[torch.Tensor, "m"]
    scores: dict[str, float] = field(default_factory=dict)
    score_name: str = ""
    weighting: str = "fixed"

    def __post_init__(self) -> None:
        self.modules = [check_module(parse_site(m)) for m in self.modules]
        if not self.modules:
            raise PipelineError("a selection needs at least one module")
        if len(set(self.modules)) != len(self.modules):
            raise PipelineError(f"duplicate modules in selection: {[str(m) for m in self.modules]}")
        self.weights = torch.as_tensor(self.weights, dtype=torch.float32).detach().flatten()
        if self.weights.shape[0] != len(self.modules):
            raise PipelineError(f"{len(self.modules)} modules but {self.weights.shape[0]} weights")
        if not torch.isfinite(self.weights).all():
            raise PipelineError("selection weights contain NaN or inf")

    def __len__(self) -> int:
        return len(self.modules)

    def grouped(self) -> list[tuple[Site, list[int]]]:
        """``[(site, module indices)]``: heads of one layer merged into one site (see :func:`group_modules`)."""
        return group_modules(self.modules)

    def sites(self) -> list[Site]:
        return [s for s, _ in self.grouped()]

    def ranking(self) -> list[tuple[str, float]]:
        """Every scored candidate, best first."""
        return sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))

    def top(self, h: int) -> "Selection":
        """The ``h`` best-scoring candidates of the same ranking (ties by site order), weighted the
        same way; lets a sweep over H reuse one scoring pass."""
        if not self.scores:
            raise PipelineError("this selection has no scores to re-cut")
        ranked = sorted(self.scores.items(), key=lambda kv: (-kv[1], parse_site(kv[0])))
        if h > len(ranked):
            raise PipelineError(f"asked for H={h} modules but there are only {len(ranked)} candidates")
        chosen = [parse_site(k) for k, _ in ranked[:h]]
        sc = torch.tensor([v for _, v in ranked[:h]], dtype=torch.float32)
        if self.weighting == "ones":
            w = torch.ones(h)
        elif self.weighting == "relative":
            w = sc / sc.max()
        else:
            raise PipelineError(f"cannot re-cut a selection with weighting {self.weighting!r}")
        return Selection(chosen, w, dict(self.scores), self.score_name, self.weighting)

    def config(self) -> dict:
        return {"modules": [str(m) for m in self.modules], "scores": dict(self.scores),
                "score_name": self.score_name, "weighting": self.weighting}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights.clone()}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Selection":
        return cls([parse_site(s) for s in config["modules"]], tensors["weights"],
                   {k: float(v) for k, v in config.get("scores", {}).items()}, config.get("score_name", ""),
                   config.get("weighting", "fixed"))



__all__ = ["Selection", "head_module", "resid_module", "all_head_modules", "check_module", "capture_site_for",
           "group_modules"]
