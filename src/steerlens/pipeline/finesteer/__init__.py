"""FineSteer: when to steer (SCS gate) and how (MoSE, a mixture of steering experts).

Importing this package registers the method ``"mose"`` (MoSE editor, no gate) and the role
``"mose"``.
"""

from .mose import MoSEEdit, MoSEEditor, MoSERouter, make_mose, select_k

__all__ = ["MoSEEditor", "MoSEEdit", "MoSERouter", "make_mose", "select_k"]
