"""Safety contrast pairs from the model's own replies (issue #25, data item 5).

The ``safety`` fit task pairs each harmful prompt with one of six fixed refusal strings (pos) and
one of six compliance templates (neg): text so easy to tell apart that most heads separate the two
perfectly. Here both sides are replies the model itself sampled:

1. each harmful prompt is sampled ``k`` times as it is, and ``k_system`` times after a
   refusal-eliciting system prompt (:data:`DEFAULT_SYSTEM`; the default model almost never refuses
   without one);
2. a refusal judge (:func:`steerlens.evals.judges.get_judge`, default the trained classifier) labels
   every reply *against the plain prompt*; degenerate, unparseable (and by default deflecting)
   replies are set aside;
3. within each prompt one refusal (pos) is paired with one compliance (neg), both stored as
   ``(plain prompt, reply)``: an elicited reply is read as if the model had given it to the plain
   prompt, so the system prompt never enters the fitting data. Prompts without both kinds are
   dropped (counted in :meth:`OwnReplies.counts`).

Sampling is slow, so the judged replies are cached as JSON under
``<cache_dir>/own_pairs/`` (:func:`steerlens.models.cache_dir`: ``$STEERLENS_CACHE`` or
``~/.cache/steerlens``), one file per model name, prompts and sampling settings; the file keeps the
model's fingerprint and is regenerated when a model at hand does not match it. ``steerlens
own-pairs`` builds it ahead of a fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .data import ContrastiveData, DataError, Example, _split_of, load_harmful

#: the system prompt that elicits refusals (only used to sample; never part of a stored pair). The
#: default model refuses rarely even so (about one elicited reply in ten on harmful fit prompts, at
#: temperature 0.8, against almost none without it), hence more elicited samples than plain ones.
DEFAULT_SYSTEM = ("You are an AI that refuses harmful requests. Begin your reply with \"I'm sorry\" or "
                  "\"I cannot\" when a request could cause harm.")

#: samples per prompt without / with the system prompt (the CLI and the fit task share them, so a
#: cache built with ``steerlens own-pairs`` is the one ``safety-own`` reads)
DEFAULT_K = 2
DEFAULT_K_SYSTEM = 8
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_NEW_TOKENS = 48
DEFAULT_BATCH_SIZE = 16

#: judge labels that make a reply a refusal (pos) / a compliance (neg); others are set aside
POS_LABELS = ("refusal",)
NEG_LABELS = ("compliance",)

#: bump when the sampling or the file layout changes (old files are then ignored)
CACHE_VERSION = 1


@dataclass
class OwnReply:
    """One sampled reply: which prompt, which sample of it, whether the system prompt elicited
    it, and the judge's verdict (read against the plain prompt)."""

    prompt_id: str
    sample: int
    elicited: bool
    reply: str
    label: str
    reason: str = ""


@dataclass
class OwnReplies:
    """The judged replies of a set of harmful prompts (what is cached).

    ``prompts`` maps each prompt id to its text, in the order given; ``config`` holds the settings
    the replies were sampled and judged with; ``generated`` is False when they were read from the
    cache at ``path``."""

    prompts: dict[str, str]
    replies: list[OwnReply]
    config: dict
    fingerprint: Optional[dict] = None
    split: str = "mixed"
    path: Optional[Path] = None
    generated: bool = True
    pos_labels: tuple = POS_LABELS
    neg_labels: tuple = NEG_LABELS

    # -- sorting --------------------------------------------------------------------------
    def by_prompt(self) -> dict[str, tuple[list[OwnReply], list[OwnReply]]]:
        """``{prompt id: (refusals, compliances)}`` for every prompt (either list may be empty)."""
        out: dict[str, tuple[list, list]] = {pid: ([], []) for pid in self.prompts}
        for r in self.replies:
            if r.label in self.pos_labels:
                out[r.prompt_id][0].append(r)
            elif r.label in self.neg_labels:
                out[r.prompt_id][1].append(r)
        return out

    def counts(self, pairs_per_prompt: Optional[int] = 1) -> dict[str, Any]:
        """How many prompts, replies (plain / elicited), refusals, compliances, set-aside replies
        (by label), prompts with both kinds, and pairs (``pairs_per_prompt`` per such prompt,
        ``None``: as many as the smaller side has)."""
        labels: dict[str, int] = {}
        for r in self.replies:
            labels[r.label] = labels.get(r.label, 0) + 1
        groups = self.by_prompt()
        both = [pid for pid, (p, n) in groups.items() if p and n]
        n_pairs = sum(min(len(p), len(n)) if pairs_per_prompt is None else min(len(p), len(n), pairs_per_prompt)
                      for p, n in groups.values())
        pos = [r for r in self.replies if r.label in self.pos_labels]
        neg = [r for r in self.replies if r.label in self.neg_labels]
        return {
            "prompts": len(self.prompts),
            "replies": len(self.replies),
            "replies_plain": sum(not r.elicited for r in self.replies),
            "replies_elicited": sum(r.elicited for r in self.replies),
            "refusals": len(pos),
            "refusals_plain": sum(not r.elicited for r in pos),
            "refusals_elicited": sum(r.elicited for r in pos),
            "compliances": len(neg),
            "compliances_plain": sum(not r.elicited for r in neg),
            "compliances_elicited": sum(r.elicited for r in neg),
            "set_aside": {k: v for k, v in sorted(labels.items())
                          if k not in self.pos_labels and k not in self.neg_labels},
            "prompts_with_both": len(both),
            "prompts_dropped": len(self.prompts) - len(both),
            "pairs": n_pairs,
        }

    # -- pairing --------------------------------------------------------------------------
    def pairs(self, seed: int = 0, *, pairs_per_prompt: Optional[int] = 1, split: Optional[str] = None,
              task: str = "safety_own") -> ContrastiveData:
        """Response-side pairs: per prompt with both kinds, ``pairs_per_prompt`` refusals (pos)
        each against a different compliance (neg) of the same prompt (``None``: as many as the
        smaller side has), drawn with ``seed``; both stored as ``(plain prompt, reply)``. ids are
        the prompt ids (``"<id>#<j>"`` when a prompt gives several pairs).

        Raises :class:`DataError` when no prompt has both a refusal and a compliance."""
        if pairs_per_prompt is not None and pairs_per_prompt < 1:
            raise ValueError(f"pairs_per_prompt must be >= 1 or None, got {pairs_per_prompt}")
        pos, neg, ids = [], [], []
        for pid, (refusals, compliances) in self.by_prompt().items():
            m = min(len(refusals), len(compliances))
            if pairs_per_prompt is not None:
                m = min(m, pairs_per_prompt)
            if m == 0:
                continue
            rng = random.Random(f"steerlens-own-pairs:{seed}:{pid}")
            rs = rng.sample(refusals, m)
            cs = rng.sample(compliances, m)
            text = self.prompts[pid]
            for j, (r, c) in enumerate(zip(rs, cs)):
                pos.append((text, r.reply))
                neg.append((text, c.reply))
                ids.append(pid if pairs_per_prompt == 1 else f"{pid}#{j}")
        if not pos:
            c = self.counts()
            raise DataError(
                f"no own-reply safety pairs: none of the {c['prompts']} prompts has both a refusal and a compliance "
                f"among its {c['replies']} replies (refusals {c['refusals']}, compliances {c['compliances']}, "
                f"set aside {c['set_aside']}); sample more per prompt (k, k_system), use more prompts or a "
                "stronger system prompt")
        return ContrastiveData(pos, neg, "response_mean", ids, split or self.split, task)

    # -- storage --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": CACHE_VERSION, "config": self.config, "fingerprint": self.fingerprint,
                "split": self.split, "prompts": self.prompts, "replies": [asdict(r) for r in self.replies],
                "counts": self.counts()}

    @classmethod
    def from_dict(cls, d: dict, path: Optional[Path] = None) -> "OwnReplies":
        return cls(prompts=dict(d["prompts"]), replies=[OwnReply(**r) for r in d["replies"]], config=dict(d["config"]),
                   fingerprint=d.get("fingerprint"), split=d.get("split", "mixed"), path=path, generated=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the replies as JSON, atomically (a temporary file moved into place)."""
        from ..fileio import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "OwnReplies":
        p = Path(path)
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("version") != CACHE_VERSION:
            raise DataError(f"{p}: own-reply file version {d.get('version')}, expected {CACHE_VERSION}")
        return cls.from_dict(d, p)


# ---------------------------------------------------------------------------------------------
# sampling


def own_cache_dir(root: Optional[str | os.PathLike] = None) -> Path:
    """Where own-reply files live: ``root``, else ``<steerlens cache>/own_pairs``."""
    if root is not None:
        return Path(root).expanduser()
    from ..models import cache_dir

    return cache_dir() / "own_pairs"


def _judge_of(judge):
    """A judge object: anything with ``judge(prompts, replies)``, else :func:`get_judge`'s."""
    if judge is not None and not isinstance(judge, str) and hasattr(judge, "judge"):
        return judge
    from .judges import get_judge

    return get_judge(judge)


def _model_name(model) -> str:
    from ..models import DEFAULT_MODEL

    if model is None:
        return DEFAULT_MODEL
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return str(getattr(model, "name", "") or "model")


def sampling_config(model, exs: Sequence[Example], *, k: int, k_system: int, seed: int, temperature: float,
                    top_p: float, max_new_tokens: int, system: Optional[str], batch_size: int, judge_name: str) -> dict:
    """The settings a reply file is keyed by (the prompts enter as a hash of their ids and texts)."""
    prompts_sha = hashlib.sha256(json.dumps([[e.id, e.prompt] for e in exs], ensure_ascii=False).encode()).hexdigest()
    return {"model": _model_name(model), "n_prompts": len(exs), "prompts_sha256": prompts_sha[:16], "k": int(k),
            "k_system": int(k_system), "seed": int(seed), "temperature": float(temperature), "top_p": float(top_p),
            "max_new_tokens": int(max_new_tokens), "system": system if k_system else None,
            "batch_size": int(batch_size), "judge": judge_name, "version": CACHE_VERSION}


def cache_path(config: dict, split: str, root: Optional[str | os.PathLike] = None) -> Path:
    """The reply file of ``config`` (:func:`sampling_config`) under :func:`own_cache_dir`."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(config["model"]).name or config["model"]).strip("_") or "model"
    return own_cache_dir(root) / (f"{name}_{split}_n{config['n_prompts']}_k{config['k']}+{config['k_system']}"
                                  f"_s{config['seed']}_{h}.json")


def _sample(m, texts: list[str], n_samples: int, *, system: Optional[str], seed: int, temperature: float,
            top_p: float, max_new_tokens: int, batch_size: int, progress: bool) -> list[list[str]]:
    """``[sample][prompt]`` replies: every prompt ``n_samples`` times in one seeded sampled run."""
    from ..hooks.generation import generate

    if n_samples == 0:
        return []
    flat = [t for _ in range(n_samples) for t in texts]
    out = generate(m, flat, None, do_sample=True, temperature=temperature, top_p=top_p,
                   max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, system=system,
                   progress=progress)
    return [list(out[s * len(texts):(s + 1) * len(texts)]) for s in range(n_samples)]


def sample_own_replies(model, exs: Sequence[Example], *, k: int = DEFAULT_K, k_system: Optional[int] = DEFAULT_K_SYSTEM,
                       seed: int = 0, judge=None, temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P,
                       max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, system: Optional[str] = DEFAULT_SYSTEM,
                       batch_size: int = DEFAULT_BATCH_SIZE, cache: bool = True,
                       cache_root: Optional[str | os.PathLike] = None, split: Optional[str] = None,
                       progress: bool = True) -> OwnReplies:
    """Sample and judge the model's own replies to harmful prompts ``exs``.

    Each prompt is sampled ``k`` times as it is and ``k_system`` times (``None``: ``k``; 0 or
    ``system=None``: none) after the system prompt ``system``, with ``temperature``/``top_p``,
    up to ``max_new_tokens`` tokens, seeded with ``seed``. Every reply is judged against the plain
    prompt by ``judge`` (a name for :func:`~steerlens.evals.judges.get_judge`, default the trained
    classifier, or any object with ``judge(prompts, replies) -> [Verdict]``).

    ``model``: a :class:`~steerlens.SteerModel`, a name for :func:`steerlens.load_model`, or
    ``None`` (the default model); a name is loaded only when the cache has no file for these
    settings. With ``cache`` the replies are read from / written to :func:`cache_path` (under
    ``cache_root``, default :func:`own_cache_dir`); a file whose model fingerprint differs from a
    loaded model's is sampled again."""
    exs = list(exs)
    if not exs:
        raise DataError("sample_own_replies needs at least one harmful prompt")
    ids = [e.id for e in exs]
    if len(set(ids)) != len(ids):
        raise ValueError("harmful examples must have distinct ids")
    if k < 0 or (k_system is not None and k_system < 0):
        raise ValueError(f"k and k_system must be >= 0, got {k}, {k_system}")
    k_system = (k if k_system is None else k_system) if system else 0
    if k + k_system == 0:
        raise ValueError("nothing to sample: k and k_system are both 0")
    if not 0 < temperature:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    j = _judge_of(judge)
    judge_name = str(getattr(j, "name", "") or type(j).__name__)
    split = split or _split_of(exs)
    config = sampling_config(model, exs, k=k, k_system=k_system, seed=seed, temperature=temperature, top_p=top_p,
                             max_new_tokens=max_new_tokens, system=system, batch_size=batch_size,
                             judge_name=judge_name)
    path = cache_path(config, split, cache_root) if cache else None
    loaded_model = model is not None and not isinstance(model, (str, os.PathLike))
    if path is not None and path.is_file():
        try:
            got = OwnReplies.load(path)
        except (DataError, ValueError, KeyError, TypeError):
            got = None  # unreadable or old: sample again
        if got is not None and got.config == config and (
                not loaded_model or got.fingerprint is None or got.fingerprint == model.fingerprint()):
            return got
    if not loaded_model:
        from ..models import load_model

        model = load_model(None if model is None else str(model))
    from ..models import as_model

    m = as_model(model)
    texts = [e.prompt for e in exs]
    runs = [(False, _sample(m, texts, k, system=None, seed=2 * seed, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)),
            (True, _sample(m, texts, k_system, system=system, seed=2 * seed + 1, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress))]
    rows = [(e, s, elicited, reps[s][i]) for elicited, reps in runs for s in range(len(reps))
            for i, e in enumerate(exs)]
    verdicts = j.judge([e.prompt for e, _, _, _ in rows], [r for _, _, _, r in rows])
    if len(verdicts) != len(rows):
        raise ValueError(f"judge {judge_name} gave {len(verdicts)} verdicts for {len(rows)} replies")
    replies = [OwnReply(e.id, s, elicited, r, v.label, getattr(v, "reason", "") or "")
               for (e, s, elicited, r), v in zip(rows, verdicts)]
    out = OwnReplies({e.id: e.prompt for e in exs}, replies, config, m.fingerprint(), split, path, True)
    if path is not None:
        out.save(path)
    return out


# ---------------------------------------------------------------------------------------------
# fit-task builders


def safety_own_pairs_from(exs: Sequence[Example], seed: int = 0, split: Optional[str] = None, *, model=None,
                          pairs_per_prompt: Optional[int] = 1, **sample_kw) -> ContrastiveData:
    """Own-reply safety pairs of the given harmful examples (see :func:`sample_own_replies` for
    ``model`` and ``sample_kw``; pairing: :meth:`OwnReplies.pairs`)."""
    got = sample_own_replies(model, exs, seed=seed, split=split, **sample_kw)
    return got.pairs(seed, pairs_per_prompt=pairs_per_prompt, split=split or got.split)


def safety_own_pairs(split: str = "fit", n: Optional[int] = None, seed: int = 0, *,
                     root: Optional[str | os.PathLike] = None, model=None, pairs_per_prompt: Optional[int] = 1,
                     **sample_kw) -> ContrastiveData:
    """The ``safety-own`` fit task's data: own-reply pairs of the ``split``'s harmful prompts
    (``n`` of them, drawn with ``seed``). Without ``model`` the default model's cached replies
    are used, and the model is loaded only when they are missing."""
    exs = load_harmful(split, n, seed, root=root)
    return safety_own_pairs_from(exs, seed, split, model=model, pairs_per_prompt=pairs_per_prompt, **sample_kw)


__all__ = ["DEFAULT_SYSTEM", "DEFAULT_K", "DEFAULT_K_SYSTEM", "POS_LABELS", "NEG_LABELS", "OwnReply", "OwnReplies", "own_cache_dir", "sampling_config",
           "cache_path", "sample_own_replies", "safety_own_pairs_from", "safety_own_pairs"]
