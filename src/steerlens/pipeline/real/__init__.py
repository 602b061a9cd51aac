"""REAL: behaviour-relevant module selection with batched VQ autoencoders.

Importing this package registers the steering method ``"real"`` (REAL-selected heads with the
ITI editor) and the role ``"real_selector"``.

- :mod:`.vqae` — batched VQ autoencoders (all modules as one model) and a per-module reference;
- :mod:`.scorers` — code-sequence scorers (per-class Markov chains, logistic regression), batched AUC;
- :mod:`.selector` — :func:`real_relevance`, :class:`REALSelector`, ``make_real``;
- :mod:`.diagnostics` — code usage, dead codes, layer x head heatmap, ranking JSON;
- :mod:`.cli` — ``steerlens select``.
"""

from .scorers import LogRegScorer, MarkovScorer, batched_auc, ranking_agreement
from .selector import REALSelector, RelevanceResult, default_heads, make_real, real_relevance
from .vqae import BatchedVQAE, ReferenceVQAE, VQAEConfig, VQAEError, train_reference, train_vqae

__all__ = [
    "BatchedVQAE", "ReferenceVQAE", "VQAEConfig", "VQAEError", "train_vqae", "train_reference",
    "MarkovScorer", "LogRegScorer", "batched_auc", "ranking_agreement",
    "REALSelector", "RelevanceResult", "real_relevance", "make_real", "default_heads",
]
