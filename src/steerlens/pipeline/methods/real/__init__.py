"""REAL: behaviour-relevant module selection with batched VQ autoencoders.

Importing this package registers the steering method ``"real"`` (REAL-selected heads with the
ITI editor) and the role ``"real_selector"``.

- :mod:`.vqae` — batched VQ autoencoders (all modules as one model) and a per-module reference;
- :mod:`.scorers` — code-sequence scorers (per-class Markov chains, logistic regression, the
  authors' per-class GRUs, shifted and as they run them), batched AUC;
- :mod:`.selector` — :func:`real_relevance`, :class:`REALSelector`, ``make_real``;
- :mod:`.diagnostics` — code usage, dead codes, layer x head heatmap, ranking JSON;
- :mod:`.cli` — ``steerlens select``.
"""

from .scorers import GRUNoShiftScorer, GRUScorer, LogRegScorer, MarkovScorer, batched_auc, ranking_agreement
from .selector import REALSelector, RelevanceResult, default_heads, make_real, real_relevance
from .vqae import BatchedVQAE, ReferenceVQAE, VQAEConfig, VQAEError, train_reference, train_vqae

from ...roles import register_role_alias, register_spec_defaults


def _spec_defaults(editor) -> dict:
    """In a spec, REAL follows the editor's family: with a residual editor it scores the residual
    layers and keeps one; otherwise (heads) its own defaults."""
    if editor is not None and getattr(type(editor), "family", "any") == "resid":
        return {"target": "resid", "heads": 1}
    return {}


register_role_alias("selector", "real", {"kind": "real_selector"})
register_spec_defaults("real_selector", _spec_defaults)

__all__ = [
    "BatchedVQAE", "ReferenceVQAE", "VQAEConfig", "VQAEError", "train_vqae", "train_reference",
    "MarkovScorer", "LogRegScorer", "GRUScorer", "GRUNoShiftScorer", "batched_auc", "ranking_agreement",
    "REALSelector", "RelevanceResult", "real_relevance", "make_real", "default_heads",
]
