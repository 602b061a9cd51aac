"""Evaluation: benchmark data, refusal judges, statistics, tasks and reports.

    from steerlens.evals import run_eval, data
    records = run_eval(model, ["safety", "truthfulness", "utility"], {"none": None}, limit=20, out_dir="runs/x")

Submodules: :mod:`.data` (loaders, splits, contrastive sets), :mod:`.judges`, :mod:`.stats`,
:mod:`.tasks`, :mod:`.report`, :mod:`.steering`, :mod:`.cli`.
"""

from .data import ContrastiveData, DataError, data_dir
from .judges import ModelJudge, PatternJudge, RefusalJudge, Verdict
from .report import load_results, run_eval, write_results
from .stats import Record, bootstrap_ci
from .steering import resolve_edits
from .tasks import safety_task, truthfulness_task, utility_task

__all__ = [
    "ContrastiveData", "DataError", "data_dir", "RefusalJudge", "PatternJudge", "ModelJudge", "Verdict",
    "Record", "bootstrap_ci", "resolve_edits", "safety_task", "truthfulness_task", "utility_task",
    "run_eval", "write_results", "load_results",
]
