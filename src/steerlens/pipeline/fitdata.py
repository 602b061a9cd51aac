"""The one table from a *fit task*'s name to its data: what the CLI, sweeps, experiments and
pipeline specs fit on. A *fit task* is what a steerer is fitted on; an *eval task*
(:mod:`steerlens.evals.tasks`) is what it is scored on.

Each :class:`FitTask` says how to build

- ``data``: the contrastive data the selector and editor are fitted on, from a split;
- ``gate``: the prompt-side target-vs-benign data a gate is fitted on (``None``: the task has no
  gate data, so only always-open gates can be used);
- ``from_examples``: the same contrastive data from given examples (experiments that fold the
  pool themselves), labelled with the split they were drawn from.

======================  ==============================================  ======================
task                    steering data                                   gate data
======================  ==============================================  ======================
``safety``              harmful prompt + refusal vs + compliant reply   harmful vs Alpaca
                        (response-side)                                 instructions (prompt)
``safety-prompt``       harmful vs Alpaca instructions (prompt-side)    the same
``safety-harm``         as ``safety``                                   shared harmful sources
                                                                        + wrappers vs Alpaca +
                                                                        look-alikes (harm_dir)
``safety-harm-all``     as ``safety``                                   as ``safety-harm``, from
                                                                        every harmful source
``safety-own``          harmful prompt + the model's own sampled       as ``safety``
                        refusal vs + its own compliance (response-
                        side; :mod:`steerlens.evals.own_pairs`)
``truthfulness``        question + true vs + false answer               none
                        (response-side)
``truthfulness-mose``   first true vs first false answer, FineSteer's   none
                        chat format (system prompt, instruction,
                        closed turn; MoSE's authors)
``truthfulness-mc``     every answer choice as its own plain-text row   none
                        ``"Q: … A: …"``, last token, no chat template
                        (REAL's authors), with a σ bank
``truthfulness-ode``    as ``truthfulness-mc`` with ``"Q: …\\nA: …"``,     none
                        no bank (ODESteer's authors' barrier data)
======================  ==============================================  ======================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .errors import PipelineError


@dataclass(frozen=True)
class FitTask:
    name: str
    help: str
    data: Callable
    gate: Optional[Callable] = None
    from_examples: Optional[Callable] = None
    #: which examples ``from_examples`` takes: a loader ``(split, n, seed, root=) -> [Example]``
    pool: Optional[Callable] = None


HARMFUL_SOURCE_GROUPS = {"advbench": ("advbench",), "harmbench": ("harmbench_val", "harmbench_test"),
                         "jailbreakbench": ("jailbreakbench",)}


def safety_gate_data(split: str = "fit", n: Optional[int] = None, seed: int = 0, *, root=None,
                     n_benign: Optional[int] = None, xstest_negatives: bool = False,
                     sources: Optional[Sequence[str]] = None):
    """Prompt-side gate data: harmful instructions (pos) vs harmless Alpaca instructions (neg)
    from ``split`` (default ``fit``).

    The harmful sets are pooled and deduplicated before splitting (:func:`D.load_harmful`), so the
    split never changes with ``sources``: ``sources`` (``advbench`` / ``harmbench`` /
    ``jailbreakbench``) only keeps the harmful prompts of those sources (leave-one-source-out).
    ``n`` caps the harmful prompts, ``n_benign`` the harmless ones (default: as many as harmful).
    ``xstest_negatives`` adds XSTest's *safe* prompts of the same split as hard negatives (the
    report must then use XSTest's held-out split, which it does by default: ``test``)."""
    import random

    from ..evals import data as D
    from .contrastive import SimpleContrastiveData

    harm = D.load_harmful(split, None, seed, root=root)
    if sources is not None:
        bad = [s for s in sources if s not in HARMFUL_SOURCE_GROUPS]
        if bad:
            raise PipelineError(f"unknown harmful source(s) {bad}; use {sorted(HARMFUL_SOURCE_GROUPS)}")
        keep = {x for s in sources for x in HARMFUL_SOURCE_GROUPS[s]}
        harm = [e for e in harm if e.source in keep]
    if n is not None and n < len(harm):
        rng = random.Random(f"steerlens-gate-sample:{seed}")
        harm = [harm[i] for i in sorted(rng.sample(range(len(harm)), n))]
    if not harm:
        raise PipelineError(f"no harmful prompts in split {split!r} for sources {sources}")
    benign = D.load_harmless(split, n_benign if n_benign is not None else len(harm), seed, root=root)
    if xstest_negatives:
        benign = benign + D.load_xstest(split, "safe", None, seed, root=root)
    return SimpleContrastiveData([e.prompt for e in harm], [e.prompt for e in benign], position="last",
                                 ids=[e.id for e in harm] + [e.id for e in benign], split=split,
                                 task="safety_gate" + ("+xstest_safe" if xstest_negatives else ""))


#: the source groups of the main job's fitting data (the shared AdvBench / HarmBench / JBB split):
#: every other harmful source stays held out of a gate fitted on ``safety-harm``
SHARED_GROUPS = ("advbench", "harmbench", "jailbreakbench")


def harm_gate_data(split: str = "fit", n: Optional[int] = None, seed: int = 0, *, root=None,
                   caps: Optional[dict] = None, max_template_chars: Optional[int] = 1000,
                   hard_negatives: bool = True, augment_wrapped: bool = True, balance: bool = True,
                   groups: Optional[Sequence[str]] = SHARED_GROUPS):
    """Gate data built for a gate that should recognise harm (``gate_task = "safety-harm"``): the
    harmful fit prompts of ``groups`` (source-balanced) plus those prompts wrapped in the *fit*
    families of jailbreak templates (pos) vs Alpaca fit prompts, the benign look-alikes' fit splits
    (XSTest safe, OR-Bench-Hard) as hard negatives and wrapped Alpaca fit prompts (neg).

    The full fold of the gate generalisation protocol (:func:`steerlens.evals.gate_sets.fold_data`),
    so ``steerlens gate-eval``'s figures describe the gate fitted on it. ``groups`` defaults to the
    shared sources (:data:`SHARED_GROUPS`), so the six other harmful sources and the held-out
    template families stay unseen (``None``: every group). Only ``split="fit"`` exists; sizes come
    from ``caps`` (per source), not ``n``."""
    from ..evals.gate_sets import harm_gate_prompts
    from .contrastive import SimpleContrastiveData

    if split != "fit":
        raise PipelineError(f"harm gate data exists for the fit split only, got {split!r}")
    if n is not None:
        raise PipelineError("harm gate data sizes come from caps= (per source), not n= (leave fit.gate_n unset)")
    pos, neg = harm_gate_prompts(root, seed=seed, caps=caps, max_template_chars=max_template_chars,
                                 hard_negatives=hard_negatives, augment_wrapped=augment_wrapped, balance=balance,
                                 groups=None if groups is None else list(groups))
    return SimpleContrastiveData(pos, neg, position="last", ids=[f"h{i}" for i in range(len(pos))]
                                 + [f"b{i}" for i in range(len(neg))], split="fit", task="safety_gate_harm")


def harm_gate_data_all(split: str = "fit", n: Optional[int] = None, seed: int = 0, *, root=None, **kw):
    """:func:`harm_gate_data` from the fit splits of **every** harmful source group (nine; their
    val and test splits stay out): the gate a deployment fits. How it does on a source it never saw
    is measured by leaving each source out (``steerlens gate-eval``, ``experiments/gate_loso_e2e.py``)."""
    if "groups" in kw:
        raise PipelineError("safety-harm-all uses every source group; for a subset use safety-harm with groups=")
    return harm_gate_data(split, n, seed, root=root, groups=None, **kw)


def _evals_data(name: str) -> Callable:
    """``steerlens.evals.data.<name>``, imported when called (the table is read by ``--help``)."""
    def call(*args, **kwargs):
        from ..evals import data as D

        return getattr(D, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _own_pairs(name: str) -> Callable:
    """``steerlens.evals.own_pairs.<name>``, imported when called."""
    def call(*args, **kwargs):
        from ..evals import own_pairs

        return getattr(own_pairs, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__module__ = "steerlens.evals.own_pairs"
    return call


#: The fit tasks (what steerers are fitted on; not the *eval* tasks of :mod:`steerlens.evals.tasks`).
FIT_TASKS: dict[str, FitTask] = {
    "safety": FitTask("safety", "harmful prompt + refusal vs + compliant reply (response-side)",
                      _evals_data("safety_response_pairs"), safety_gate_data, _evals_data("safety_pairs_from"),
                      _evals_data("load_harmful")),
    "safety-prompt": FitTask("safety-prompt", "harmful vs harmless instructions (prompt-side)",
                             _evals_data("safety_prompt_pairs"), safety_gate_data),
    "safety-harm": FitTask("safety-harm", "as safety; gate data: shared harmful sources + fit-family wrappers vs Alpaca, "
                                          "XSTest-safe and OR-Bench-Hard look-alikes (for harm_dir gates)",
                           _evals_data("safety_response_pairs"), harm_gate_data, _evals_data("safety_pairs_from"),
                           _evals_data("load_harmful")),
    "safety-harm-all": FitTask("safety-harm-all", "as safety-harm, with the gate data from the fit splits of every "
                                                  "harmful source (nine groups)",
                               _evals_data("safety_response_pairs"), harm_gate_data_all,
                               _evals_data("safety_pairs_from"), _evals_data("load_harmful")),
    "safety-own": FitTask("safety-own", "harmful prompt + the default model's own sampled refusal vs + its own "
                                        "compliance (response-side; replies cached, build with steerlens own-pairs)",
                          _own_pairs("safety_own_pairs"), safety_gate_data, _own_pairs("safety_own_pairs_from"),
                          _evals_data("load_harmful")),
    "truthfulness": FitTask("truthfulness", "TruthfulQA question + true vs + false answer (response-side)",
                            _evals_data("truthfulness_response_pairs"), None, _evals_data("truthfulness_pairs_from"),
                            _evals_data("load_truthfulqa")),
    "truthfulness-mose": FitTask("truthfulness-mose", "TruthfulQA first correct vs first incorrect answer in "
                                                      "FineSteer's chat format (system prompt, 'Answer the question "
                                                      "concisely. Q: ... A:', closed turn; MoSE's authors' data)",
                                 _evals_data("truthfulness_mose_pairs"), None,
                                 _evals_data("truthfulness_mose_pairs_from"), _evals_data("load_truthfulqa")),
    "truthfulness-mc": FitTask("truthfulness-mc", "TruthfulQA: every true and false answer as its own plain-text "
                                                  "'Q: ... A: ...' row, last token (the REAL authors' reading)",
                               _evals_data("truthfulness_mc_rows"), None, _evals_data("truthfulness_mc_rows_from"),
                               _evals_data("load_truthfulqa")),
    "truthfulness-ode": FitTask("truthfulness-ode", "TruthfulQA: every true and false answer as its own plain-text "
                                                    "'Q: ...\\nA: ...' row, last token (the ODESteer authors' barrier data)",
                                _evals_data("truthfulness_ode_rows"), None, _evals_data("truthfulness_ode_rows_from"),
                                _evals_data("load_truthfulqa")),
}

#: Names of the fit tasks (``--task`` choices of ``steerlens fit``), read off :data:`FIT_TASKS`.
FIT_TASK_NAMES = tuple(FIT_TASKS)


def fit_task(name: str) -> FitTask:
    """The fit task ``name`` (see :data:`FIT_TASKS`)."""
    if name not in FIT_TASKS:
        raise PipelineError(f"unknown fit task {name!r}; use one of {sorted(FIT_TASKS)}")
    return FIT_TASKS[name]


def fit_data(task: str, n: Optional[int] = None, seed: int = 0, data_root=None, split: str = "fit"):
    """The contrastive fitting data of ``task`` (from the ``fit`` split by default)."""
    return fit_task(task).data(split=split, n=n, seed=seed, root=data_root)


def gate_data(task: str = "safety", n: Optional[int] = None, seed: int = 0, data_root=None,
              split: str = "fit", **kw):
    """The prompt-side gate data of ``task`` (target vs benign prompts), or ``None`` when the task
    has none. ``kw`` go to the task's builder (for safety: ``n_benign``, ``xstest_negatives``,
    ``sources``, see :func:`safety_gate_data`)."""
    t = fit_task(task)
    return None if t.gate is None else t.gate(split=split, n=n, seed=seed, root=data_root, **kw)


__all__ = ["FitTask", "FIT_TASKS", "fit_task", "fit_data", "gate_data", "safety_gate_data", "harm_gate_data", "harm_gate_data_all",
           "SHARED_GROUPS", "HARMFUL_SOURCE_GROUPS",
           "FIT_TASK_NAMES"]
