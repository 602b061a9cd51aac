"""ODESteer as pipeline roles: a barrier-scoring layer selector, the ODE editor, the method.

- :class:`BarrierSelector` — fits the barrier at every candidate layer on a seeded split of the
  fitting activations (by pair for response-side data) and keeps the layer with the best
  held-out AUC; every candidate's held-out AUC is in ``Selection.scores``, held-out accuracy,
  train accuracy and fit time in :attr:`BarrierSelector.result_info`. With one candidate (the
  default: ``layer``) it only reports that layer's held-out figures.
- :class:`ODEEditor` — refits the barrier on all fitting activations of the chosen layer and
  returns one :class:`~.edit.ODEEdit` carrying the steerer's gate.
- :class:`ODESteerer` — a :class:`~steerlens.pipeline.Steerer` that reads response-side fitting
  data where the method's ``read`` parameter says (see below).

Open choices (parameters of ``make_steerer("odesteer", ...)``):

- ``read``: where the barrier's training activations are read on response-side pairs.
  ``"response_mean"`` (default) = the mean over the response tokens (the other methods' reading);
  ``"response_last"`` = the last token of ``prompt + response``, the analogue of the published
  code's last token of ``"Q: …\\nA: …"`` (a single-token state, like the states the edit sees at
  generation time). On the default model the response mean gave the better barrier at every
  scanned layer and ``C`` (TruthfulQA val AUC 0.69–0.82 vs 0.60–0.75; ``experiments/odesteer.py``).
  ``"data"`` = whatever the data says. Prompt-only data is always read at the last prompt token.
- ``read_format``: how response-side pairs are written for reading. ``"chat"`` (default) = the
  model's chat template (question as user turn, answer as assistant turn); ``"base"`` = the
  published code's base-model text, plain ``"Q: {question}\nA: {answer}"`` with BOS and no chat
  template (read as the prompt ``"Q: …\nA:"`` followed by the response ``" {answer}"``, so
  ``read="response_last"`` is the last token of the whole text). Prompt-only data are not
  rewritten. The edit still acts on whatever prompts it is given at generation time.
- ``t_mode``: ``"absolute"`` (default): ``alpha`` is ``T`` itself. ``"relative"``: ``alpha`` is
  ``θ`` and ``T = θ · median‖x‖`` of the fit activations at the edited layer (the median is
  fitted with the barrier and kept in the artifact), so the same ``θ`` turns the states by about
  the same angle (``T/‖x‖`` radians) on any model.
- strength: ``alpha`` is the integration time ``T`` (see :mod:`.edit`), in the units of the
  residual stream (the edited activation moves at most ``|T|`` in Euclidean norm, since
  ``‖v‖ = 1``). SmolLM2-135M's residual norm is about 150 at layers 10–12, so ``T`` of 10–40
  is a 7–27 % move; the published ``T ≈ 5`` on 7B models is not transferable as a number.
- ``C``: the logistic regression's inverse L2 strength. The published code uses scikit-learn's
  default ``C = 1``; with ``γ = 0.1`` and ``c₀ = 1`` the non-constant features are small, so on the
  default model ``C = 1`` underfits (train accuracy 0.70) and ``C = 100``–``1000`` gives the best
  val AUC (0.82 vs 0.74 at layer 16). Default ``1000`` (the scan's choice).
- features (``features="poly_sketch"`` or ``"rff"``, ``n_features``, ``degree``, ``gamma``,
  ``coef0``, ``rff_gamma``, ``seed``), the logistic regression (``max_iter``, ``tol``),
  the solver (``steps``, ``solver``, ``backend``), ``gradient`` (``"closed_form"`` or
  ``"autograd"``), ``positions`` (default ``"current_last"``).
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ....hooks import Edit, HookGate, Site
from ....hooks.edits import EditError, normalise_positions
from ....hooks.sites import parse_site
from ....models import as_model
from ...contrastive import ContrastiveActs, check_data, normalise_position
from ...errors import PipelineError
from ...roles import Editor, Gate, Selector, register_role
from ...selection import Selection, resid_module
from ...steerer import Steerer
from ...params import MethodParams, scaled_layer
from ...registry import register_method
from .barrier import GRADIENTS, Barrier, evaluate_barrier, fit_barrier, heldout_metrics
from .features import FeatureError, make_features
from .solvers import BACKENDS, DEFAULT_BACKEND, SOLVERS

#: Default layer on SmolLM2-135M-Instruct (30 layers): the best TruthfulQA val AUC of the barrier
#: over layers 4–20 (``experiments/odesteer.py``; the published 13 of 32 is at 41 % depth).
DEFAULT_LAYER = 16
#: Default integration time on the default model. The val scan of ``experiments/odesteer.py``
#: (40 TruthfulQA val questions): T 20 leaves MC2 at the unsteered 0.477; T 80 gives 0.525 at a
#: KL of 0.46; T 160 gives 0.576 at a KL of 3.4 (the val rule's pick, which costs more utility
#: than the others). 80 is the main job's setting.
DEFAULT_T = 80.0
READS = ("response_last", "response_mean", "data")
#: how response-side pairs are written for reading (``read_format``)
READ_FORMATS = ("chat", "base")
#: what ``alpha`` means (``t_mode``): ``T`` itself, or ``θ`` with ``T = θ · median‖x‖``
T_MODES = ("absolute", "relative")


def base_format(pair) -> tuple[str, str]:
    """A (question, answer) pair in the published base-model text ``"Q: {q}\nA: {a}"``, split as
    (prompt ``"Q: {q}\nA:"``, response ``" {a}"``) for a plain-text (no chat template) reading."""
    q, a = pair
    return f"Q: {q}\nA:", f" {a}"


def barrier_params(features: str = "poly_sketch", n_features: int = 8000, degree: int = 2, gamma: float = 0.1,
                   coef0: float = 1.0, rff_gamma: float = 1.0, seed: int = 0, C: float = 1000.0,
                   max_iter: int = 3000, tol: float = 1e-6) -> dict:
    """The barrier's parameters, validated (shared by the selector and the editor)."""
    try:
        make_features(features, n_features=n_features, seed=seed, degree=degree, gamma=gamma, coef0=coef0,
                      rff_gamma=rff_gamma)
    except FeatureError as e:
        raise PipelineError(str(e)) from None
    if not float(C) > 0:
        raise PipelineError(f"C must be > 0, got {C}")
    return dict(features=features, n_features=int(n_features), degree=int(degree), gamma=float(gamma),
                coef0=float(coef0), rff_gamma=float(rff_gamma), seed=int(seed), C=float(C),
                max_iter=int(max_iter), tol=float(tol))


def _features_of(p: dict):
    return make_features(p["features"], n_features=p["n_features"], seed=p["seed"], degree=p["degree"],
                         gamma=p["gamma"], coef0=p["coef0"], rff_gamma=p["rff_gamma"])


def _fit_kw(p: dict) -> dict:
    return {"C": p["C"], "max_iter": p["max_iter"], "tol": p["tol"]}


@register_role
class BarrierSelector(Selector):
    """Candidate residual layers ranked by the held-out AUC of a barrier fitted at each.

    Args:
        layers: candidate layers (``blocks.{l}.hook_resid_{where}``).
        where: ``"post"`` (default), ``"pre"`` or ``"mid"``.
        test_frac, split_seed: the held-out split (by pair for paired data).
        barrier: the barrier's parameters (:func:`barrier_params`).

    Ties in AUC go to the higher held-out accuracy, then the earlier layer.
    """

    kind = "ode_barrier_selector"

    def __init__(self, layers: Sequence[int], where: str = "post", test_frac: float = 0.2, split_seed: int = 0,
                 barrier: Optional[dict] = None) -> None:
        layers = [int(x) for x in layers]
        if not layers:
            raise PipelineError("BarrierSelector needs at least one candidate layer")
        if not 0 < float(test_frac) < 1:
            raise PipelineError(f"test_frac must be in (0, 1), got {test_frac}")
        super().__init__(layers=layers, where=where, test_frac=float(test_frac), split_seed=int(split_seed),
                         barrier=barrier_params(**(barrier or {})))
        self.result_info: dict = {}

    def modules(self) -> list[Site]:
        return [resid_module(l, self.params["where"]) for l in self.params["layers"]]

    def candidate_sites(self, model) -> list[Site]:
        m = as_model(model)
        return [s.validate(m) for s in self.modules()]

    def fit(self, model, acts: ContrastiveActs) -> Selection:
        p = self.params["barrier"]
        rows, scores = {}, {}
        for mod in self.modules():
            pos, neg = acts.module(mod)
            r = heldout_metrics(pos, neg, lambda: _features_of(p), paired=acts.paired,
                                test_frac=self.params["test_frac"], seed=self.params["split_seed"], **_fit_kw(p))
            rows[str(mod)], scores[str(mod)] = r, float(r["auc"])
        best = min(self.modules(), key=lambda s: (-scores[str(s)], -rows[str(s)]["accuracy"], s.layer))
        self.result_info = {"heldout": rows, "position": acts.position, "paired": acts.paired}
        return Selection([best], torch.ones(1), scores, "heldout_barrier_auc", "fixed")

    def extra_state(self) -> dict:
        return {"result_info": self.result_info}

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.result_info = dict(extra.get("result_info", {}))


@register_role
class ODEEditor(Editor):
    """Fits the barrier on the selected layer and steers with :class:`~.edit.ODEEdit`.

    Args:
        positions: ``"current_last"`` (default; see :mod:`.edit`), ``"from_prompt_last"`` or ``"all"``.
        steps, solver, backend: the integration (``N``, ``"euler" | "midpoint" | "rk4"``,
            ``"loop" | "torchdiffeq"``).
        gradient: ``"closed_form"`` (default) or ``"autograd"``.
        barrier: the barrier's parameters (:func:`barrier_params`).
        t_mode: ``"absolute"`` (default: the strength is ``T``) or ``"relative"`` (the strength
            is ``θ``; ``T = θ · t_scale`` with ``t_scale`` the median norm of the fit activations).
    """

    kind = "ode_editor"
    family = "resid"

    def __init__(self, positions: str = "current_last", steps: int = 10, solver: str = "euler",
                 backend: str = DEFAULT_BACKEND, gradient: str = "closed_form", barrier: Optional[dict] = None,
                 t_mode: str = "absolute") -> None:
        if t_mode not in T_MODES:
            raise PipelineError(f"t_mode must be one of {T_MODES}, got {t_mode!r}")
        try:
            positions = normalise_positions(positions)
        except EditError as e:
            raise PipelineError(str(e)) from None
        if solver not in SOLVERS:
            raise PipelineError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if backend not in BACKENDS:
            raise PipelineError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if int(steps) < 1:
            raise PipelineError(f"steps (N) must be >= 1, got {steps}")
        if gradient not in GRADIENTS:
            raise PipelineError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        extra = {} if t_mode == "absolute" else {"t_mode": t_mode}  # absolute: the config as before
        super().__init__(positions=positions, steps=int(steps), solver=solver, backend=backend, gradient=gradient,
                         barrier=barrier_params(**(barrier or {})), **extra)
        self.module: Optional[Site] = None
        self.barrier: Optional[Barrier] = None
        self.stats: dict = {}
        #: ``T`` per unit of strength: 1 (absolute), the fit activations' median norm (relative)
        self.t_scale: float = 1.0

    @property
    def t_mode(self) -> str:
        return self.params.get("t_mode", "absolute")

    def integration_time(self, alpha: float) -> float:
        """``T`` for strength ``alpha`` (``alpha`` itself, or ``θ · t_scale`` when relative)."""
        return float(alpha) * self.t_scale

    @property
    def fitted(self) -> bool:
        return self.barrier is not None

    def fit(self, model, acts: ContrastiveActs, selection: Selection) -> None:
        if len(selection.modules) != 1 or selection.modules[0].is_head:
            raise PipelineError(f"ODESteer edits one residual layer; the selection has {[str(m) for m in selection.modules]}")
        mod = selection.modules[0]
        pos, neg = acts.module(mod)
        p = self.params["barrier"]
        t0 = time.perf_counter()
        bar = fit_barrier(pos, neg, _features_of(p), gradient=self.params["gradient"], **_fit_kw(p))
        secs = time.perf_counter() - t0
        train = evaluate_barrier(bar, pos, neg)
        norms = torch.cat([pos, neg]).norm(dim=-1)
        self.module, self.barrier = mod, bar
        self.stats = {"train_accuracy": train["accuracy"], "train_auc": train["auc"], "fit_seconds": secs,
                      "n_pos": len(pos), "n_neg": len(neg), "prior_term": bar.prior_term,
                      "mean_act_norm": float(norms.mean()), "position": acts.position}
        if self.t_mode == "relative":
            self.t_scale = float(norms.median())
            self.stats["median_act_norm"] = self.t_scale

    def edits(self, model, selection: Selection, alpha: float, gate: Optional[HookGate] = None) -> list[Edit]:
        self._require_fitted()
        assert self.module is not None and self.barrier is not None
        if selection.modules[0] != self.module:
            raise PipelineError(f"the editor was fitted on {self.module}, the selection is {selection.modules[0]}")
        from .edit import ODEEdit

        return [ODEEdit(self.module, self.barrier, self.integration_time(alpha), steps=self.params["steps"],
                        solver=self.params["solver"],
                        backend=self.params["backend"], positions=self.params["positions"], gate=gate)]

    def check_model(self, model) -> None:
        if self.module is not None and self.barrier is not None:
            w = self.module.width(model)
            if self.barrier.d != w:
                raise PipelineError(f"{self.module}: barrier fitted on width {self.barrier.d} but the model's site has width {w}")

    def extra_state(self) -> dict:
        if self.barrier is None:
            return {}
        out = {"module": str(self.module), "barrier": self.barrier.extra_state(), "stats": self.stats}
        if self.t_mode == "relative":
            out["t_scale"] = self.t_scale
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.barrier is None else self.barrier.state_dict()

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        if not extra:
            return
        self.module = parse_site(extra["module"])
        self.barrier = Barrier.from_state(extra["barrier"], tensors, self.params["gradient"])
        self.stats = dict(extra.get("stats", {}))
        self.t_scale = float(extra.get("t_scale", 1.0))


class ODESteerer(Steerer):
    """A steerer that reads response-side fitting data at the ``read`` position (see the module
    docstring). Loading an artifact gives a plain :class:`Steerer` (the reading only matters for
    fitting)."""

    def __init__(self, *args, read: str = "response_mean", read_format: str = "chat", **kw) -> None:
        if read not in READS:
            raise PipelineError(f"read must be one of {READS}, got {read!r}")
        if read_format not in READ_FORMATS:
            raise PipelineError(f"read_format must be one of {READ_FORMATS}, got {read_format!r}")
        super().__init__(*args, **kw)
        self.read = read
        self.read_format = read_format

    def reading(self, data: Any) -> Any:
        """``data`` with its position set to the reading this steerer fits on."""
        pos, _, position = check_data(data)
        if self.read == "data" or not isinstance(pos[0], (tuple, list)) or position == self.read:
            return data
        out = copy.copy(data)
        out.position = self.read
        return out

    def _base_text(self, data: Any) -> bool:
        pos, _, _ = check_data(data)
        return self.read_format == "base" and isinstance(pos[0], (tuple, list))

    def read_contrastive(self, model, data: Any, *, progress: bool = False) -> ContrastiveActs:
        data = self.reading(data)
        if not self._base_text(data):
            return super().read_contrastive(model, data, progress=progress)
        from ....hooks.activations import capture

        pos, neg, position = check_data(data)
        items = [base_format(x) for x in pos + neg]
        sites = self.selector.candidate_sites(model)
        acts = capture(model, items, sites, position, batch_size=self.batch_size, chat=False, progress=progress)
        n = len(pos)
        return ContrastiveActs({s: t[:n] for s, t in acts.items()}, {s: t[n:] for s, t in acts.items()},  # type: ignore[union-attr]
                               position=position, paired=len(pos) == len(neg))

    def fit(self, model, data: Any, *, acts: Optional[ContrastiveActs] = None, **kw) -> "ODESteerer":
        data = self.reading(data)
        if acts is not None and (acts.position != normalise_position(data.position) or self._base_text(data)):
            acts = None  # read at another position or format (e.g. a sweep's shared capture): read again
        super().fit(model, data, acts=acts, **kw)
        return self


#: the barrier's parameters (:func:`barrier_params`), in the order they are recorded
BARRIER_PARAMS = tuple(inspect.signature(barrier_params).parameters)


@dataclass(frozen=True)
class ODESteerParams(MethodParams):
    """:func:`make_odesteer`'s parameters (not the ``gate`` role). The barrier's are validated and
    typed by :func:`barrier_params`; ``layers`` is recorded as a list of ints."""
    layer: int = DEFAULT_LAYER
    layers: Optional[Sequence[int]] = None
    alpha: float = DEFAULT_T
    where: str = "post"
    positions: str = "current_last"
    read: str = "response_mean"
    features: str = "poly_sketch"
    n_features: int = 8000
    degree: int = 2
    gamma: float = 0.1
    coef0: float = 1.0
    rff_gamma: float = 1.0
    seed: int = 0
    C: float = 1000.0
    max_iter: int = 3000
    tol: float = 1e-6
    steps: int = 10
    solver: str = "euler"
    backend: str = DEFAULT_BACKEND
    gradient: str = "closed_form"
    test_frac: float = 0.2
    batch_size: int = 16
    read_format: str = "chat"
    t_mode: str = "absolute"

    def __post_init__(self) -> None:
        if self.read_format not in READ_FORMATS:
            raise PipelineError(f"read_format must be one of {READ_FORMATS}, got {self.read_format!r}")
        if self.t_mode not in T_MODES:
            raise PipelineError(f"t_mode must be one of {T_MODES}, got {self.t_mode!r}")
        self._set(**barrier_params(**self.pick(*BARRIER_PARAMS)),
                  layers=None if self.layers is None else [int(x) for x in self.layers])

    @property
    def barrier(self) -> dict:
        """The barrier's parameters (shared by the selector and the editor)."""
        return self.pick(*BARRIER_PARAMS)

    @property
    def candidates(self) -> list[int]:
        """The candidate layers: ``layers``, else ``[layer]``."""
        return [int(self.layer)] if self.layers is None else list(self.layers)


#: The authors' settings (``ZhaoHongjue/odesteer``; docs/fidelity.md, "ODESteer") on the default
#: model: block 13 of 32 scaled by relative depth to 30 layers (12), scikit-learn's logistic
#: regression defaults (C 1, 1000 iterations), 8000 sketch features, Euler with 10 steps, the
#: base-model reading (last token of plain ``"Q: …\nA: …"``), and ``T`` relative to the residual
#: norm: ``alpha`` is ``θ``, ``T = θ · median‖x‖``. ``θ = 0.1`` is a placeholder: the authors' T = 5
#: divided by Llama-3.1-8B's residual norm at block 13 has not been measured here; scan θ in
#: {0.05, 0.1, 0.2, 0.4} on val. Not set (not implemented): their data (every correct and incorrect
#: answer, 2 folds of 50 %) and their open-ended evaluation.
PAPER_PRESET = {"layer": scaled_layer(13, 32), "layers": None, "read": "response_last", "read_format": "base",
                "C": 1.0, "max_iter": 1000, "n_features": 8000, "t_mode": "relative", "alpha": 0.1,
                "steps": 10, "solver": "euler", "positions": "current_last"}


@register_method("odesteer", help="ODESteer: multi-step flow along a learned barrier's unit gradient (alpha = T)",
                 family="resid", presets={"paper": PAPER_PRESET},
                 contract={"params": {"layer": 1, "alpha": 0.1, "n_features": 512, "C": 1.0, "tol": 1e-8},
                           "gen_alpha": 0.3})
def make_odesteer(*, layer: int = DEFAULT_LAYER, layers: Optional[Sequence[int]] = None, alpha: float = DEFAULT_T,
                  where: str = "post", positions: str = "current_last", read: str = "response_mean",
                  features: str = "poly_sketch", n_features: int = 8000, degree: int = 2, gamma: float = 0.1,
                  coef0: float = 1.0, rff_gamma: float = 1.0, C: float = 1000.0, max_iter: int = 3000,
                  tol: float = 1e-6,
                  steps: int = 10, solver: str = "euler", backend: str = DEFAULT_BACKEND,
                  gradient: str = "closed_form", test_frac: float = 0.2, seed: int = 0, batch_size: int = 16,
                  read_format: str = "chat", t_mode: str = "absolute", gate: Optional[Gate] = None) -> Steerer:
    """ODESteer at ``blocks.{layer}.hook_resid_{where}`` (or the best of ``layers`` by held-out
    barrier AUC); ``alpha`` is the integration time ``T``. ``gate``: any :class:`Gate` role
    (default: always open). See :mod:`steerlens.pipeline.methods.odesteer.roles` for the open choices."""
    p = ODESteerParams.of(locals())
    return ODESteerer(BarrierSelector(p.candidates, p.where, p.test_frac, p.seed, p.barrier),
                      ODEEditor(p.positions, p.steps, p.solver, p.backend, p.gradient, p.barrier, p.t_mode), gate,
                      alpha=p.alpha, method="odesteer", method_params=p.record(), batch_size=p.batch_size,
                      read=p.read, read_format=p.read_format)


__all__ = ["BarrierSelector", "ODEEditor", "ODESteerer", "make_odesteer", "barrier_params", "DEFAULT_LAYER",
           "DEFAULT_T", "READS", "READ_FORMATS", "T_MODES", "base_format", "ODESteerParams", "BARRIER_PARAMS",
           "PAPER_PRESET", "scaled_layer"]
