"""ODESteer: multi-step steering along the unit gradient of a learned barrier function.

Importing this package registers the steering method ``"odesteer"`` and its roles
(``"ode_barrier_selector"``, ``"ode_editor"``).

- :mod:`.features` — tensor-sketch polynomial features (and random Fourier features, the
  ablation), with closed-form input gradients;
- :mod:`.barrier` — the barrier ``h_b(x) = f(x) + log((1 − π)/π)``, a logistic regression on
  ``φ(x/‖x‖)``, its unit-gradient field, held-out accuracy / AUC;
- :mod:`.solvers` — Euler / midpoint / RK4 fixed-step integration (hand loop or torchdiffeq);
- :mod:`.edit` — :class:`ODEEdit` (strength = integration time ``T``);
- :mod:`.roles` — :class:`BarrierSelector`, :class:`ODEEditor`, :class:`ODESteerer`, ``make_odesteer``.

::

    st = make_steerer("odesteer", layer=12, alpha=20.0).fit(model, D.truthfulness_response_pairs("fit"))
    texts = steerlens.generate(model, prompts, st.edits(model, prompts), trace=True, return_details=True)
"""

from .barrier import Barrier, evaluate_barrier, fit_barrier, heldout_metrics
from .edit import ODEEdit
from .features import FeatureMap, PolySketch, RandomFourier, make_features
from .roles import BarrierSelector, DEFAULT_LAYER, DEFAULT_T, ODEEditor, ODESteerer, barrier_params, make_odesteer
from .solvers import BACKENDS, DEFAULT_BACKEND, SOLVERS, integrate

from ...roles import register_role_alias

# short role names for specs and --vary
register_role_alias("editor", "odesteer", {"kind": "ode_editor"})
register_role_alias("editor", "ode", {"kind": "ode_editor"})
register_role_alias("selector", "barrier", {"kind": "ode_barrier_selector"})

__all__ = [
    "Barrier", "fit_barrier", "evaluate_barrier", "heldout_metrics", "ODEEdit", "FeatureMap", "PolySketch",
    "RandomFourier", "make_features", "BarrierSelector", "ODEEditor", "ODESteerer", "make_odesteer",
    "barrier_params", "integrate", "SOLVERS", "BACKENDS", "DEFAULT_BACKEND", "DEFAULT_LAYER", "DEFAULT_T",
]
