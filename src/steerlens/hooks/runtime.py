"""The hook layer's engine: one :class:`Run` per batch of a generate / score / capture call.

A run owns everything that lives for one batch: which forward call this is (the prompt pass is
step 0, each cached decode call one more), every gate's score and scale per row (and per token
for token gates), each edit's per-row scratch state, and, when tracing, the per-token records.
It builds one hook function per hook point that

1. evaluates the gates that read at this hook (on the incoming activation),
2. applies the edits at this hook: ``act + alpha · scale · gate · mask · delta(act, info)``,
   on the edit's position window only,

and attaches them with :func:`attach`, which removes exactly the handles it added — also when a
hook raises in the middle of ``generate``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Callable, Iterator, Optional, Sequence

import torch

from .batching import Batch
from .edits import Edit, EditError, TokenInfo, take_edits
from .gates import HookGate
from .sites import Site

HookFn = Callable[..., torch.Tensor]

#: Order of hook kinds inside one block (a reader at a lower rank runs earlier in the forward pass),
#: as the bridge calls them: resid_pre, q, k, v, pattern, z, attn_out, resid_mid, mlp_pre, mlp_post,
#: mlp_out, resid_post.
KIND_RANK = {"resid_pre": 0, "q": 0.2, "k": 0.4, "v": 0.6, "pattern": 0.8, "z": 1, "attn_out": 1.5,
             "resid_mid": 2, "mlp_pre": 2.3, "mlp_post": 2.6, "mlp_out": 2.8, "resid_post": 3}


class HookLeakError(RuntimeError):
    """Hooks survived the context that attached them (should never happen)."""


class StopForward(Exception):
    """Raised by a hook once everything a pass needs has been read (the rest is skipped)."""


def site_order(site: Site) -> tuple[int, float]:
    """Position of a site in the forward pass: ``(layer, rank of the hook kind)``."""
    return (site.layer, KIND_RANK.get(site.kind, 1))


# ------------------------------------------------------------------------------------------------
# attaching hooks with guaranteed cleanup
# ------------------------------------------------------------------------------------------------

def _hook_point(model, name: str):
    hp = model.hook_dict.get(name)
    if hp is None:
        raise EditError(f"hook {name!r} does not exist on this model")
    return hp


def count_hooks(model) -> int:
    """Number of forward/backward hook functions attached to the model's hook points.

    Counts the torch-level hooks of every hook point, so a hook added by any path (ours, the
    bridge's ``hooks()`` context, or a raw ``register_forward_hook``) is seen."""
    from ..models import as_model

    m = as_model(model)
    unique = {id(hp): hp for hp in m.hook_dict.values()}  # aliases name one hook point twice
    return sum(len(getattr(hp, "_forward_hooks", {})) + len(getattr(hp, "_backward_hooks", {}))
               for hp in unique.values())


def _remove(hp, handle) -> None:
    handle.hook.remove()
    hp.fwd_hooks[:] = [h for h in hp.fwd_hooks if h is not handle]


@contextlib.contextmanager
def attach(model, hooks: Sequence[tuple[str, HookFn]]) -> Iterator:
    """Attach ``(hook_name, fn)`` forward hooks for the duration of the block.

    Exactly the handles added here are removed on exit (also when the body or a hook raises);
    hooks that other code attached to the same hook points stay. If a handle cannot be removed
    the block raises :class:`HookLeakError` naming it.
    """
    from ..models import as_model

    m = as_model(model)
    added: list[tuple[str, object, object]] = []
    try:
        for name, fn in hooks:
            hp = _hook_point(m, name)
            added.append((name, hp, hp.add_hook(fn, dir="fwd")))
        yield m
    finally:
        errors = []
        for name, hp, handle in reversed(added):
            try:
                _remove(hp, handle)
            except Exception as e:  # noqa: BLE001 - keep removing the others
                errors.append(f"{name}: {e!r}")
        left = sorted({name for name, hp, handle in added if any(h is handle for h in getattr(hp, "fwd_hooks", []))})
        if errors or left:
            raise HookLeakError(f"hooks could not be removed from {left or errors}")


# ------------------------------------------------------------------------------------------------
# one batch
# ------------------------------------------------------------------------------------------------

def _bview(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """``[b]`` or ``[b, t]`` → broadcastable to a ``[b, t, ...]`` tensor of ``ndim`` dims."""
    if x.ndim == 1:
        x = x[:, None]
    return x.view(*x.shape, *([1] * (ndim - x.ndim)))


class Run:
    """Everything that lives for one batch; see the module docstring.

    Args:
        edits: the batch's edits (per-input ones already cut to the batch with ``take``).
        rows: ``[b]`` index of each batch row among the caller's inputs.
        prompt_last: ``[b]`` column of each row's last prompt token in the first forward call
            (``None`` outside steerlens's runners: edits on the last prompt token then use the
            last column).
        trace: record per-token values of every edit (see :mod:`steerlens.hooks.trace`).
        probes: prompt gates read in the pass (at the last prompt token, on the activation that
            arrives at their hook) that control no edit; :meth:`probe_decisions` has their
            readings. The evaluation reads other configurations' gates on its unsteered pass.
        probe_prepass: per probe, read it in the pre-pass (as a gate downstream of its edit is).
    """

    def __init__(self, edits: Sequence[Edit], *, rows: Optional[torch.Tensor] = None,
                 prompt_last: Optional[torch.Tensor] = None, trace: bool = False,
                 probes: Sequence[HookGate] = (), probe_prepass: Sequence[bool] = ()) -> None:
        self.edits = [e for e in edits if not e.is_identity]
        self.rows = rows
        self.prompt_last = prompt_last
        self.trace = bool(trace)
        self.gates: list[HookGate] = []
        for e in self.edits:
            g = e.gate
            if g is not None and all(g is not x for x in self.gates):
                self.gates.append(g)
        self._n_edit_gates = len(self.gates)  # gate_decisions reports these; probes come after
        self.probes = list(probes)
        for g in self.probes:
            if g.mode != "prompt":
                raise EditError(f"gate probe {g.name} at {g.site}: only prompt gates can be probed")
            if all(g is not x for x in self.gates):
                self.gates.append(g)
        self._gid = {id(g): i for i, g in enumerate(self.gates)}
        # prompt gates downstream of one of their edits are read in a pre-pass
        self.prepass_gates: list[HookGate] = []
        for g in self.gates:
            edits_of = [e for e in self.edits if e.gate is g]
            downstream = any(site_order(g.site) > site_order(e.site) for e in edits_of)
            if downstream and g.mode == "token":
                raise EditError(f"token gate {g.name} at {g.site} sits downstream of an edit it controls "
                                f"({[str(e.site) for e in edits_of]}); put the gate at or before the edit's layer")
            if downstream:
                self.prepass_gates.append(g)
        for g, pre in zip(self.probes, probe_prepass):
            if pre and all(g is not x for x in self.prepass_gates):
                self.prepass_gates.append(g)
        self.in_prepass = False
        self.calls: dict[str, int] = defaultdict(int)
        self.gate_score: dict[int, torch.Tensor] = {}
        self.gate_scale: dict[int, torch.Tensor] = {}
        self.gate_state: dict[int, dict] = defaultdict(dict)
        self.edit_state: dict[int, dict] = defaultdict(dict)
        self.records: list[tuple[int, int, dict[str, torch.Tensor]]] = []
        self._pl_cols: dict[tuple[int, str], torch.Tensor] = {}

    # -- what the runners ask ------------------------------------------------------------------
    @property
    def needs_prepass(self) -> bool:
        return bool(self.prepass_gates)

    def hooks(self) -> list[tuple[str, HookFn]]:
        """One hook function per hook point used by an edit or a gate of this run."""
        return self._hooks(prepass=False)

    def prepass_hooks(self) -> list[tuple[str, HookFn]]:
        """Hooks of the pre-pass: the pre-pass gates read (and the pass stops after the deepest),
        edits that do not wait for a pre-pass gate apply."""
        return self._hooks(prepass=True)

    @contextlib.contextmanager
    def prepass(self) -> Iterator[None]:
        self.in_prepass = True
        try:
            yield
        except StopForward:
            pass
        finally:
            self.in_prepass = False
            self.calls.clear()
            self.edit_state.clear()
            self.records.clear()

    def gate_decisions(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per gate: ``score`` and ``scale`` per row (``[b]``) — held for prompt gates; the last
        token's for token gates."""
        out = {}
        for g in self.gates[:self._n_edit_gates]:
            i = self._gid[id(g)]
            if i not in self.gate_score:
                continue
            s, c = self.gate_score[i], self.gate_scale[i]
            if s.ndim == 2:
                s, c = s[:, -1], c[:, -1]
            out[g.name] = {"score": s.detach().float().cpu(), "scale": c.detach().float().cpu()}
        return out

    def probe_decisions(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(score, scale)`` per row (``[b]``, float32 on the CPU) of every probe, in order."""
        out = []
        for g in self.probes:
            i = self._gid[id(g)]
            if i not in self.gate_score:
                raise EditError(f"gate probe {g.name} at {g.site} was not read (its hook was not reached)")
            out.append((self.gate_score[i].detach().float().cpu(), self.gate_scale[i].detach().float().cpu()))
        return out

    # -- building the hook functions -------------------------------------------------------------
    def _hooks(self, prepass: bool) -> list[tuple[str, HookFn]]:
        by_hook: dict[str, dict] = {}

        def slot(name: str) -> dict:
            return by_hook.setdefault(name, {"gates": [], "sites": {}})

        stop_at = None
        if prepass:
            deepest = max(self.prepass_gates, key=lambda g: site_order(g.site))
            stop_at, limit = deepest.site.hook_name, site_order(deepest.site)
            waiting = {id(g) for g in self.prepass_gates}
            gates = [g for g in self.gates if site_order(g.site) <= limit]
            edits = [i for i, e in enumerate(self.edits) if site_order(e.site) <= limit
                     and not (e.gate is not None and id(e.gate) in waiting)]
            slot(stop_at)
        else:
            gates = [g for g in self.gates if all(g is not p for p in self.prepass_gates)]
            edits = list(range(len(self.edits)))
        for g in gates:
            slot(g.site.hook_name)["gates"].append(g)
        for i in edits:
            e = self.edits[i]
            slot(e.site.hook_name)["sites"].setdefault(e.site, []).append(i)
        return [(name, self._make_hook(name, spec["gates"], list(spec["sites"].items()), stop=name == stop_at))
                for name, spec in by_hook.items()]

    def _make_hook(self, name: str, gates: list[HookGate], sites: list[tuple[Site, list[int]]], stop: bool) -> HookFn:
        # attention patterns arrive as [b, heads, q_pos, k_pos]: gates and edits see [b, q_pos, heads, k_pos]
        transposed = any(s.is_pattern for s, _ in sites) or any(g.site.is_pattern for g in gates)

        def fn(act: torch.Tensor, hook=None) -> torch.Tensor:
            step = self.calls[name]
            self.calls[name] = step + 1
            if transposed:
                act = act.transpose(1, 2)
            for g in gates:
                self._eval_gate(g, act, step)
            for site, idx in sites:
                for i in idx:
                    act = self._apply(i, site, act, step)
            if stop:
                raise StopForward
            return act.transpose(1, 2) if transposed else act

        return fn

    # -- gates -------------------------------------------------------------------------------------
    def _site_part(self, site: Site, act: torch.Tensor) -> torch.Tensor:
        return act[:, :, list(site.heads)] if site.heads is not None else act

    def _eval_gate(self, g: HookGate, act: torch.Tensor, step: int) -> None:
        i = self._gid[id(g)]
        part = self._site_part(g.site, act)
        if g.mode == "prompt":
            if step > 0:
                return
            col = self._prompt_cols(part.shape[0], part.shape[1], part.device)
            x = part[torch.arange(part.shape[0], device=part.device), col].unsqueeze(1)  # [b, 1, ...]
            s = g.checked_score(x)[:, 0]
            self.gate_score[i], self.gate_scale[i] = s, g.scale_of(s).clamp(0, 1)
        else:
            s = g.checked_score(part)
            self.gate_score[i], self.gate_scale[i] = s, g.update(s, self.gate_state[i]).clamp(0, 1)

    def _prompt_cols(self, b: int, t: int, device) -> torch.Tensor:
        """``[b]`` column of each row's last prompt token in a prompt-pass activation of ``t`` columns."""
        if self.prompt_last is None:
            return torch.full((b,), t - 1, dtype=torch.long, device=device)
        pl = self._pl_cols.get((t, str(device)))  # layers of a dispatched model sit on several devices
        if pl is None:
            pl = self.prompt_last.to(device=device, dtype=torch.long)
            if pl.shape[0] != b:
                raise EditError(f"batch of {b} rows but prompt boundaries for {pl.shape[0]}")
            if (pl >= t).any():
                raise EditError(f"prompt boundary {int(pl.max())} outside an activation of {t} positions")
            self._pl_cols[(t, str(device))] = pl
        return pl

    # -- edits ---------------------------------------------------------------------------------------
    def _window(self, positions: str, step: int, b: int, t: int, device):
        """``(columns, mask, prompt_last_in_part)``: a slice of the call's columns, an optional
        ``[b, t']`` mask inside it, and the last prompt token's column inside it (prompt pass)."""
        if step == 0:
            pl = self._prompt_cols(b, t, device)
            if positions == "all":
                return slice(None), None, pl
            if self.prompt_last is None or bool((pl == t - 1).all()):
                return slice(t - 1, t), None, torch.zeros_like(pl)
            lo = int(pl.min())
            cols = torch.arange(lo, t, device=device)
            mask = cols[None, :] >= pl[:, None]
            return slice(lo, t), mask, pl - lo
        if t == 1 or positions == "all":
            return slice(None), None, None
        if positions == "current_last" or self.prompt_last is None:
            return slice(t - 1, t), None, None  # decoding without a KV cache: the newest column
        pl = self._prompt_cols(b, t, device)
        lo = int(pl.min())
        cols = torch.arange(lo, t, device=device)
        return slice(lo, t), cols[None, :] >= pl[:, None], None

    def _apply(self, i: int, site: Site, act: torch.Tensor, step: int) -> torch.Tensor:
        e = self.edits[i]
        b, t = act.shape[0], act.shape[1]
        cols, mask, pl = self._window(e.positions, step, b, t, act.device)
        heads = list(site.heads) if site.heads is not None else None  # heads or neurons (axis 2)
        whole = cols == slice(None) and heads is None
        part = act if whole else act[:, cols]
        if heads is not None:
            part = part[:, :, heads]
        rows = self.rows if self.rows is not None else torch.arange(b)
        info = TokenInfo(rows=rows, step=step, prompt_last=pl, mask=mask, state=self.edit_state[i],
                         tracing=self.trace)
        d = e.delta(part, info)
        if d.dtype != part.dtype or d.device != part.device:  # the edit follows the activation (device_map, bf16)
            d = d.to(device=part.device, dtype=part.dtype)
        coef = self._coef(e, part, cols, step)
        if coef is None:
            new = part + d if e.alpha == 1.0 else part + e.alpha * d
            keep = mask
        else:
            new = part + coef * d
            open_ = coef != 0
            keep = open_ if mask is None else (open_ & _bview(mask, part.ndim))
        if keep is not None:
            new = torch.where(_bview(keep, part.ndim) if keep.ndim < part.ndim else keep, new, part)
        if self.trace:
            self._record(e, i, part, new, info, step, cols, pl)
        if whole:
            return new if new.shape == act.shape else new.expand_as(act).clone()
        out = act.clone()
        if heads is None:
            out[:, cols] = new
        else:
            out[:, cols, torch.tensor(heads, device=act.device)] = new
        return out

    def _coef(self, e: Edit, part: torch.Tensor, cols, step: int) -> Optional[torch.Tensor]:
        """``alpha · scale · gate`` as a ``[b, t']``-broadcastable tensor, or ``None`` when it is
        the plain strength (no per-row factor)."""
        factors = []
        if e.scale is not None:
            s = e.scale.to(part.device, part.dtype)
            if s.shape[0] != part.shape[0]:
                raise EditError(f"{e.site}: {s.shape[0]} per-input scales but the batch has {part.shape[0]} inputs")
            factors.append(s[:, None])
        if e.gate is not None:
            gi = self._gid[id(e.gate)]
            if gi not in self.gate_scale:
                raise EditError(f"gate {e.gate.name} at {e.gate.site} was not evaluated before the edit at {e.site}")
            g = self.gate_scale[gi].to(part.device, part.dtype)
            factors.append(g[:, None] if g.ndim == 1 else g[:, cols])
        if not factors:
            return None
        c = factors[0]
        for f in factors[1:]:
            c = c * f
        return _bview(c * e.alpha, part.ndim)

    # -- trace -----------------------------------------------------------------------------------------
    def _record(self, e: Edit, i: int, part: torch.Tensor, new: torch.Tensor, info: TokenInfo, step: int,
                cols, pl) -> None:
        b = part.shape[0]
        col = pl if (step == 0 and pl is not None) else torch.full((b,), part.shape[1] - 1, dtype=torch.long,
                                                                   device=part.device)
        ar = torch.arange(b, device=part.device)
        applied = (new - part)[ar, col].reshape(b, -1).float().norm(dim=-1)
        vals: dict[str, torch.Tensor] = {"delta_norm": applied}
        if e.gate is not None:
            gi = self._gid[id(e.gate)]
            s, c = self.gate_score[gi].to(part.device), self.gate_scale[gi].to(part.device)
            if s.ndim == 2:
                full_col = col + (cols.start or 0) if isinstance(cols, slice) else col
                s, c = s[ar, full_col], c[ar, full_col]
            vals["gate_score"], vals["gate_scale"] = s.float(), c.float()
        for k, (v, per_token) in info.values.items():
            v = v.float()
            vals[k] = v[ar, col] if per_token else v
        self.records.append((step, i, {k: v.detach().cpu() for k, v in vals.items()}))


def _forward(m, batch: Batch) -> None:
    m.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
               use_cache=False, logits_to_keep=1)


@contextlib.contextmanager
def batch_run(m, edits: Sequence[Edit], batch: Batch, *, trace: bool = False,
              extra_hooks: Sequence = (), probes: Sequence[HookGate] = (),
              probe_prepass: Sequence[bool] = ()) -> Iterator[Run]:
    """Attach the hooks of one batch's :class:`~steerlens.hooks.runtime.Run` (after its pre-pass,
    when a prompt gate sits downstream of its edits); ``extra_hooks`` go after the edits;
    ``probes`` are gates read in the pass that control no edit (:meth:`Run.probe_decisions`)."""
    run = Run(take_edits(edits, batch.rows.cpu()), rows=batch.rows, prompt_last=batch.prompt_last, trace=trace,
              probes=probes, probe_prepass=probe_prepass)
    if run.needs_prepass:
        with run.prepass(), attach(m, run.prepass_hooks()):
            _forward(m, batch)
    with attach(m, run.hooks() + list(extra_hooks)):
        yield run


__all__ = ["Run", "batch_run", "attach", "count_hooks", "HookLeakError", "StopForward", "site_order", "KIND_RANK"]
