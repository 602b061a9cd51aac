"""FineSteer (methods.md): *when* to steer (stage 1, the SCS gate) and *how* (stage 2, MoSE, a
mixture of steering experts).

Importing this package registers the gate role ``scs`` (the reference ``probe`` gate is a core
gate, :mod:`steerlens.pipeline.gates`, re-exported here), the editor role ``mose``, the methods
``caa-scs`` (CAA under the SCS gate), ``mose`` (MoSE, no gate: the ablation) and ``finesteer``
(the SCS gate in front of MoSE), and the spec short names ``scs-contrast``, ``scs-outside``, ``mose``.
"""

from .mose import MoSEEdit, MoSEEditor, MoSERouter, make_mose, select_k
from .scs import ProbeGate, SCSGate  # noqa: F401  (registers the gate roles and caa-scs)
from .method import make_finesteer  # noqa: F401  (registers finesteer)
from .harm_gate import HarmDirectionGate  # noqa: F401  (registers the harm_dir gate and caa-harmdir)

from ...roles import register_role_alias

# short role names for specs and --vary
register_role_alias("gate", "scs-contrast", {"kind": "scs", "form": "contrast"})
register_role_alias("gate", "scs-outside", {"kind": "scs", "form": "outside"})
register_role_alias("editor", "mose", {"kind": "mose"})

__all__ = ["MoSEEditor", "MoSEEdit", "MoSERouter", "make_mose", "select_k", "SCSGate", "ProbeGate",
           "make_finesteer", "HarmDirectionGate"]
