"""Sharing work between the configurations of one evaluation (:func:`~.report.run_eval`).

Every task runs its model passes (generation, response log-likelihoods, next-token
distributions) through one :class:`SharedRuns` when the evaluation has it:

* the **unsteered** pass of an item list is computed once and reused by every configuration that
  needs it (the unsteered configuration itself, the KL reference of every configuration);
* a row whose gates are all closed is the unsteered row bit for bit (the hook layer leaves a
  closed row's activations untouched), so it is copied from the unsteered pass instead of being
  recomputed. The gates are read on the unsteered pass itself (:class:`~steerlens.hooks.GateProbe`:
  the same batches, the same activation at the last prompt token);
* more generally, a row on which some steerers of a configuration are closed is the row of the
  configuration made of the open steerers alone (e.g. ``finesteer+odesteer`` on a prompt where
  FineSteer's gate is closed equals ``odesteer`` there), and is copied from it when that
  configuration was evaluated on the same items;
* the batches that hold a row that cannot be copied run steered, whole, as the full run cuts
  them (:func:`~steerlens.hooks.iter_batches` ``only=``): a row's last bits can depend on the
  shape of its batch (on the tiny test model they do), so a batch is never cut, and a copy is
  only taken from a run over the same items in the same batches. The unit of skipping is
  therefore the batch: smaller batches skip more.

What can be skipped: a steerer (a component of a configuration: the configuration itself, or
each steerer of a composition, anything with ``.steerers``) whose edits all carry a **prompt**
gate (decided once at the last prompt token, held for the whole generation) and no per-input
scale; a closed gate's reading must not depend on another steerer's open edits (no open edit
upstream of its site). Token-level gates can open mid-generation and are never skipped; an
ungated steerer is always open. Plain edit lists are run as given.

Traces (``trace=True``): a copied row carries the trace of the run it was copied from (none for
an unsteered row), not the all-zero records of the closed edits the full run would add.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from ..hooks import GateProbe, Generation, Replies, Trace, generate, next_token_logprobs, response_logprobs
from ..hooks.edits import Edit
from ..hooks.runtime import site_order
from .steering import is_steerer

RUNNERS: dict[str, Callable] = {"generate": generate, "score": response_logprobs, "next": next_token_logprobs}


def _components(steering: Any) -> Optional[list]:
    """The steerers a configuration is made of, or ``None`` when it cannot be taken apart."""
    if steering is None:
        return []
    subs = getattr(steering, "steerers", None)
    if subs is not None and is_steerer(steering):
        return list(subs) if all(is_steerer(s) for s in subs) else None
    return [steering] if is_steerer(steering) else None


class _Comp:
    """One steerer's edits for one item list: its live edits, its gates and whether it can close."""

    def __init__(self, edits: list[Edit]) -> None:
        self.edits = [e for e in edits if not e.is_identity]
        self.gates: list = []
        for e in self.edits:
            if e.gate is not None and all(e.gate is not g for g in self.gates):
                self.gates.append(e.gate)
        self.closable = all(e.gate is not None and e.gate.mode == "prompt" and not e.per_input for e in self.edits)


class SharedRuns:
    """The store of one evaluation (see the module docstring).

    Args:
        model: the model every configuration runs on.
        configs: ``{name: steering}`` of the evaluation (their gates are read on the unsteered pass).
        alpha: the evaluation's strength override (as passed to the tasks).
    """

    def __init__(self, model, configs: Mapping[str, Any], alpha: Optional[float] = None) -> None:
        self.model = model
        self.alpha = alpha
        self.steerers: list = []  # every component of every configuration, each once
        for st in configs.values():
            for c in _components(st) or []:
                if all(c is not s for s in self.steerers):
                    self.steerers.append(c)
        self._comp: dict[tuple, list[_Comp]] = {}      # items key -> per steerer
        self._base: dict[tuple, tuple] = {}            # items key -> (per-row results, probe, trace by row)
        self._done: dict[tuple, dict] = {}             # (items key, open-set key) -> {row: (result, trace)}
        self.stats: dict[str, int] = {"rows": 0, "run": 0, "copied_unsteered": 0, "copied_other": 0}

    # -- keys -----------------------------------------------------------------------------------------
    @staticmethod
    def _items_key(kind: str, items: Sequence, kw: dict) -> tuple:
        return (kind, json.dumps([list(x) if isinstance(x, tuple) else x for x in items]),
                json.dumps(kw, sort_keys=True, default=str))

    def _ckey(self, st: Any) -> tuple:
        return (id(st), None if self.alpha is None else float(self.alpha))

    # -- per item list ----------------------------------------------------------------------------
    def _comps(self, ikey: tuple, items: Sequence) -> list[_Comp]:
        if ikey not in self._comp:
            from .tasks import edits_for  # the tasks' own expansion to one entry per item

            prompts = [x[0] if isinstance(x, (tuple, list)) else x for x in items]
            self._comp[ikey] = [_Comp(edits_for(st, self.model, prompts, self.alpha)) for st in self.steerers]
        return self._comp[ikey]

    def _unsteered(self, kind: str, ikey: tuple, items: Sequence, kw: dict):
        if ikey not in self._base:
            comps = self._comps(ikey, items)
            gates = [g for c in comps if c.closable for g in c.gates]
            # read where the configuration's own run reads it: in the pre-pass when downstream of its edits
            pre = [any(site_order(g.site) > site_order(e.site) for c in comps for e in c.edits if e.gate is g)
                   for g in gates]
            probe = GateProbe(gates, pre) if gates else None
            res = RUNNERS[kind](self.model, items, [], probe=probe, **kw)
            rows = list(res) if kind != "next" else list(res.unbind(0))
            traces = _trace_by_row(res, len(items))
            self._base[ikey] = (rows, probe, {id(g): k for k, g in enumerate(gates)}, traces)
        return self._base[ikey]

    # -- the entry point --------------------------------------------------------------------------------
    def run(self, kind: str, steering: Any, items: Sequence, edits: Sequence[Edit], *, progress: bool = False,
            **kw):
        """What ``RUNNERS[kind](model, items, edits, **kw)`` returns, sharing what can be shared.
        ``edits`` are the configuration's edits for ``items`` (``tasks.edits_for``)."""
        items = list(items)
        want_details = bool(kw.pop("return_details", False))
        ikey = self._items_key(kind, items, kw)
        kw = dict(kw, progress=progress, **({"return_details": True} if kind == "generate" else {}))
        parts = _components(steering)
        if parts is None:  # not taken apart: run it as given
            return RUNNERS[kind](self.model, items, edits, **dict(kw, **({"return_details": want_details}
                                                                        if kind == "generate" else {})))
        base_rows, probe, gate_idx, base_trace = self._unsteered(kind, ikey, items, kw)
        if not parts:
            self.stats["rows"] += len(items)
            self.stats["copied_unsteered"] += len(items)
            return _assemble(kind, [(r, base_trace.get(i, [])) for i, r in enumerate(base_rows)], want_details,
                             kw.get("trace", False))
        comps_all = self._comps(ikey, items)
        comps = [comps_all[next(k for k, s in enumerate(self.steerers) if s is p)] for p in parts]
        keys = [self._ckey(p) for p in parts]
        full_key = tuple(keys)
        names = [g.name for c in comps for g in c.gates]
        n = len(items)
        closed = torch.zeros(len(comps), n, dtype=torch.bool)
        if len(set(names)) == len(names):  # gates named alike would share one entry of Generation.gates
            for k, c in enumerate(comps):
                if not c.edits:  # every edit at strength 0
                    closed[k] = True
                elif c.closable and probe is not None:
                    assert probe.scale is not None
                    closed[k] = (probe.scale[[gate_idx[id(g)] for g in c.gates]] == 0).all(0)
        done = self._done.setdefault((ikey, full_key), {})
        plan: dict[int, tuple] = {}  # row -> source
        for r in range(n):
            if r in done:
                continue
            open_k = [k for k in range(len(comps)) if not closed[k, r]]
            if len(open_k) == len(comps) or not self._independent(comps, open_k):
                continue
            src_key = tuple(keys[k] for k in open_k)
            if not open_k:
                plan[r] = ("base",)
            elif r in self._done.get((ikey, src_key), {}):
                plan[r] = ("other", src_key)
        todo = [r for r in range(n) if r not in done and r not in plan]
        ran = 0
        if todo:  # the batches holding these rows, whole: every row of them is the full run's
            res = RUNNERS[kind](self.model, items, edits, only=todo, **kw)
            tr = _trace_by_row(res, n)
            for r, x in enumerate(res):
                if x is not None:
                    done[r], ran = (x, tr.get(r, [])), ran + 1
        self.stats["rows"] += n
        self.stats["run"] += ran
        for r, src in plan.items():
            if r in done:
                continue
            if src[0] == "base":
                x, t = base_rows[r], base_trace.get(r, [])
                self.stats["copied_unsteered"] += 1
            else:
                x, t = self._done[(ikey, src[1])][r]
                self.stats["copied_other"] += 1
            if kind == "generate":
                x = _regate(x, comps, closed[:, r], probe, gate_idx, r)
            done[r] = (x, t)
        return _assemble(kind, [done[r] for r in range(n)], want_details, kw.get("trace", False))

    @staticmethod
    def _independent(comps: list[_Comp], open_k: list[int]) -> bool:
        """No open edit sits upstream of a closed steerer's gate (its reading is the unsteered one)."""
        for k, c in enumerate(comps):
            if k in open_k:
                continue
            for g in c.gates:
                if any(site_order(e.site) < site_order(g.site) for j in open_k for e in comps[j].edits):
                    return False
        return True


def _trace_by_row(res, n: int) -> dict[int, list]:
    tr = res.trace if isinstance(res, Replies) else None
    out: dict[int, list] = {}
    if tr is not None:
        for rec in tr.records:
            out.setdefault(int(rec["input"]), []).append(rec)
    return out


def _regate(g: Generation, comps: list[_Comp], closed_r: torch.Tensor, probe: Optional[GateProbe],
            gate_idx: dict, r: int) -> Generation:
    """The copied generation with the gates of the whole configuration, in the run's order: a
    closed steerer's gates as read on the unsteered pass, an open one's as the source run read them."""
    gates = {}
    for k, c in enumerate(comps):
        for gate in c.gates:
            if closed_r[k]:
                assert probe is not None and probe.score is not None and probe.scale is not None
                i = gate_idx[id(gate)]
                gates[gate.name] = {"score": float(probe.score[i, r]), "scale": float(probe.scale[i, r])}
            else:
                gates[gate.name] = g.gates[gate.name]
    return Generation(prompt=g.prompt, text=g.text, token_ids=list(g.token_ids), finished=g.finished, gates=gates,
                      logprobs=None if g.logprobs is None else list(g.logprobs))


def _assemble(kind: str, rows: list[tuple], details: bool, trace: bool):
    if kind == "next":
        return torch.stack([x for x, _ in rows])
    if kind == "score":
        return [x for x, _ in rows]
    gens = [x for x, _ in rows]
    out = Replies(gens if details else [g.text for g in gens])
    out.trace = Trace([t for _, ts in rows for t in ts]) if trace else None
    return out


__all__ = ["SharedRuns", "RUNNERS"]
