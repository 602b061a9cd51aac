"""The steering pipeline: selectors (where), gates (when), editors (how), steerers, artifacts.

::

    from steerlens.pipeline import make_steerer, load_steerer
    st = make_steerer("caa", layer=10, alpha=1.0).fit(model, data)   # data: ContrastiveData
    texts = steerlens.generate(model, prompts, st.edits(model, prompts))
    st.save("runs/caa");  st2 = load_steerer("runs/caa", model=model)

Methods register themselves (:func:`register_method`); ``available_methods()`` lists them.
"""

from .artifacts import ArtifactError, load_steerer, save_steerer
from .base import (
    AlwaysOpen,
    ContrastiveActs,
    Editor,
    Gate,
    GateDecision,
    PipelineError,
    Role,
    Selection,
    Selector,
    SimpleContrastiveData,
    Steerer,
    all_head_modules,
    head_module,
    register_role,
    resid_module,
)
from .editors import ITIEditor, MeanDiffEditor, PCAEditor, VectorEditor
from .registry import available_gates, available_methods, make_gate, make_steerer, register_method
from .selectors import FixedSelector, ITISelector, probe_accuracies, top_h_selection
from . import baselines  # noqa: F401  (registers caa, repe, iti)

__all__ = [
    "Selector", "Gate", "Editor", "Role", "Selection", "ContrastiveActs", "GateDecision", "AlwaysOpen",
    "Steerer", "PipelineError", "register_role", "register_method", "make_steerer", "available_methods",
    "FixedSelector", "ITISelector", "ITIEditor", "MeanDiffEditor", "PCAEditor", "VectorEditor",
    "probe_accuracies", "top_h_selection", "head_module", "resid_module", "all_head_modules",
    "save_steerer", "load_steerer", "ArtifactError", "SimpleContrastiveData", "make_gate", "available_gates",
]
