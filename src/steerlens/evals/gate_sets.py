"""The prompt sets of the gate generalisation protocol and the gate data built from them.

:func:`build_eval_sets` draws the protocol's sets (harmful source groups' fit / test splits,
Alpaca, XSTest, OR-Bench, jailbreak wrappers split into fit and held-out families);
:func:`fold_data` gives a fold's gate-fitting prompts (every group but the held-out one, with
hard negatives, fit-family wrappers and source balancing as a gate spec asks); and
:func:`harm_gate_prompts` the full fold a deployed gate is fitted on. The protocol itself
(:mod:`steerlens.interp.gate_eval`) and FineSteer's ``safety-harm`` gate data
(:mod:`steerlens.pipeline.fitdata`) both build on these, so the protocol's figures describe the
gate a steerer fits.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .data import DataError, load_harmless, load_xstest
from .safety_sources import (HARM_SOURCE_GROUPS, load_benign_source, load_harmful_all, load_jailbreak_templates,
                             split_families)

#: per-set sizes (seeded subsamples), sized for a CPU run of a 135M model in well under an hour.
DEFAULT_CAPS = {"harm_fit": 60, "harm_test": 40, "alpaca_fit": 200, "alpaca_val": 200, "alpaca_test": 200,
                "orbench_fit": 100, "orbench_val": 120, "orbench_test": 120, "wrapped_test": 8, "wrapped_benign": 24,
                "aug_harm": 4, "aug_benign": 24}


@dataclass
class EvalSets:
    """Prompt sets of the protocol (each a list of prompt strings, with ids where useful)."""

    harm_fit: dict[str, list[str]]
    harm_test: dict[str, list[str]]
    alpaca: dict[str, list[str]]          # fit / val / test
    xstest: dict[str, list[str]]          # safe_fit, safe_test, unsafe_test
    orbench: dict[str, list[str]]         # hard_fit, hard_test, toxic_test
    wrapped_test: dict[str, list[str]]    # per group: its test prompts in held-out families
    wrapped_benign: list[str]             # Alpaca test prompts in held-out families
    aug_harm: dict[str, list[str]]        # per group: fit prompts in fit families
    aug_benign: list[str]                 # Alpaca fit prompts in fit families
    families: dict[str, list[str]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    #: the look-alikes' *val* splits, read only by the selection rule (:func:`selection_metrics`):
    #: ``xstest_safe_val``, ``xstest_unsafe_val``, ``orbench_hard_val``
    select: dict[str, list[str]] = field(default_factory=dict)

    def all_prompts(self) -> list[str]:
        out: list[str] = []
        for d in (self.harm_fit, self.harm_test, self.alpaca, self.xstest, self.orbench, self.wrapped_test,
                  self.aug_harm):
            for v in d.values():
                out.extend(v)
        out.extend(self.wrapped_benign)
        out.extend(self.aug_benign)
        return list(dict.fromkeys(out))

    @property
    def groups(self) -> list[str]:
        return list(self.harm_fit)


def _wrap_all(prompts: Sequence[str], templates, rng: random.Random) -> list[str]:
    return [rng.choice(templates).wrap(p) for p in prompts]


def build_eval_sets(root: Optional[str | os.PathLike] = None, *, groups: Optional[Sequence[str]] = None,
                    caps: Optional[dict] = None, seed: int = 0, split_seed: int = 0,
                    held_out_frac: float = 0.5, max_template_chars: Optional[int] = None) -> EvalSets:
    """The protocol's prompt sets (deterministic in ``seed`` / ``split_seed``; see the module
    docstring). ``caps`` overrides entries of :data:`DEFAULT_CAPS` (seeded subsamples).
    ``max_template_chars`` leaves out wrappers longer than that (cost: a 2,000-character wrapper
    is ~500 tokens per prompt); families are split before that filter."""
    c = dict(DEFAULT_CAPS)
    if caps:
        bad = [k for k in caps if k not in DEFAULT_CAPS]
        if bad:
            raise ValueError(f"unknown caps {bad}; known: {sorted(DEFAULT_CAPS)}")
        c.update({k: int(v) for k, v in caps.items()})
    if any(v < 1 for v in c.values()):
        raise ValueError(f"caps must be >= 1, got {c}")
    groups = list(HARM_SOURCE_GROUPS) if groups is None else list(groups)
    if len(groups) < 2:
        raise ValueError(f"leave-one-source-out needs at least two harmful source groups, got {groups}")
    kw = {"root": root, "split_seed": split_seed}
    harm_fit, harm_test = {}, {}
    for g in groups:
        harm_fit[g] = [e.prompt for e in load_harmful_all("fit", groups=[g], per_source_cap=c["harm_fit"], seed=seed, **kw)]
        harm_test[g] = [e.prompt for e in load_harmful_all("test", groups=[g], per_source_cap=c["harm_test"], seed=seed, **kw)]
        if not harm_fit[g] or not harm_test[g]:
            raise DataError(f"harmful source group {g!r} has an empty fit or test split")
    alpaca = {s: [e.prompt for e in load_harmless(s, c[f"alpaca_{s}"], seed, root=root)] for s in ("fit", "val", "test")}
    xs = {"safe_fit": [e.prompt for e in load_xstest("fit", "safe", **kw)],
          "safe_test": [e.prompt for e in load_xstest("test", "safe", **kw)],
          "unsafe_test": [e.prompt for e in load_xstest("test", "unsafe", **kw)]}
    orb = {"hard_fit": [e.prompt for e in load_benign_source("orbench_hard_1k", "fit", c["orbench_fit"], seed, **kw)],
           "hard_test": [e.prompt for e in load_benign_source("orbench_hard_1k", "test", c["orbench_test"], seed, **kw)],
           "toxic_test": [e.prompt for e in load_harmful_all("test", groups=["orbench_toxic"], per_source_cap=c["harm_test"],
                                                           seed=seed, **kw)] if "orbench_toxic" in groups else
           [e.prompt for e in load_harmful_all("test", groups=["orbench_toxic"], per_source_cap=c["harm_test"], seed=seed, **kw)]}
    templates = load_jailbreak_templates(root)
    fit_fams, held_fams = split_families(templates, held_out_frac, seed)
    short = [t for t in templates if max_template_chars is None or len(t.template) <= max_template_chars]
    t_fit = [t for t in short if t.family in fit_fams]
    t_held = [t for t in short if t.family in held_fams]
    if not t_fit or not t_held:
        raise DataError(f"no wrapper of the fit or held-out families is at most {max_template_chars} characters long")
    rng = random.Random(f"steerlens-wrap:{seed}")
    wrapped_test = {g: _wrap_all(harm_test[g][: c["wrapped_test"]], t_held, rng) for g in groups}
    wrapped_benign = _wrap_all(alpaca["test"][: c["wrapped_benign"]], t_held, rng)
    aug_harm = {g: _wrap_all(harm_fit[g][: c["aug_harm"]], t_fit, rng) for g in groups}
    aug_benign = _wrap_all(alpaca["fit"][: c["aug_benign"]], t_fit, rng)
    select = {"xstest_safe_val": [e.prompt for e in load_xstest("val", "safe", **kw)],
              "xstest_unsafe_val": [e.prompt for e in load_xstest("val", "unsafe", **kw)],
              "orbench_hard_val": [e.prompt for e in load_benign_source("orbench_hard_1k", "val", c["orbench_val"], seed,
                                                                        **kw)]}
    info = {"caps": c, "seed": seed, "split_seed": split_seed, "groups": groups,
            "max_template_chars": max_template_chars,
            "templates": {"fit": [t.name for t in t_fit], "held_out": [t.name for t in t_held]},
            "n": {"harm_fit": {g: len(v) for g, v in harm_fit.items()},
                  "harm_test": {g: len(v) for g, v in harm_test.items()},
                  "alpaca": {k: len(v) for k, v in alpaca.items()}, "xstest": {k: len(v) for k, v in xs.items()},
                  "orbench": {k: len(v) for k, v in orb.items()}, "select": {k: len(v) for k, v in select.items()}}}
    return EvalSets(harm_fit, harm_test, alpaca, xs, orb, wrapped_test, wrapped_benign, aug_harm, aug_benign,
                    {"fit": fit_fams, "held_out": held_fams}, info, select)


def _balanced(groups: dict[str, list[str]], seed: int) -> list[str]:
    """Every group repeated (seeded, without replacement first) up to the largest group's size."""
    k = max(len(v) for v in groups.values())
    out = []
    for g, v in groups.items():
        rng = random.Random(f"steerlens-balance:{seed}:{g}")
        reps = (v * (k // len(v) + 1))
        order = list(range(len(reps)))
        rng.shuffle(order)
        out.extend(sorted((reps[i] for i in order[:k]), key=reps.index) if len(v) < k else v)
    return out


def fold_data(spec: dict, sets: EvalSets, held_out: Optional[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """``(harmful fit prompts, benign fit prompts)`` of a fold: every group but ``held_out``
    (``None``: all), with the spec's hard negatives, fit-family wrappers and balancing. The
    held-out group contributes nothing (not even its wrapped prompts)."""
    if held_out is not None and held_out not in sets.harm_fit:
        raise ValueError(f"unknown held-out group {held_out!r}; groups: {sets.groups}")
    groups = {g: list(v) for g, v in sets.harm_fit.items() if g != held_out}
    if spec["augment_wrapped"]:
        for g in groups:
            groups[g] = groups[g] + list(sets.aug_harm[g])
    pos = _balanced(groups, seed) if spec["balance"] else [p for v in groups.values() for p in v]
    neg = list(sets.alpaca["fit"])
    if spec["hard_negatives"]:
        neg += list(sets.xstest["safe_fit"]) + list(sets.orbench["hard_fit"])
    if spec["augment_wrapped"]:
        neg += list(sets.aug_benign)
    return pos, neg


def harm_gate_prompts(root=None, *, seed: int = 0, caps: Optional[dict] = None,
                      max_template_chars: Optional[int] = 1000, hard_negatives: bool = True,
                      augment_wrapped: bool = True, balance: bool = True,
                      groups: Optional[Sequence[str]] = None) -> tuple[list[str], list[str]]:
    """``(harmful, benign)`` fit prompts of the protocol's full fold (no group held out) over
    ``groups`` (default: every harmful source group), with the options of a gate spec."""
    sets = build_eval_sets(root, groups=groups, caps=caps, seed=seed, max_template_chars=max_template_chars)
    spec = {"hard_negatives": hard_negatives, "augment_wrapped": augment_wrapped, "balance": balance}
    return fold_data(spec, sets, None, seed)


__all__ = ["DEFAULT_CAPS", "EvalSets", "build_eval_sets", "fold_data", "harm_gate_prompts"]
