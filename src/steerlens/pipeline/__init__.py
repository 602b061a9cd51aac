"""The steering pipeline: selectors (where), gates (when), editors (how), steerers, artifacts.

::

    from steerlens.pipeline import make_steerer, load_steerer
    st = make_steerer("caa", layer=10, alpha=1.0).fit(model, data)   # data: ContrastiveData
    texts = steerlens.generate(model, prompts, st.edits(model, prompts))
    st.save("runs/caa");  st2 = load_steerer("runs/caa", model=model)

The core (this package's modules) knows no method: each method is a package under
:mod:`steerlens.pipeline.methods` that registers itself (:func:`register_method`), found by the
registry when first read; ``available_methods()`` lists them.
"""

from . import _moved
from .artifacts import ArtifactError, save_steerer
from .contrastive import ContrastiveActs, SimpleContrastiveData
from .editors import ITIEditor, MeanDiffEditor, PCAEditor, VectorEditor
from .errors import PipelineError
from .gates import AlwaysOpen, CalibratedGate, ProbeGate
from .registry import (available_gates, available_methods, make_gate, make_steerer, preset_params, register_method,
                       register_package, register_preset)
from .roles import Editor, Gate, GateDecision, Role, Selector, register_role, register_role_alias
from .selection import Selection, all_head_modules, head_module, resid_module
from .selectors import FixedSelector, ITISelector, probe_accuracies, top_h_selection
from .steerer import Composition, Steerer, load_steerer

_moved.install()  # old module paths (steerlens.pipeline.finesteer, .base, ...) keep importing

__all__ = [
    "Selector", "Gate", "Editor", "Role", "Selection", "ContrastiveActs", "GateDecision", "AlwaysOpen",
    "Steerer", "PipelineError", "register_role", "register_method", "make_steerer", "available_methods",
    "FixedSelector", "ITISelector", "ITIEditor", "MeanDiffEditor", "PCAEditor", "VectorEditor",
    "probe_accuracies", "top_h_selection", "head_module", "resid_module", "all_head_modules",
    "save_steerer", "load_steerer", "ArtifactError", "SimpleContrastiveData", "make_gate", "available_gates",
    "Composition", "CalibratedGate", "ProbeGate", "register_package", "register_role_alias",
    "register_preset", "preset_params",
]
