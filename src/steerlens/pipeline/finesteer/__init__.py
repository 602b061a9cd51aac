"""FineSteer (methods.md): *when* to steer (stage 1, the SCS gate) and *how* (stage 2, MoSE, a
mixture of steering experts).

Importing this package registers the gate roles ``scs`` and ``probe``, the editor role ``mose``
and the methods ``caa-scs`` (CAA under the SCS gate), ``mose`` (MoSE, no gate: the ablation) and
``finesteer`` (the SCS gate in front of MoSE).
"""

from .mose import MoSEEdit, MoSEEditor, MoSERouter, make_mose, select_k
from .scs import ProbeGate, SCSGate  # noqa: F401  (registers the gate roles and caa-scs)
from .method import make_finesteer  # noqa: F401  (registers finesteer)
from .harm_gate import HarmDirectionGate  # noqa: F401  (registers the harm_dir gate and caa-harmdir)

__all__ = ["MoSEEditor", "MoSEEdit", "MoSERouter", "make_mose", "select_k", "SCSGate", "ProbeGate",
           "make_finesteer", "HarmDirectionGate"]
