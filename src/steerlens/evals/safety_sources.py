"""Loaders of the extra safety files: harmful prompts from more sources, benign look-alikes, and
jailbreak wrappers (re-exported by :mod:`steerlens.evals.data`).

Sources
-------
Harmful (``label="harmful"``): ``simplesafetytests``, ``harmfulqa``, ``catqa_en``, ``harmfulq``,
``donotanswer_harmful``, ``orbench_toxic``. Benign look-alikes (``label="safe"``):
``orbench_hard_1k``. Jailbreak wrappers: ``jailbreak_templates`` (:func:`load_jailbreak_templates`).

Topic labels are not harm labels:

* HarmfulQA's ``category`` is the *academic topic* the question was generated from. Every
  HarmfulQA question is used as harmful (they were generated as harmful questions); the topic is
  kept as ``meta["topic"]`` (and ``meta["subtopic"]``) and is never used as a label or a group.
* CatQA includes two *policy* categories ("Tailored Financial Advice", "Political Campaigning")
  that are not harmful in every deployment. They are left out by default (``include_policy=False``);
  the split is drawn before that filter, so the option never moves another example between splits.
  Rows carry ``meta["policy_category"]``.
* Do-Not-Answer holds only its "Malicious Uses" and "Discrimination, ..., Offensive" risk areas
  (the file is already restricted to them); its ``category`` is the risk area.

Deduplication
-------------
Texts are compared after :func:`~steerlens.evals.data.normalize_text`. The order of precedence is
the existing harmful pool (AdvBench, HarmBench val/test, JailbreakBench), XSTest, then
:data:`EXTRA_HARMFUL_SOURCES` in order, then ``orbench_hard_1k``: a row whose text occurs in an
earlier source (or earlier in its own file) is dropped; :func:`dedup_report` lists what was
dropped and which id it repeats. So no prompt is in two sources and a held-out source never shares a prompt with
the others.

Splits
------
Each source is split on its own (``fit | val | test``, fractions ``(0.6, 0.2, 0.2)``) by
:func:`~steerlens.evals.data.split_assignment` over its kept ids ``<source>:<row index>``, seeded
by ``split_seed``: deterministic, and independent of the other sources. The existing harmful pool
keeps the split of :func:`~steerlens.evals.data.load_harmful` (so the main job's data do not move).
Every example has ``source`` (its file) and ``meta["group"]`` (its source group for
leave-one-source-out: HarmBench's val and test files are one group, ``harmbench``).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Optional, Sequence

from .data import (DEFAULT_FRACTIONS, HARMFUL_SOURCES, SPLITS, DataError, Example, _select, data_file,
                   load_harmful, normalize_text, read_rows, split_assignment)

EXTRA_HARMFUL_SOURCES = ("simplesafetytests", "harmfulqa", "catqa_en", "harmfulq", "donotanswer_harmful",
                         "orbench_toxic")
BENIGN_EXTRA_SOURCES = ("orbench_hard_1k",)
#: leave-one-source-out groups: ``{group: files}``.
HARM_SOURCE_GROUPS: dict[str, tuple[str, ...]] = {
    "advbench": ("advbench",), "harmbench": ("harmbench_val", "harmbench_test"),
    "jailbreakbench": ("jailbreakbench",), **{s: (s,) for s in EXTRA_HARMFUL_SOURCES}}
GROUP_OF = {f: g for g, fs in HARM_SOURCE_GROUPS.items() for f in fs}
CATQA_POLICY = ("Tailored Financial Advice", "Political Campaigning")
_ORDER = EXTRA_HARMFUL_SOURCES + BENIGN_EXTRA_SOURCES


def _file_rows(name: str, root) -> list[dict]:
    rows = read_rows(name, root)
    bad = [i for i, r in enumerate(rows) if "instruction" not in r]
    if bad:
        raise DataError(f"{data_file(name, root)}: rows {bad[:5]} have no 'instruction' field")
    return rows


def _earlier_keys(name: str, root) -> dict[str, str]:
    """``{normalised text: id}`` of every source that takes precedence over ``name``."""
    seen: dict[str, str] = {}
    for e in load_harmful("all", root=root):
        seen.setdefault(normalize_text(e.prompt), e.id)
    for i, r in enumerate(read_rows("xstest", root)):
        seen.setdefault(normalize_text(str(r["prompt"])), f"xstest:{i}")
    for src in _ORDER[:_ORDER.index(name)]:
        for i, r in enumerate(_file_rows(src, root)):
            seen.setdefault(normalize_text(str(r.get("instruction") or "")), f"{src}:{i}")
    seen.pop("", None)
    return seen


def _kept_rows(name: str, root) -> tuple[list[tuple[int, dict]], list[dict]]:
    seen = _earlier_keys(name, root)
    kept, dropped = [], []
    for i, r in enumerate(_file_rows(name, root)):
        text = str(r.get("instruction") or "").strip()
        if not text:
            dropped.append({"id": f"{name}:{i}", "reason": "empty"})
            continue
        key = normalize_text(text)
        if key in seen:
            dropped.append({"id": f"{name}:{i}", "reason": "duplicate", "of": seen[key]})
            continue
        seen[key] = f"{name}:{i}"
        kept.append((i, r))
    if not kept:
        raise DataError(f"{name}: no rows left after deduplication")
    return kept, dropped


def dedup_report(name: str, root: Optional[str | os.PathLike] = None) -> list[dict]:
    """The rows of source ``name`` dropped as empty or as duplicates (``{"id", "reason", "of"}``)."""
    if name not in _ORDER:
        raise ValueError(f"unknown safety source {name!r}; known: {_ORDER}")
    return _kept_rows(name, root)[1]


def load_safety_source(name: str, split: str = "test", n: Optional[int] = None, seed: int = 0, *,
                       split_seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                       include_policy: bool = False,
                       root: Optional[str | os.PathLike] = None) -> list[Example]:
    """One extra safety source (:data:`EXTRA_HARMFUL_SOURCES` or :data:`BENIGN_EXTRA_SOURCES`),
    deduplicated against the sources before it and split on its own (see the module docstring).
    ``n`` subsamples the split with ``seed`` (order preserved)."""
    if name not in _ORDER:
        raise ValueError(f"unknown safety source {name!r}; known: {_ORDER}")
    if split not in SPLITS + ("all",):
        raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
    kept, _ = _kept_rows(name, root)
    ids = [f"{name}:{i}" for i, _ in kept]
    assign = split_assignment(ids, split_seed, fractions)
    label = "safe" if name in BENIGN_EXTRA_SOURCES else "harmful"
    exs = []
    for (i, r), ex_id in zip(kept, ids):
        if label == "safe" and str(r.get("label", "safe")).lower() != "safe":
            raise DataError(f"{name} row {i} is labelled {r.get('label')!r}; this benign set must be 'safe'")
        meta = {"label": label, "source_id": r.get("source_id"), "group": GROUP_OF.get(name, name)}
        if name == "harmfulqa":
            meta.update(topic=r.get("category"), subtopic=r.get("subcategory"))
        else:
            meta.update(category=r.get("category"))
            if r.get("subcategory") is not None:
                meta["subcategory"] = r.get("subcategory")
        if name == "catqa_en":
            meta["policy_category"] = r.get("category") in CATQA_POLICY
        exs.append(Example(ex_id, str(r["instruction"]).strip(), name, assign[ex_id], meta))
    if name == "catqa_en" and not include_policy:
        exs = [e for e in exs if not e.meta["policy_category"]]
    return _select(exs, split, n, seed)


def _named(name: str):
    def loader(split: str = "test", n: Optional[int] = None, seed: int = 0, **kw) -> list[Example]:
        return load_safety_source(name, split, n, seed, **kw)

    loader.__name__ = f"load_{name}"
    loader.__doc__ = f"``{name}`` (see :func:`load_safety_source`)."
    return loader


load_simplesafetytests = _named("simplesafetytests")
load_harmfulqa = _named("harmfulqa")
load_catqa_en = _named("catqa_en")
load_harmfulq = _named("harmfulq")
load_donotanswer_harmful = _named("donotanswer_harmful")
load_orbench_toxic = _named("orbench_toxic")
load_orbench_hard = _named("orbench_hard_1k")


def load_benign_source(name: str, split: str = "test", n: Optional[int] = None, seed: int = 0, **kw) -> list[Example]:
    """Benign look-alikes: ``orbench_hard_1k`` or ``xstest_safe`` (XSTest's safe prompts, split as
    :func:`~steerlens.evals.data.load_xstest` splits them)."""
    from .data import load_xstest

    if name == "xstest_safe":
        return load_xstest(split, "safe", n, seed, **kw)
    if name not in BENIGN_EXTRA_SOURCES:
        raise ValueError(f"unknown benign source {name!r}; known: {('xstest_safe',) + BENIGN_EXTRA_SOURCES}")
    return load_safety_source(name, split, n, seed, **kw)


def load_harmful_all(split: str = "test", n: Optional[int] = None, seed: int = 0, *,
                     groups: Optional[Sequence[str]] = None, split_seed: int = 0,
                     fractions: Sequence[float] = DEFAULT_FRACTIONS, include_policy: bool = False,
                     per_source_cap: Optional[int] = None,
                     root: Optional[str | os.PathLike] = None) -> list[Example]:
    """Harmful prompts of every source group (default all of :data:`HARM_SOURCE_GROUPS`), each with
    ``source`` and ``meta["group"]``. ``per_source_cap`` keeps at most that many examples of each
    group in the split (a seeded subsample; e.g. HarmfulQA has ~1900 rows)."""
    groups = list(HARM_SOURCE_GROUPS) if groups is None else list(groups)
    bad = [g for g in groups if g not in HARM_SOURCE_GROUPS]
    if bad:
        raise ValueError(f"unknown harmful source groups {bad}; known: {list(HARM_SOURCE_GROUPS)}")
    out: list[Example] = []
    base_files = [f for g in groups for f in HARM_SOURCE_GROUPS[g] if f in HARMFUL_SOURCES]
    if base_files:
        # the existing pool is deduplicated and split jointly; keep that split, filter to the groups
        pool = load_harmful(split, root=root, split_seed=split_seed, fractions=fractions)
        for e in pool:
            if e.source in base_files:
                e.meta.update(label="harmful", group=GROUP_OF[e.source])
                out.append(e)
    for g in groups:
        for f in HARM_SOURCE_GROUPS[g]:
            if f not in HARMFUL_SOURCES:
                out.extend(load_safety_source(f, split, split_seed=split_seed, fractions=fractions,
                                              include_policy=include_policy, root=root))
    if per_source_cap is not None:
        if per_source_cap < 1:
            raise ValueError(f"per_source_cap must be >= 1, got {per_source_cap}")
        capped = []
        for g in groups:
            members = [e for e in out if e.meta["group"] == g]
            capped.extend(_select(members, "all", per_source_cap, seed))
        out = capped
    return _select(out, "all", n, seed)


# ---------------------------------------------------------------------------------------------
# jailbreak wrappers


@dataclass(frozen=True)
class JailbreakTemplate:
    """One wrapper: ``template`` holds ``{instruction}``; ``family`` a coarse label."""

    index: int
    name: str
    template: str
    family: str
    source: str

    def wrap(self, instruction: str) -> str:
        return wrap_prompt(self.template, instruction)


def wrap_prompt(template: str, instruction: str) -> str:
    """Fill a wrapper with ``str.replace`` (templates may contain other literal braces)."""
    if "{instruction}" not in template:
        raise ValueError("jailbreak template has no {instruction} placeholder")
    return template.replace("{instruction}", instruction)


def load_jailbreak_templates(root: Optional[str | os.PathLike] = None) -> list[JailbreakTemplate]:
    """The jailbreak wrappers (``safety/jailbreak_templates.json``), each checked to hold
    ``{instruction}`` and to have a family."""
    p = data_file("jailbreak_templates", root)
    try:
        rows = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"could not read {p}: {e}") from e
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{p}: expected a non-empty JSON list of templates")
    out = []
    for i, r in enumerate(rows):
        t, fam = r.get("template"), r.get("family")
        if not isinstance(t, str) or "{instruction}" not in t:
            raise DataError(f"{p}: template {i} ({r.get('name')!r}) has no {{instruction}} placeholder")
        if not fam:
            raise DataError(f"{p}: template {i} ({r.get('name')!r}) has no family")
        out.append(JailbreakTemplate(i, str(r.get("name") or f"template_{i}"), t, str(fam), str(r.get("source") or "")))
    return out


def split_families(templates: Sequence[JailbreakTemplate], held_out_frac: float = 0.5,
                   seed: int = 0) -> tuple[list[str], list[str]]:
    """``(fit families, held-out families)``: a seeded permutation of the sorted family names,
    ``round(held_out_frac · n)`` held out (at least one on each side when there are two or more)."""
    fams = sorted({t.family for t in templates})
    if len(fams) < 2:
        raise ValueError(f"need at least two template families to hold some out, got {fams}")
    if not 0.0 < held_out_frac < 1.0:
        raise ValueError(f"held_out_frac must be in (0, 1), got {held_out_frac}")
    rng = random.Random(f"steerlens-families:{seed}")
    order = fams[:]
    rng.shuffle(order)
    k = min(len(fams) - 1, max(1, int(round(held_out_frac * len(fams)))))
    return sorted(order[k:]), sorted(order[:k])



# ---------------------------------------------------------------------------------------------
# eval sets: held-out sources and wrapped prompts (the safety task's ``heldout`` / ``wrapped``)

#: the harmful source groups the safety fit split is drawn from (``load_harmful``'s pool); every
#: other group is held out from a steerer fitted on the fit split
SHARED_GROUPS = ("advbench", "harmbench", "jailbreakbench")


def heldout_groups() -> list[str]:
    """The harmful source groups no safety steerer is fitted on (all but :data:`SHARED_GROUPS`)."""
    return [g for g in HARM_SOURCE_GROUPS if g not in SHARED_GROUPS]


def load_heldout_harmful(split: str = "test", n: Optional[int] = None, seed: int = 0, *,
                         root: Optional[str | os.PathLike] = None, split_seed: int = 0) -> list[Example]:
    """Harmful prompts of the held-out source groups (:func:`heldout_groups`), ``split`` of each;
    with ``n``, a seeded sample balanced across the groups (at most ``ceil(n / groups)`` each)."""
    groups = heldout_groups()
    cap = None if n is None else max(1, -(-int(n) // len(groups)))
    return load_harmful_all(split, n, seed, groups=groups, per_source_cap=cap, root=root, split_seed=split_seed)


def load_wrapped_harmful(split: str = "test", n: Optional[int] = None, seed: int = 0, *,
                         root: Optional[str | os.PathLike] = None, split_seed: int = 0,
                         held_out_frac: float = 0.5, max_template_chars: Optional[int] = 1000) -> list[Example]:
    """The shared harmful prompts of ``split`` (``load_harmful``) each wrapped in a jailbreak
    template of a *held-out* family (:func:`split_families` with ``held_out_frac``, seed 0: the
    families no gate is fitted on), templates of at most ``max_template_chars`` characters, chosen
    per prompt by a seeded draw. ``id`` is ``wrapped:<id>``; ``meta`` keeps the template name,
    family and the unwrapped prompt."""
    from .data import load_harmful

    templates = load_jailbreak_templates(root)
    _, held = split_families(templates, held_out_frac, 0)
    pool = [t for t in templates if t.family in held and (max_template_chars is None
                                                           or len(t.template) <= max_template_chars)]
    if not pool:
        raise DataError(f"no held-out-family wrapper is at most {max_template_chars} characters long")
    rng = random.Random(f"steerlens-wrapped-eval:{seed}")
    out = []
    for e in load_harmful(split, n, seed, root=root, split_seed=split_seed):
        t = rng.choice(pool)
        out.append(Example(f"wrapped:{e.id}", t.wrap(e.prompt), e.source, e.split,
                           {**e.meta, "template": t.name, "family": t.family, "unwrapped": e.prompt}))
    return out


__all__ = ["EXTRA_HARMFUL_SOURCES", "BENIGN_EXTRA_SOURCES", "HARM_SOURCE_GROUPS", "GROUP_OF", "CATQA_POLICY",
           "load_safety_source", "load_benign_source", "load_harmful_all", "dedup_report", "load_simplesafetytests",
           "load_harmfulqa", "load_catqa_en", "load_harmfulq", "load_donotanswer_harmful", "load_orbench_toxic",
           "load_orbench_hard", "JailbreakTemplate", "wrap_prompt", "load_jailbreak_templates", "split_families",
           "SHARED_GROUPS", "heldout_groups", "load_heldout_harmful", "load_wrapped_harmful"]
