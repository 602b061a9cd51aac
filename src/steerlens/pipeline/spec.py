"""Pipelines as files: a TOML spec names the steerers (selector, gate, editor and their
parameters, fitting data) and the evaluation. This module reads specs and builds and fits their
steerers; :mod:`steerlens.pipeline.specrun` runs them (:func:`~steerlens.pipeline.specrun.run_spec`
fits, saves, evaluates and writes results, plots and traces;
:func:`~steerlens.pipeline.specrun.ablate` runs a grid of variations on the same splits).

A spec::

    name = "finesteer-safety"

    [[steerer]]                        # one or more; several act together in one generation
    name = "safety"
    selector = { kind = "fixed", modules = ["blocks.14.hook_resid_post"] }   # or "real", "iti"
    gate = "scs"                       # a short name, or a role table { kind = "...", ... }
    editor = "caa"                     # caa | repe | iti | ... (see `steerlens methods --roles`)
    alpha = 1.0
    fit = { task = "safety", n = 100 } # a fit task of steerlens.pipeline.fitdata (data + gate data)

    [[steerer]]                        # a method with a named parameter set (`steerlens methods` lists them)
    method = "odesteer"
    preset = "paper"                   # the authors' settings (docs/fidelity.md); params/alpha override it
    fit = { task = "truthfulness" }

    [[baseline]]                       # optional: evaluated next to the pipeline, e.g. plain CAA
    name = "caa"
    method = "caa"                     # a registered method, with its parameters
    params = { layer = 14 }
    alpha = 1.0
    fit = { task = "safety" }

    [eval]
    tasks = ["safety", "truthfulness", "utility"]
    limit = 48                         # examples per eval set (None: the eval defaults)
    split = "test"
    max_new_tokens = 48
    trace = true                       # per-token trace of the safety replies
    options = { safety = { sets = ["harmful", "harmless"] } }   # keyword arguments per eval task

A steerer is either a registered ``method`` (+ ``params``) whose roles may be overridden by
``selector`` / ``gate`` / ``editor``, or the three roles alone. Short role names come from
:data:`~steerlens.pipeline.roles.ROLE_ALIASES` (each method package adds its own with
:func:`~steerlens.pipeline.roles.register_role_alias`). A role may take defaults from the editor
it is paired with (:func:`~steerlens.pipeline.roles.register_spec_defaults`): with the selector
``"real"`` REAL scores the residual layers for a residual editor (and keeps one), the heads for a
head editor.

Evaluated configurations: ``unsteered``, each baseline, each steerer alone (when there are
several) and all steerers together under the spec's ``name``.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import parallel
from ..fileio import parse_value
from .errors import PipelineError
from .fitdata import FIT_TASKS, fit_data, gate_data
from .registry import available_methods, fit_gate_task, fit_size, load_plugins, make_steerer, preset_params
from .roles import ROLE_ALIASES, ROLE_TYPES, ROLES, SPEC_DEFAULTS, Role, register_role_alias
from .steerer import Steerer

class SpecError(PipelineError):
    """A pipeline spec that cannot be read or built."""


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------

#: the keys of a steerer's ``fit`` table (what :func:`fit_steerer` reads)
FIT_KEYS = frozenset({"task", "n", "seed", "gate_task", "gate_n"})
#: parameters every method takes besides its factory's own (``make_steerer`` gates any method)
GATE_KEYS = frozenset({"gate", "gate_params"})


def _check_method_params(st: dict, where: str) -> None:
    """A named method must exist and its ``params`` must be its factory's (listed when not)."""
    method = st.get("method")
    if not method:
        return
    methods = available_methods()
    if method not in methods:
        raise SpecError(f"{where}: unknown method {method!r}; available: {sorted(methods)}")
    factory = methods[method].factory
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()):
        return  # a factory that takes any keyword checks its own
    known = set(methods[method].parameters()) | GATE_KEYS
    bad = sorted(set(st.get("params") or {}) - known)
    if bad:
        raise SpecError(f"{where}: unknown params {bad} for method {method!r}; known: {sorted(known)}")


def check_variants(spec: dict, vary: Sequence[tuple[str, list[Any]]]) -> None:
    """Every variant of an ablation grid is a valid spec (unknown keys, params and methods are
    refused with the known ones listed) — called before any model is loaded."""
    for name, v in variants(spec, vary).items():
        try:
            normalise_spec(v, source=f"--vary {name}")
        except SpecError as e:
            raise SpecError(f"{e} (a --vary key sets a steerer key, params.KEY, fit.KEY or NAME.KEY)") from None


def read_spec(path: str | os.PathLike) -> dict:
    """The spec as a dict (``tomllib``), checked for its top-level shape."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"no spec file at {p}")
    try:
        spec = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: not valid TOML ({e})") from e
    return normalise_spec(spec, source=str(p))


def normalise_spec(spec: dict, source: str = "spec") -> dict:
    spec = copy.deepcopy(spec)
    known = {"name", "model", "steerer", "baseline", "eval", "seed", "description"}
    bad = sorted(set(spec) - known)
    if bad:
        raise SpecError(f"{source}: unknown top-level keys {bad}; known: {sorted(known)}")
    if not spec.get("steerer"):
        raise SpecError(f"{source}: no [[steerer]] table")
    spec.setdefault("name", Path(source).stem if source != "spec" else "pipeline")
    spec.setdefault("baseline", [])
    spec.setdefault("eval", {})
    for kind in ("steerer", "baseline"):
        names = set()
        for i, st in enumerate(spec[kind]):
            st.setdefault("name", st.get("method") or f"{kind}{i}")
            if st["name"] in names:
                raise SpecError(f"{source}: two {kind}s named {st['name']!r}")
            names.add(st["name"])
            keys = {"name", "method", "preset", "params", "selector", "gate", "editor", "alpha", "fit"}
            extra = sorted(set(st) - keys)
            if extra:
                raise SpecError(f"{source}: {kind} {st['name']!r} has unknown keys {extra}; known: {sorted(keys)}")
            if not st.get("method") and not (st.get("selector") and st.get("editor")):
                raise SpecError(f"{source}: {kind} {st['name']!r} needs a method, or a selector and an editor")
            _check_method_params(st, f"{source}: {kind} {st['name']!r}")
            if st.get("preset") is not None:
                if not st.get("method"):
                    raise SpecError(f"{source}: {kind} {st['name']!r}: preset needs a method")
                try:
                    preset_params(st["method"], st["preset"])
                except PipelineError as e:
                    raise SpecError(f"{source}: {kind} {st['name']!r}: {e}") from None
            if "task" not in st.get("fit", {}):
                raise SpecError(f"{source}: {kind} {st['name']!r} needs fit = {{ task = ... }}")
            bad = sorted(set(st["fit"]) - FIT_KEYS)
            if bad:
                raise SpecError(f"{source}: {kind} {st['name']!r} has unknown fit keys {bad}; known: {sorted(FIT_KEYS)}")
            if st["fit"]["task"] not in FIT_TASKS:
                raise SpecError(f"{source}: {kind} {st['name']!r}: unknown fit task {st['fit']['task']!r}; "
                                f"fit tasks: {sorted(FIT_TASKS)}")
    ev_keys = {"tasks", "limit", "split", "seed", "seeds", "max_new_tokens", "batch_size", "trace", "judge", "options"}
    bad = sorted(set(spec["eval"]) - ev_keys)
    if bad:
        raise SpecError(f"{source}: unknown [eval] keys {bad}; known: {sorted(ev_keys)}")
    return spec


# ------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------

def _role_table(role: str, value: Any) -> dict:
    if isinstance(value, str):
        table = ROLE_ALIASES.get(role, {}).get(value)
        if table is None:
            if value in ROLE_TYPES:
                return {"kind": value}
            known = sorted(ROLE_ALIASES.get(role, {}))
            raise SpecError(f"unknown {role} {value!r}; short names: {known}, or a table {{ kind = ... }} "
                            f"with a role kind from {sorted(ROLE_TYPES)}")
        return dict(table)
    if isinstance(value, dict) and "kind" in value:
        base = ROLE_ALIASES.get(role, {}).get(value["kind"])
        return {**(base or {}), **value, "kind": (base or value)["kind"]}
    raise SpecError(f"{role} must be a short name or a table with a 'kind', got {value!r}")


def build_role(role: str, value: Any, *, editor: Optional[Role] = None) -> Role:
    load_plugins()
    table = _role_table(role, value)
    kind = table.pop("kind")
    cls = ROLE_TYPES.get(kind)
    if cls is None:
        raise SpecError(f"unknown {role} kind {kind!r}; known role kinds: {sorted(ROLE_TYPES)}")
    defaults = SPEC_DEFAULTS.get(kind)
    if defaults is not None:
        for k, v in defaults(editor).items():
            table.setdefault(k, v)
    try:
        return cls(**table)
    except TypeError as e:
        raise SpecError(f"{role} {kind!r}: {e}") from e


def build_steerer(st: dict) -> Steerer:
    """An unfitted :class:`Steerer` from one ``[[steerer]]`` / ``[[baseline]]`` table."""
    alpha = st.get("alpha")
    if st.get("method"):
        if st["method"] not in available_methods():
            raise SpecError(f"unknown method {st['method']!r}; available: {sorted(available_methods())}")
        params = dict(st.get("params", {}))
        if alpha is not None:
            params["alpha"] = alpha
        steerer = make_steerer(st["method"], preset=st.get("preset"), **params)
        if st.get("editor"):
            steerer.editor = build_role("editor", st["editor"])
        if st.get("selector"):
            steerer.selector = build_role("selector", st["selector"], editor=steerer.editor)
        if st.get("gate"):
            steerer = steerer.with_gate(build_role("gate", st["gate"]))
    else:
        editor = build_role("editor", st["editor"])
        selector = build_role("selector", st["selector"], editor=editor)
        gate = build_role("gate", st["gate"]) if st.get("gate") else None
        steerer = Steerer(selector, editor, gate, alpha=1.0 if alpha is None else float(alpha), method="pipeline",
                          method_params={k: st[k] for k in ROLES if k in st})
    steerer.name = st["name"]
    return steerer


def fit_steerer(model, st: dict, *, data_root=None, progress: bool = True) -> Steerer:
    """Build and fit one steerer table on its fitting task's fit split (gate data included)."""
    steerer = build_steerer(st)
    fit = st["fit"]
    n, seed = fit_size(st.get("method"), fit.get("n")), int(fit.get("seed", 0))
    data = fit_data(fit["task"], n, seed, data_root)
    gdata = None
    if not steerer.gate.always_open:
        gdata = gate_data(fit_gate_task(st.get("method"), fit["task"], fit.get("gate_task")), fit.get("gate_n"), seed,
                          data_root)
        if gdata is None:
            raise SpecError(f"steerer {st['name']!r}: task {fit['task']!r} has no gate data; set fit.gate_task")
    steerer.fit(model, data, gate_data=gdata, progress=progress)
    steerer.name = st["name"]
    parallel.check_same(f"steerer {st['name']!r}", steerer.state_dict())  # data-parallel: every rank fitted alike
    return steerer


def _with_seed(table: dict, key: str, default: Any, offset: int) -> None:
    table[key] = int(table.get(key, default if default is not None else 0)) + offset


def _role_seeded(role: str, value: Any, offset: int) -> Any:
    """A role value (short name or table) with its ``seed`` offset, when its kind takes one."""
    table = _role_table(role, value)
    cls = ROLE_TYPES.get(table.get("kind"))
    if cls is None:
        return value
    params = inspect.signature(cls.__init__).parameters
    if "seed" in params:
        _with_seed(table, "seed", params["seed"].default if params["seed"].default is not inspect.Parameter.empty
                   else 0, offset)
    return table


def seeded(spec: dict, seed: int) -> dict:
    """``spec`` with every stochastic step of its fits offset by ``seed``: the fit-data sample
    (``fit.seed``), the method's ``seed`` (autoencoder / router / barrier initialisation, gate
    calibration split) and the ``seed`` of every selector / gate / editor table. ``seed = 0``
    returns the spec unchanged, so seed 0 of ``--seeds K`` is the plain run. The evaluation
    split and its examples do not change with ``seed``: every seed is scored on the same prompts."""
    out = copy.deepcopy(spec)
    if int(seed) == 0:
        return out
    load_plugins()
    for st in out["steerer"] + out["baseline"]:
        _with_seed(st.setdefault("fit", {}), "seed", 0, seed)
        if st.get("method"):
            info = available_methods().get(st["method"])
            if info is not None and "seed" in info.parameters():
                _with_seed(st.setdefault("params", {}), "seed", info.parameters()["seed"], seed)
        for role in ROLES:
            if st.get(role) and st[role] != "none":
                st[role] = _role_seeded(role, st[role], seed)
    return out


# ------------------------------------------------------------------------------------------------
# ablation grids
# ------------------------------------------------------------------------------------------------

def parse_vary(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``["gate=scs,none", "alpha=0.5,1"]`` → ``[("gate", ["scs", "none"]), ("alpha", [0.5, 1])]``."""
    out = []
    for it in items:
        if "=" not in it:
            raise SpecError(f"--vary expects KEY=V1,V2,..., got {it!r}")
        k, vs = it.split("=", 1)
        vals = [parse_value(v.strip()) for v in vs.split(",") if v.strip()]
        if not vals:
            raise SpecError(f"--vary {k}: no values")
        out.append((k.strip(), vals))
    return out


def _set(spec: dict, key: str, value: Any) -> None:
    """Set ``key`` on a steerer: ``gate``, ``params.layer``, ``fit.n``, or ``<steerer name>.gate``."""
    names = {s["name"]: s for s in spec["steerer"]}
    head, _, rest = key.partition(".")
    if head in names and rest:
        target, path = names[head], rest
    else:
        target, path = spec["steerer"][0], key
    parts = path.split(".")
    node = target
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if value in ("none", None) and parts[-1] in ROLES and parts[-1] != "gate":
        raise SpecError(f"{parts[-1]} cannot be 'none'")
    node[parts[-1]] = value


def variants(spec: dict, vary: Sequence[tuple[str, list[Any]]]) -> dict[str, dict]:
    """``{variant name: spec}`` for every combination of the varied values (the base included
    when it is one of them)."""
    out = {}
    for combo in itertools.product(*[vals for _, vals in vary]):
        v = copy.deepcopy(spec)
        name = ",".join(f"{k}={json.dumps(x) if not isinstance(x, str) else x}" for (k, _), x in zip(vary, combo))
        for (k, _), x in zip(vary, combo):
            _set(v, k, x)
        v["name"] = name
        out[name] = v
    return out


__all__ = ["read_spec", "normalise_spec", "check_variants", "FIT_KEYS", "seeded", "build_role", "build_steerer", "fit_steerer", "variants", "parse_vary",
           "register_role_alias", "ROLE_ALIASES", "SpecError"]
