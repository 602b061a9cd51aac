"""The steerer: selector + gate + editor composed into one steering method; several steerers composed.

A :class:`Steerer` composes the three roles (:mod:`steerlens.pipeline.roles`).
``fit(model, data)`` reads the activations every role needs from
:class:`~steerlens.evals.data.ContrastiveData` (all candidate sites in one
:func:`steerlens.capture` pass) and fits selector, editor and gate in turn;
``edits(model, prompts, alpha=None)`` returns the edits for a batch of prompts, each carrying the
gate. A steerer follows the project's steering protocol, so it can be handed to
:func:`steerlens.generate` (as ``steerer.edits(model, prompts)``) and to the eval tasks directly.
``save(path)`` writes an artifact (:mod:`steerlens.pipeline.artifacts`); :func:`load_steerer`
reads one back.

:class:`Composition`: several steerers in one generation, each with its own gate.
``Composition([safety, truthfulness])`` follows the steering protocol (``edits(model, prompts,
alpha=None)``), so it can be handed to :func:`steerlens.generate` and to every eval task.

What happens when two edits meet at one site: the hook layer applies the edits of a hook point
one after the other, **in the order of the list** (the first steerer's edits first). Each edit
computes its delta from the activation as left by the edits before it, and adds its own
``alpha · gate · delta``. For constant edits (CAA, ITI) the order does not matter — the deltas
simply add; for activation-dependent edits (MoSE reads its query, ODESteer integrates from the
activation it meets) the second sees the first's result. Gates read the activation that arrives
at their own hook point, before any edit at that hook.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from ..hooks import Edit
from ..hooks.activations import capture
from ..hooks.batching import InputError
from ..hooks.sites import Site, SiteError
from ..models import as_model
from .artifacts import ArtifactError, check_model_fits, read_artifact, save_steerer
from .contrastive import RESPONSE_POSITIONS, ContrastiveActs, check_data, data_info
from .errors import PipelineError
from .gates import AlwaysOpen
from .registry import load_plugins
from .roles import Editor, Gate, GateDecision, Role, Selector
from .selection import Selection


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

    def _capture(self, model, items, sites, position, progress, chat: Optional[bool] = None,
                 system: Optional[str] = None, close_turn: bool = False) -> dict[Site, torch.Tensor]:
        return capture(model, items, sites, position, batch_size=self.batch_size, progress=progress,  # type: ignore[return-value]
                       chat=chat, system=system, close_turn=close_turn)

    @staticmethod
    def _format(data: Any, responses: bool = True) -> dict:
        """How ``data``'s texts are written for reading: its ``chat`` flag, ``system`` prompt and
        (for response-side reads) ``close_turn``; attributes it lacks take the defaults."""
        out = {"chat": getattr(data, "chat", None), "system": getattr(data, "system", None)}
        if responses:
            out["close_turn"] = bool(getattr(data, "close_turn", False))
        return out

    def read_contrastive(self, model, data: Any, *, progress: bool = False) -> ContrastiveActs:
        """Capture the selector's candidate sites on both sides in one pass (pos and neg together)."""
        pos, neg, position = check_data(data)
        sites = self.selector.candidate_sites(model)
        acts = self._capture(model, pos + neg, sites, position, progress, **self._format(data))
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
        extra = [x for x in self.editor.read_sites(m, selection) if x not in acts.pos]
        if extra:  # sites the editor reads besides the selected ones (e.g. MoSE's query_offset)
            pos, neg, position = check_data(data)
            more = self._capture(m, pos + neg, extra, position, progress, **self._format(data))
            n = len(pos)
            acts.pos.update({s: t[:n] for s, t in more.items()})
            acts.neg.update({s: t[n:] for s, t in more.items()})
        qsites = self.editor.query_sites(m, selection)
        if qsites:
            pos, _, _ = check_data(data)
            prompts = [p[0] if isinstance(p, (tuple, list)) else p for p in pos]
            acts.query = self._capture(m, prompts, qsites, "last", progress, **self._format(data, responses=False))
        if getattr(self.editor, "uses_bank", False):  # ITI's sigma_over="bank": σ from the data's σ texts
            bank = getattr(data, "bank", None)
            if not bank:
                raise PipelineError("the editor takes sigma from a bank of texts (sigma_over='bank'), but the fitting "
                                    "data has none; use data with a bank (fit task truthfulness-mc)")
            acts.bank = self._capture(m, list(bank), list(dict.fromkeys(selection.modules)), "last", progress,
                                      chat=getattr(data, "chat", None))
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

    def save(self, path, model=None) -> Path:
        """Write the artifact directory atomically (see :mod:`steerlens.pipeline.artifacts`)."""
        return save_steerer(self, path, model=model)

    def __call__(self, model, prompts: Sequence[str], alpha: Optional[float] = None) -> list[Edit]:
        return self.edits(model, prompts, alpha)

    def __repr__(self) -> str:
        return (f"Steerer(method={self.method!r}, alpha={self.alpha}, selector={self.selector!r}, "
                f"gate={self.gate!r}, editor={self.editor!r}, fitted={self.fitted})")


class Composition:
    """Steerers acting together; ``alpha`` (when given) must be one value per steerer."""

    def __init__(self, steerers: Sequence, name: Optional[str] = None) -> None:
        self.steerers = list(steerers)
        if not self.steerers:
            raise PipelineError("a composition needs at least one steerer")
        for st in self.steerers:
            if not callable(getattr(st, "edits", None)):
                raise PipelineError(f"{type(st).__name__} is not a steerer (no edits(model, prompts, alpha))")
        self.name = name or "+".join(str(getattr(s, "name", None) or getattr(s, "method", "steerer"))
                                     for s in self.steerers)

    def edits(self, model, prompts=None, alpha: Optional[float | Sequence[float]] = None) -> list[Edit]:
        if alpha is None:
            alphas = [None] * len(self.steerers)
        elif isinstance(alpha, (int, float)):
            alphas = [float(alpha)] * len(self.steerers)
        else:
            alphas = [float(a) for a in alpha]
            if len(alphas) != len(self.steerers):
                raise PipelineError(f"{len(alphas)} strengths for {len(self.steerers)} steerers")
        out: list[Edit] = []
        for st, a in zip(self.steerers, alphas):
            out += list(st.edits(model, prompts, alpha=a))
        return out

    def __repr__(self) -> str:
        return f"Composition({self.name!r}, {len(self.steerers)} steerers)"


def load_steerer(path: Union[str, os.PathLike], model=None, *, check_model: bool = True) -> Steerer:
    """Load a steerer saved by :meth:`Steerer.save` (:func:`~steerlens.pipeline.artifacts.save_steerer`).

    With ``model``, the artifact must have been fitted on the same model (architecture, sizes,
    weight and tokenizer checksums); otherwise an :class:`ArtifactError` lists what differs.
    ``check_model=False`` skips the weight/tokenizer checksum comparison (sizes are still checked
    through the sites), for deliberately transferring a steerer.
    """
    d = Path(path)
    meta, tensors = read_artifact(d)
    load_plugins()  # the role kinds an artifact names are registered by the method packages
    try:
        steerer = Steerer.from_state(meta["config"], tensors)
    except (KeyError, TypeError, PipelineError, SiteError) as e:
        raise ArtifactError(f"artifact {d}: cannot rebuild the steerer: {e} (it may come from another "
                            "steerlens version: refit it with `steerlens fit`)") from e
    steerer.model_fingerprint = meta["model"]
    if model is not None:
        m = as_model(model)
        check_model_fits(d, meta, m, check_weights=check_model)
        try:
            steerer.editor.check_model(m)
        except (SiteError, PipelineError) as e:
            raise ArtifactError(f"artifact {d} does not fit this model: {e}") from e
    return steerer


__all__ = ["Steerer", "Composition", "load_steerer"]
