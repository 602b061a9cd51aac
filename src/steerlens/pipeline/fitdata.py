"""The one table from a fitting task's name to its data: what the CLI, sweeps, experiments and
pipeline specs fit on.

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
``truthfulness``        question + true vs + false answer               none
                        (response-side)
======================  ==============================================  ======================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .base import PipelineError


@dataclass(frozen=True)
class FitTask:
    name: str
    help: str
    data: Callable
    gate: Optional[Callable] = None
    from_examples: Optional[Callable] = None
    #: which examples ``from_examples`` takes: a loader ``(split, n, seed, root=) -> [Example]``
    pool: Optional[Callable] = None


def _tasks() -> dict[str, FitTask]:
    from ..evals import data as D

    return {
        "safety": FitTask("safety", "harmful prompt + refusal vs + compliant reply (response-side)",
                          D.safety_response_pairs, D.safety_prompt_pairs, D.safety_pairs_from, D.load_harmful),
        "safety-prompt": FitTask("safety-prompt", "harmful vs harmless instructions (prompt-side)",
                                 D.safety_prompt_pairs, D.safety_prompt_pairs),
        "truthfulness": FitTask("truthfulness", "TruthfulQA question + true vs + false answer (response-side)",
                                D.truthfulness_response_pairs, None, D.truthfulness_pairs_from, D.load_truthfulqa),
    }


FIT_TASK_NAMES = ("safety", "safety-prompt", "truthfulness")


def fit_task(name: str) -> FitTask:
    tasks = _tasks()
    if name not in tasks:
        raise PipelineError(f"unknown fitting task {name!r}; use one of {sorted(tasks)}")
    return tasks[name]


def fit_data(task: str, n: Optional[int] = None, seed: int = 0, data_root=None, split: str = "fit"):
    """The contrastive fitting data of ``task`` (from the ``fit`` split by default)."""
    return fit_task(task).data(split=split, n=n, seed=seed, root=data_root)


def gate_data(task: str, n: Optional[int] = None, seed: int = 0, data_root=None, split: str = "fit"):
    """The prompt-side gate data of ``task`` (target vs benign prompts), or ``None``."""
    t = fit_task(task)
    return None if t.gate is None else t.gate(split=split, n=n, seed=seed, root=data_root)


__all__ = ["FitTask", "fit_task", "fit_data", "gate_data", "FIT_TASK_NAMES"]
