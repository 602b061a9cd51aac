"""The steering pipeline's three roles and the steerer that composes them.

A steering method answers three questions, each answered by one *role*:

- **where** — a :class:`Selector` ranks candidate *modules* (a residual layer, or one attention
  head's ``hook_z`` output) and returns a :class:`Selection`: the chosen modules, a weight per
  module, and every candidate's score (for diagnostics);
- **when** — a :class:`Gate` gives each input prompt a score and a scale in ``[0, 1]``
  (default :class:`AlwaysOpen`: scale 1 for every prompt);
- **how** — an :class:`Editor` turns the selection into hook-layer edits
  (:class:`~steerlens.AddVector` with per-module weights; per-input rows when gated or when the
  edit depends on the input's own activations).

A :class:`Steerer` composes them. ``fit(model, data)`` reads the activations every role needs
from :class:`~steerlens.evals.data.ContrastiveData` (all candidate sites in one
:func:`steerlens.capture` pass) and fits selector, editor and gate in turn;
``edits(model, prompts, alpha=None)`` returns the edits for a batch of prompts, gate scale folded
into each edit's per-input ``scale``. A steerer follows the project's steering protocol, so it
can be handed to :func:`steerlens.generate` (as ``steerer.edits(model, prompts)``) and to the
eval tasks directly.

Every role is serialisable: ``config()`` (JSON: constructor parameters plus fitted non-tensor
state) and ``state_dict()`` (tensors); ``Role.from_state(config, tensors)`` rebuilds it. Role
classes register themselves with :func:`register_role` so artifacts can be loaded without a
central list; methods register a factory with :func:`register_method` so
:func:`make_steerer` needs no if/else (see :mod:`steerlens.pipeline.registry`).
"""

from __future__ import annotations

import copy

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence

import torch
from jaxtyping import Float

from ..hooks import Edit, HookGate, Site
from ..hooks.batching import InputError
from ..hooks.activations import capture
from ..hooks.sites import parse_site
from ..models import as_model


class PipelineError(ValueError):
    """Bad pipeline input or state (unfitted role, unknown method, wrong data)."""


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


# ----------------------------------------------------------------------------------------
# Activations handed to the roles
# ----------------------------------------------------------------------------------------

@dataclass
class ContrastiveActs:
    """Activations of the positive and negative examples, read at captured sites.

    ``pos[site]`` is ``[n_pos, d_model]`` for a residual site and ``[n_pos, n_heads, d_head]``
    for a whole-layer head site (as :func:`steerlens.capture` returns them); ``neg`` likewise.

    Attributes:
        position: the reading (``"last"`` prompt token, ``"response_mean"`` or ``"response_last"``).
        paired: whether ``pos[i]`` and ``neg[i]`` are two versions of the same example.
        query: optional last-prompt-token activations of the positive examples' prompts
            (query-dependent editors, e.g. MoSE), ``{site: [n_pos, ...]}``.
    """

    pos: dict[Site, torch.Tensor]
    neg: dict[Site, torch.Tensor]
    position: str = "last"
    paired: bool = False
    query: dict[Site, torch.Tensor] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return int(next(iter(self.pos.values())).shape[0])

    @property
    def n_neg(self) -> int:
        return int(next(iter(self.neg.values())).shape[0])

    def _read(self, store: dict[Site, torch.Tensor], module: Site) -> torch.Tensor:
        if module in store:
            t = store[module]
            return t[:, 0] if module.is_head else t
        for site, t in store.items():
            if site.is_head and module.is_head and site.layer == module.layer and module.heads[0] in site.heads:  # type: ignore[index,operator]
                return t[:, list(site.heads).index(module.heads[0])]  # type: ignore[arg-type,index]
        raise PipelineError(f"{module} was not captured (captured: {[str(s) for s in store]})")

    def module(self, module: Site) -> tuple[Float[torch.Tensor, "n_pos d"], Float[torch.Tensor, "n_neg d"]]:
        """``(pos, neg)`` activations of one module, ``[n, d]`` each, float32."""
        return self._read(self.pos, module).float(), self._read(self.neg, module).float()

    def stacked(self, modules: Sequence[Site]) -> tuple[Float[torch.Tensor, "m n_pos d"], Float[torch.Tensor, "m n_neg d"]]:
        """``[m, n, d]`` for modules of equal width (e.g. all heads)."""
        ps, ns = zip(*(self.module(m) for m in modules))
        return torch.stack(ps), torch.stack(ns)


def split_indices(n: int, test_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded ``(train, test)`` split of ``range(n)``; both parts non-empty when ``n >= 2``."""
    if n < 2:
        raise PipelineError(f"need at least 2 examples per class to split, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_test = min(n - 1, max(1, int(round(n * test_frac))))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


# ----------------------------------------------------------------------------------------
# Roles
# ----------------------------------------------------------------------------------------

ROLE_TYPES: dict[str, type["Role"]] = {}


def register_role(cls: type["Role"]) -> type["Role"]:
    """Class decorator: make a role loadable from artifacts under ``cls.kind``."""
    kind = getattr(cls, "kind", None)
    if not kind:
        raise PipelineError(f"{cls.__name__} needs a class attribute `kind`")
    if kind in ROLE_TYPES and ROLE_TYPES[kind] is not cls:
        existing = ROLE_TYPES[kind]
        if (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise PipelineError(f"role kind {kind!r} already registered by {existing.__module__}.{existing.__qualname__}")
    ROLE_TYPES[kind] = cls
    return cls


class Role:
    """Base of selectors, gates and editors: parameters, fitted state, (de)serialisation.

    Subclasses set ``kind`` (a unique name), store constructor parameters with
    ``self.params = dict(...)`` (JSON-serialisable; ``cls(**params)`` must rebuild an unfitted
    role), and override ``extra_state`` / ``state_dict`` / ``load_state`` for fitted state.
    """

    kind: ClassVar[str] = ""
    params: dict

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)

    @property
    def fitted(self) -> bool:
        return True

    def extra_state(self) -> dict:
        """Fitted non-tensor state (JSON)."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Fitted tensors."""
        return {}

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``extra_state`` / ``state_dict`` returned."""

    def config(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params), "state": self.extra_state()}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Role":
        kind = config.get("kind")
        target = ROLE_TYPES.get(kind) if cls is Role or kind != cls.kind else cls
        if target is None:
            raise PipelineError(f"unknown role kind {kind!r}; known: {sorted(ROLE_TYPES)} "
                                "(a plugin that defines it may not be imported)")
        obj = target(**config.get("params", {}))
        obj.load_state(config.get("state", {}), tensors)
        return obj

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise PipelineError(f"{type(self).__name__} is not fitted: call Steerer.fit first")

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({ps})"


class Selector(Role):
    """Where to steer. ``candidate_sites`` says what to capture; ``fit`` returns a Selection."""

    def candidate_sites(self, model) -> list[Site]:
        """Sites to capture on the contrastive data (whole-layer head sites for heads)."""
        raise NotImplementedError

    def fit(self, model, acts: ContrastiveActs) -> Selection:
        raise NotImplementedError


@dataclass
class GateDecision:
    """Per-prompt gate output: a score (higher = more in need of steering) and a scale in [0, 1]."""

    scores: Float[torch.Tensor, "n"]
    scale: Float[torch.Tensor, "n"]

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).flatten()
        self.scale = torch.as_tensor(self.scale, dtype=torch.float32).flatten()
        if self.scores.shape != self.scale.shape:
            raise PipelineError(f"gate: {self.scores.shape[0]} scores but {self.scale.shape[0]} scales")
        if not torch.isfinite(self.scale).all() or (self.scale < 0).any() or (self.scale > 1).any():
            raise PipelineError("gate scales must be finite and in [0, 1]")

    @property
    def open(self) -> torch.Tensor:
        return self.scale > 0


class Gate(Role):
    """When to steer: a fitted rule that the hook layer evaluates on live activations.

    ``fit`` gets prompt-side activations (last prompt token) of target (``pos``) vs benign
    (``neg``) prompts at ``required_sites``; :meth:`hook_gate` returns the
    :class:`~steerlens.hooks.gates.HookGate` that the edits carry (``None``: always open).
    A prompt gate is decided at the last prompt token and held for the generation; a token
    gate is re-evaluated on every token (see :mod:`steerlens.hooks.gates`).
    """

    def required_sites(self, model) -> list[Site]:
        hg = self.hook_gate(model)
        return [] if hg is None else [hg.site]

    def fit(self, model, acts: ContrastiveActs) -> None:
        return None

    def hook_gate(self, model) -> Optional[HookGate]:
        raise NotImplementedError

    def decide(self, model, prompt_acts: dict[Site, torch.Tensor], n: int) -> GateDecision:
        """Scores and scales of ``n`` prompts from their captured last-token activations (the
        same numbers the hook gate computes inside the forward pass; used for reports)."""
        hg = self.hook_gate(model)
        if hg is None:
            return GateDecision(torch.ones(n), torch.ones(n))
        x = prompt_acts[hg.site]
        s = hg.checked_score(x.unsqueeze(1))[:, 0]
        return GateDecision(s, hg.scale_of(s).clamp(0, 1))

    @property
    def always_open(self) -> bool:
        return False


@register_role
class AlwaysOpen(Gate):
    """The default gate: every prompt is steered at full strength (score 1, scale 1)."""

    kind = "always_open"

    @property
    def always_open(self) -> bool:
        return True

    def hook_gate(self, model) -> None:
        return None


class Editor(Role):
    """How to steer: fitted on the selected modules' activations, returns hook-layer edits.

    ``edits`` returns :class:`~steerlens.Edit` objects whose ``delta`` may read the live
    activation; strength, gate and positions are applied by the hook layer, so an editor never
    multiplies by them itself. ``query_sites`` (optional) are read at the last prompt token of
    the fitting prompts into ``ContrastiveActs.query``, for editors fitted on prompt states
    (MoSE's router).
    """

    def query_sites(self, model, selection: Selection) -> list[Site]:
        return []

    def fit(self, model, acts: ContrastiveActs, selection: Selection) -> None:
        raise NotImplementedError

    def edits(self, model, selection: Selection, alpha: float, gate: Optional[HookGate] = None) -> list[Edit]:
        """The edits at strength ``alpha``, each carrying ``gate`` (``None``: always open)."""
        raise NotImplementedError

    def check_model(self, model) -> None:
        """Raise :class:`PipelineError` if the fitted state does not fit ``model`` (widths)."""


# ----------------------------------------------------------------------------------------
# Contrastive data
# ----------------------------------------------------------------------------------------

_POSITION_ALIASES = {"last": "last", "prompt": "last", "prompt_last": "last",
                     "response_mean": "response_mean", "response": "response_mean", "mean": "mean",
                     "response_last": "response_last"}


#: Response-side readings: ``pos[i]`` and ``neg[i]`` share a prompt (paired data).
RESPONSE_POSITIONS = ("response_mean", "response_last")


def normalise_position(position: str) -> str:
    try:
        return _POSITION_ALIASES[str(position)]
    except KeyError:
        raise PipelineError(f"unknown reading position {position!r}; use 'last' (prompt-side), "
                            "'response_mean' or 'response_last' (response-side)") from None


def ids_hash(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def data_info(data: Any) -> dict:
    """Provenance of the fitting data recorded in artifacts: task, split, size, fingerprints."""
    pos, neg = list(data.pos), list(data.neg)
    ids = list(getattr(data, "ids", None) or [])
    fp = data.fingerprint() if hasattr(data, "fingerprint") else hashlib.sha256(
        json.dumps([pos, neg], default=list).encode()).hexdigest()[:16]
    return {"task": getattr(data, "task", None), "split": getattr(data, "split", None),
            "position": normalise_position(getattr(data, "position", "last")),
            "n_pos": len(pos), "n_neg": len(neg), "fingerprint": fp,
            "ids_sha256": ids_hash(ids) if ids else None, "n_ids": len(ids)}


def check_data(data: Any) -> tuple[list, list, str]:
    if not hasattr(data, "pos") or not hasattr(data, "neg"):
        raise PipelineError(f"expected ContrastiveData (with .pos, .neg, .position), got {type(data).__name__}")
    pos, neg = list(data.pos), list(data.neg)
    if not pos or not neg:
        raise PipelineError(f"contrastive data is empty: {len(pos)} positive, {len(neg)} negative examples")
    position = normalise_position(getattr(data, "position", "last"))
    return pos, neg, position


@dataclass
class SimpleContrastiveData:
    """A minimal stand-in for :class:`steerlens.evals.data.ContrastiveData` (tests, ad-hoc use)."""

    pos: list
    neg: list
    position: str = "last"
    ids: list = field(default_factory=list)
    split: str = "fit"
    task: str = "custom"

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.pos, self.neg, self.position, self.split], default=list).encode())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------
# The steerer
# ----------------------------------------------------------------------------------------

class Steerer:
    """Selector + gate + editor, with a default strength ``alpha``.

    Args:
        selector, editor: the where and how roles.
        gate: the when role (default :class:`AlwaysOpen`).
        alpha: default strength; ``edits(..., alpha=...)`` overrides it per call.
        method: registry name (recorded in artifacts).
        method_params: the parameters ``make_steerer`` was called with (recorded).
        batch_size: batch size of the capture passes in ``fit`` and ``edits``.
    """

    def __init__(self, selector: Selector, editor: Editor, gate: Optional[Gate] = None, *,
                 alpha: float = 1.0, method: str = "custom", method_params: Optional[dict] = None,
                 batch_size: int = 16) -> None:
        self.selector, self.editor = selector, editor
        self.gate = gate if gate is not None else AlwaysOpen()
        self.alpha = float(alpha)
        self.method = method
        self.method_params = dict(method_params or {})
        self.batch_size = int(batch_size)
        self.selection: Optional[Selection] = None
        self.fit_info: dict = {}
        self.model_fingerprint: Optional[dict] = None

    # -- fitting ----------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.selection is not None and self.editor.fitted and self.gate.fitted

    def _capture(self, model, items, sites, position, progress) -> dict[Site, torch.Tensor]:
        return capture(model, items, sites, position, batch_size=self.batch_size, progress=progress)  # type: ignore[return-value]

    def read_contrastive(self, model, data: Any, *, progress: bool = False) -> ContrastiveActs:
        """Capture the selector's candidate sites on both sides in one pass (pos and neg together)."""
        pos, neg, position = check_data(data)
        sites = self.selector.candidate_sites(model)
        acts = self._capture(model, pos + neg, sites, position, progress)
        n = len(pos)
        paired = bool(getattr(data, "paired", position in RESPONSE_POSITIONS and len(pos) == len(neg)))
        return ContrastiveActs({s: t[:n] for s, t in acts.items()}, {s: t[n:] for s, t in acts.items()},
                               position=position, paired=paired and len(pos) == len(neg))

    def fit(self, model, data: Any, *, gate_data: Any = None, progress: bool = False,
            acts: Optional[ContrastiveActs] = None, selection: Optional[Selection] = None,
            allow_test: bool = False) -> "Steerer":
        """Fit selector, editor and gate on contrastive ``data``.

        Args:
            data: ``ContrastiveData`` (``pos``/``neg`` prompts or (prompt, response) pairs and the
                ``position`` to read at).
            gate_data: prompt-side target-vs-benign data for a gate that needs fitting; defaults
                to ``data`` when ``data`` is prompt-side.
            acts: activations already read from ``data`` by :meth:`read_contrastive` (sweeps
                reuse one capture for many settings).
            selection: a selection already made on ``acts`` (skips the selector; sweeps over H
                re-cut one ranking).
            allow_test: fitting on data from the ``test`` split is refused unless this is set
                (test figures would no longer be held out).
        """
        for d in (data, gate_data):
            if d is not None and getattr(d, "split", None) == "test" and not allow_test:
                raise PipelineError("refusing to fit on the 'test' split (its figures would no longer be "
                                    "held out); use the fit split, or pass allow_test=True deliberately")
        m = as_model(model)
        if acts is None:
            acts = self.read_contrastive(m, data, progress=progress)
        if selection is None:
            selection = self.selector.fit(m, acts)
        qsites = self.editor.query_sites(m, selection)
        if qsites:
            pos, _, _ = check_data(data)
            prompts = [p[0] if isinstance(p, (tuple, list)) else p for p in pos]
            acts.query = self._capture(m, prompts, qsites, "last", progress)
        self.editor.fit(m, acts, selection)
        if not self.gate.always_open:
            self._fit_gate(m, gate_data if gate_data is not None else data, progress)
        self.selection = selection
        # gate data is recorded only when a gate was fitted on it (callers such as sweeps pass it
        # to every setting; an always-open gate ignores it)
        used = gate_data is not None and not self.gate.always_open
        self.fit_info = {"data": data_info(data), "gate_data": data_info(gate_data) if used else None}
        self.model_fingerprint = m.fingerprint()
        return self

    def _fit_gate(self, m, gdata: Any, progress: bool) -> None:
        gpos, gneg, gposition = check_data(gdata)
        if gposition != "last":
            raise PipelineError("the gate is fitted on prompt-side data (position 'last'): pass gate_data=")
        gsites = self.gate.required_sites(m)
        gacts = self._capture(m, gpos + gneg, gsites, "last", progress) if gsites else {}
        n = len(gpos)
        self.gate.fit(m, ContrastiveActs({s: t[:n] for s, t in gacts.items()},
                                         {s: t[n:] for s, t in gacts.items()}, position="last"))

    def fit_gate(self, model, gate_data: Any, *, progress: bool = False, allow_test: bool = False) -> "Steerer":
        """Fit (only) the gate on prompt-side target-vs-benign ``gate_data``; the selector and
        editor keep their fitted state (e.g. after :meth:`with_gate` on a fitted steerer)."""
        if getattr(gate_data, "split", None) == "test" and not allow_test:
            raise PipelineError("refusing to fit the gate on the 'test' split; use the fit split")
        if self.gate.always_open:
            return self
        self._fit_gate(as_model(model), gate_data, progress)
        self.fit_info = {**self.fit_info, "gate_data": data_info(gate_data)}
        return self

    def with_gate(self, gate: "Gate") -> "Steerer":
        """A steerer with the same selector, editor, selection and strength but ``gate`` (any
        :class:`Gate`, fitted or not: fit it with :meth:`fit` or :meth:`fit_gate`). The roles are
        shared, not copied. The gate's kind and parameters are recorded in ``method_params``."""
        if not isinstance(gate, Gate):
            raise PipelineError(f"with_gate expects a Gate role, got {type(gate).__name__}")
        mp = {k: v for k, v in self.method_params.items() if k not in ("gate", "gate_params")}
        if not gate.always_open:
            mp.update(gate=gate.kind, gate_params=dict(gate.params))
        st = copy.copy(self)  # keeps a subclass and its reading rules (e.g. ODESteer's response_mean)
        st.gate, st.method_params, st.fit_info = gate, mp, dict(self.fit_info)
        return st

    # -- applying ---------------------------------------------------------------------------
    def decide(self, model, prompts: Sequence[str], *, progress: bool = False) -> GateDecision:
        """The gate's score and scale for ``prompts`` (one capture pass at the gate's site); the
        same decision the hook layer takes inside ``generate``. For reports and gate evaluation."""
        self._require_fitted()
        prompts = list(prompts)
        if not prompts:
            raise InputError("no prompts given (empty list)")
        m = as_model(model)
        gsites = [] if self.gate.always_open else self.gate.required_sites(m)
        acts = self._capture(m, prompts, gsites, "last", progress) if gsites else {}
        decision = self.gate.decide(m, {s: acts[s] for s in gsites}, len(prompts))
        if decision.scale.shape[0] != len(prompts):
            raise PipelineError(f"gate returned {decision.scale.shape[0]} decisions for {len(prompts)} prompts")
        return decision

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise PipelineError("steerer is not fitted: call fit(model, data) or load_steerer(dir)")

    def edits(self, model, prompts: Optional[Sequence[str]] = None, alpha: Optional[float] = None) -> list[Edit]:
        """Hook-layer edits at strength ``alpha`` (default: the steerer's), each carrying the
        gate. They do not depend on the prompts (a gate or a query-dependent editor reads the live
        activations), so one list serves any prompts; ``prompts`` is accepted for the project's
        steering protocol."""
        self._require_fitted()
        a = self.alpha if alpha is None else float(alpha)
        m = as_model(model)
        gate = None if self.gate.always_open else self.gate.hook_gate(m)
        out = self.editor.edits(m, self.selection, a, gate=gate)  # type: ignore[arg-type]
        for e in out:
            if e.name is None:
                e.name = f"{self.method}:{e.site}"
        return out

    # -- state ------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"method": self.method, "method_params": self.method_params, "alpha": self.alpha,
                "batch_size": self.batch_size,
                "selector": self.selector.config(), "gate": self.gate.config(), "editor": self.editor.config(),
                "selection": self.selection.config() if self.selection is not None else None,
                "sites": [str(s) for s in self.selection.sites()] if self.selection is not None else [],
                "fit_info": self.fit_info}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for prefix, obj in (("selector", self.selector), ("gate", self.gate), ("editor", self.editor),
                            ("selection", self.selection)):
            if obj is None:
                continue
            for k, v in obj.state_dict().items():
                out[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
        return out

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Steerer":
        def part(prefix: str) -> dict[str, torch.Tensor]:
            p = prefix + "."
            return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}

        sel = Role.from_state(config["selector"], part("selector"))
        gate = Role.from_state(config["gate"], part("gate"))
        ed = Role.from_state(config["editor"], part("editor"))
        st = cls(sel, ed, gate, alpha=config.get("alpha", 1.0), method=config.get("method", "custom"),  # type: ignore[arg-type]
                 method_params=config.get("method_params"), batch_size=config.get("batch_size", 16))
        if config.get("selection") is not None:
            st.selection = Selection.from_state(config["selection"], part("selection"))
        st.fit_info = config.get("fit_info", {})
        return st

    def save(self, path, model=None) -> "Any":
        """Write the artifact directory atomically (see :mod:`steerlens.pipeline.artifacts`)."""
        from .artifacts import save_steerer

        return save_steerer(self, path, model=model)

    def __call__(self, model, prompts: Sequence[str], alpha: Optional[float] = None) -> list[Edit]:
        return self.edits(model, prompts, alpha)

    def __repr__(self) -> str:
        return (f"Steerer(method={self.method!r}, alpha={self.alpha}, selector={self.selector!r}, "
                f"gate={self.gate!r}, editor={self.editor!r}, fitted={self.fitted})")


__all__ = [
    "PipelineError", "Selection", "ContrastiveActs", "Role", "Selector", "Gate", "GateDecision",
    "AlwaysOpen", "Editor", "Steerer", "register_role", "ROLE_TYPES", "head_module", "resid_module",
    "all_head_modules", "group_modules", "capture_site_for", "split_indices", "data_info",
    "SimpleContrastiveData", "normalise_position", "check_module",
]
